// Package flatten applies the layers of an OCI image, oldest first, to an
// empty rootfs.Tree, the way a container runtime's overlay would show them:
// later entries replace earlier ones, whiteouts (.wh.NAME) delete, opaque
// markers (.wh..wh..opq) hide a directory's lower content, hard links keep
// the content they had when they were made even when a later layer
// replaces or deletes the file they point at.
//
// Layers are untrusted input. Every entry is checked before it changes the
// tree: a path that climbs out of the root after cleaning ("../../x"), a
// write below a symbolic link (any parent component that is a symlink in
// the tree so far, wherever it points: the tree never resolves links, so a
// path through one is refused rather than followed), and a hard link to a
// path that is not a non-directory already in the tree are all errors that
// name the layer digest and the entry. Absolute names ("/etc/x") are taken
// relative to the root, as docker and containerd do. Flatten returns no
// tree when any layer is refused.
//
// File contents are not copied: each regular file of the tree refers to its
// byte range in the layer's uncompressed tar file, so flattening costs
// memory for metadata only, whatever the image size.
package flatten

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"

	"github.com/ingotdev/ingot/packer/rootfs"
)

// Names with which layers mark deletions (OCI image spec, "Whiteouts").
const (
	whiteoutPrefix = ".wh."
	// whiteoutMetaPrefix starts aufs bookkeeping names, which carry no
	// meaning for the merged tree.
	whiteoutMetaPrefix = ".wh..wh."
	opaqueMarker       = ".wh..wh..opq"
)

// dirDefaultMode is the mode of directories a layer implies without an
// entry of their own (a file "a/b/c" in a layer without "a/" or "a/b/").
const dirDefaultMode = 0o755

// Layer is one uncompressed layer tar in a file.
type Layer struct {
	// Digest names the layer in errors (the manifest's layer digest).
	Digest string
	// Path is the uncompressed tar. The tree's file contents refer to
	// ranges of it, so it must stay in place until the tree is written.
	Path string
}

// Option changes how Flatten works.
type Option func(*options)

type options struct {
	modTime  int64
	spoolDir string
	maxBytes int64
}

// DefaultMaxBytes bounds the file contents of a flattened tree. Sparse
// files make it necessary: a tar of a few bytes can declare a file of a
// terabyte, which the spool would write out in full.
const DefaultMaxBytes = 16 << 30

// WithMaxBytes replaces DefaultMaxBytes.
func WithMaxBytes(n int64) Option { return func(o *options) { o.maxBytes = n } }

// WithRootModTime sets the modification time of the root directory (and
// of nothing else: entries keep their layer times).
func WithRootModTime(unixSeconds int64) Option { return func(o *options) { o.modTime = unixSeconds } }

// WithSpoolDir names a directory where the contents of sparse files, which
// are not stored contiguously in a tar, are written out. Without it they
// are kept in memory.
func WithSpoolDir(dir string) Option { return func(o *options) { o.spoolDir = dir } }

// Error is a layer entry that Flatten refused.
type Error struct {
	Layer string // the layer's digest
	Path  string // the entry's name in the tar, as written
	Err   error
}

func (e *Error) Error() string {
	return fmt.Sprintf("flatten: layer %s: %q: %v", e.Layer, e.Path, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Flatten applies layers, oldest first, to a new tree.
func Flatten(ctx context.Context, layers []Layer, opts ...Option) (*rootfs.Tree, error) {
	o := options{maxBytes: DefaultMaxBytes}
	for _, opt := range opts {
		opt(&o)
	}
	f := &flattener{
		tree:     rootfs.New(o.modTime),
		opts:     o,
		linkOf:   map[string]string{},
		linksTo:  map[string][]string{},
		modTime0: o.modTime,
	}
	for _, l := range layers {
		if err := f.applyFile(ctx, l); err != nil {
			return nil, err
		}
	}
	return f.tree, nil
}

type flattener struct {
	tree *rootfs.Tree
	opts options
	// linkOf maps each hard link's path to the path of the entry holding
	// the content; linksTo is its inverse. Links always name the holder
	// directly, never another link.
	linkOf  map[string]string
	linksTo map[string][]string
	// added holds the paths the current layer created: whiteouts and
	// opaque markers apply to lower layers only.
	added    map[string]bool
	layer    Layer
	modTime0 int64
	// contentBytes adds up the sizes of the regular files seen so far.
	contentBytes int64
}

func (f *flattener) applyFile(ctx context.Context, l Layer) error {
	file, err := os.Open(l.Path)
	if err != nil {
		return fmt.Errorf("flatten: layer %s: %w", l.Digest, err)
	}
	defer file.Close()
	return f.apply(ctx, l, newLayerFile(file))
}

// apply reads the tar in file, whose offset after each header is where
// the entry's data starts.
func (f *flattener) apply(ctx context.Context, l Layer, file *layerFile) error {
	f.layer = l
	f.added = map[string]bool{}
	tr := tar.NewReader(file)
	for i := 0; ; i++ {
		if i%256 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("flatten: layer %s: entry %d: %w", l.Digest, i, err)
		}
		if err := f.entry(hdr, tr, file); err != nil {
			var fe *Error
			if errors.As(err, &fe) {
				return err
			}
			return &Error{Layer: l.Digest, Path: hdr.Name, Err: err}
		}
	}
}

func (f *flattener) entry(hdr *tar.Header, tr *tar.Reader, file *layerFile) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil
	}
	parts, err := cleanPath(hdr.Name)
	if err != nil {
		return err
	}
	if len(parts) == 0 {
		return f.setRoot(hdr)
	}
	base := parts[len(parts)-1]
	if strings.HasPrefix(base, whiteoutPrefix) {
		return f.whiteout(parts[:len(parts)-1], base)
	}
	p := "/" + strings.Join(parts, "/")
	if err := f.parents(parts); err != nil {
		return err
	}
	e, err := f.metadata(hdr)
	if err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeCont, tar.TypeGNUSparse:
		if e.Content, err = f.content(hdr, tr, file); err != nil {
			return err
		}
	case tar.TypeLink:
		return f.hardlink(p, hdr)
	}
	return f.put(p, e)
}

// cleanPath splits a tar name into components, resolving "." and ".."
// lexically. Climbing above the root is an error; a leading "/" is not.
func cleanPath(name string) ([]string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return nil, fmt.Errorf("name contains a NUL byte")
	}
	var parts []string
	for _, c := range strings.Split(name, "/") {
		switch c {
		case "", ".":
		case "..":
			if len(parts) == 0 {
				return nil, fmt.Errorf("path escapes the root")
			}
			parts = parts[:len(parts)-1]
		default:
			if err := rootfs.ValidName(c); err != nil {
				return nil, err
			}
			parts = append(parts, c)
		}
	}
	return parts, nil
}

func join(parts []string) string { return "/" + strings.Join(parts, "/") }

// parents makes sure every parent of parts is a directory, creating
// missing ones. A parent that exists as anything else, a symlink above
// all, is an error: the write would land wherever the link points.
func (f *flattener) parents(parts []string) error {
	for i := 1; i < len(parts); i++ {
		dir := join(parts[:i])
		e, ok := f.tree.Get(dir)
		if !ok {
			if err := f.tree.Add(dir, rootfs.Entry{Kind: rootfs.KindDir, Mode: dirDefaultMode, ModTime: f.modTime0}); err != nil {
				return err
			}
			f.added[dir] = true
			continue
		}
		if e.Kind == rootfs.KindSymlink {
			return fmt.Errorf("parent %s is a symlink (to %q); writing through symlinks is refused", dir, e.Target)
		}
		if e.Kind != rootfs.KindDir {
			return fmt.Errorf("parent %s is a %s, not a directory", dir, e.Kind)
		}
		// A directory this layer writes into counts as this layer's, so
		// an opaque marker above it keeps what the layer put in it.
		f.added[dir] = true
	}
	return nil
}

func (f *flattener) metadata(hdr *tar.Header) (rootfs.Entry, error) {
	e := rootfs.Entry{Mode: uint32(hdr.Mode) & rootfs.PermMask, ModTime: clampTime(hdr.ModTime.Unix())}
	var err error
	if e.UID, err = id32("uid", int64(hdr.Uid)); err != nil {
		return e, err
	}
	if e.GID, err = id32("gid", int64(hdr.Gid)); err != nil {
		return e, err
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeCont, tar.TypeGNUSparse:
		e.Kind = rootfs.KindFile
		if hdr.Size < 0 {
			return e, fmt.Errorf("negative size %d", hdr.Size)
		}
		e.Size = hdr.Size
	case tar.TypeDir:
		e.Kind = rootfs.KindDir
	case tar.TypeSymlink:
		e.Kind = rootfs.KindSymlink
		if hdr.Linkname == "" {
			return e, fmt.Errorf("symlink with an empty target")
		}
		if strings.IndexByte(hdr.Linkname, 0) >= 0 {
			return e, fmt.Errorf("symlink target contains a NUL byte")
		}
		e.Target = hdr.Linkname
	case tar.TypeLink:
		e.Kind = rootfs.KindHardlink
	case tar.TypeChar, tar.TypeBlock:
		e.Kind = rootfs.KindCharDevice
		if hdr.Typeflag == tar.TypeBlock {
			e.Kind = rootfs.KindBlockDevice
		}
		if e.DevMajor, err = id32("device major", hdr.Devmajor); err != nil {
			return e, err
		}
		if e.DevMinor, err = id32("device minor", hdr.Devminor); err != nil {
			return e, err
		}
	case tar.TypeFifo:
		e.Kind = rootfs.KindFIFO
	default:
		return e, fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
	}
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok && name != "" {
			if e.Xattrs == nil {
				e.Xattrs = map[string][]byte{}
			}
			e.Xattrs[name] = []byte(v)
		}
	}
	return e, nil
}

func id32(what string, v int64) (uint32, error) {
	if v < 0 || v > math.MaxUint32 {
		return 0, fmt.Errorf("%s %d is out of range", what, v)
	}
	return uint32(v), nil
}

// clampTime fits a time into the 32-bit unsigned seconds that squashfs
// stores.
func clampTime(t int64) int64 { return min(max(t, 0), math.MaxUint32) }

func (f *flattener) setRoot(hdr *tar.Header) error {
	if hdr.Typeflag != tar.TypeDir {
		return fmt.Errorf("the root must be a directory, not type %q", hdr.Typeflag)
	}
	e, err := f.metadata(hdr)
	if err != nil {
		return err
	}
	return f.tree.SetRoot(e)
}

// put places e at p, replacing what is there. A directory over a directory
// merges: only the metadata changes, the lower children stay.
func (f *flattener) put(p string, e rootfs.Entry) error {
	f.added[p] = true
	old, ok := f.tree.Get(p)
	if ok && old.Kind == rootfs.KindDir && e.Kind == rootfs.KindDir {
		return f.tree.Replace(p, e)
	}
	if ok {
		if err := f.remove(p); err != nil {
			return err
		}
	}
	return f.tree.Add(p, e)
}

func (f *flattener) hardlink(p string, hdr *tar.Header) error {
	tparts, err := cleanPath(hdr.Linkname)
	if err != nil {
		return fmt.Errorf("hardlink target %q: %w", hdr.Linkname, err)
	}
	if len(tparts) == 0 {
		return fmt.Errorf("hardlink to the root directory")
	}
	target := join(tparts)
	te, ok := f.tree.Get(target)
	if !ok {
		return fmt.Errorf("hardlink target %q is not in the image", hdr.Linkname)
	}
	if te.Kind == rootfs.KindDir {
		return fmt.Errorf("hardlink target %q is a directory", hdr.Linkname)
	}
	if holder, ok := f.linkOf[target]; ok {
		target = holder
	}
	if target == p {
		// A name linked to itself: nothing changes.
		f.added[p] = true
		return nil
	}
	f.added[p] = true
	if _, ok := f.tree.Get(p); ok {
		if err := f.remove(p); err != nil {
			return err
		}
		// Removing p may have moved the content p's target held to
		// another name (when p was the holder and target a link to it).
		if holder, ok := f.linkOf[target]; ok {
			target = holder
		} else if _, ok := f.tree.Get(target); !ok {
			return fmt.Errorf("hardlink target %q vanished when %s was replaced", hdr.Linkname, p)
		}
	}
	if err := f.tree.Add(p, rootfs.Entry{Kind: rootfs.KindHardlink, Target: target}); err != nil {
		return err
	}
	f.linkOf[p] = target
	f.linksTo[target] = append(f.linksTo[target], p)
	return nil
}

func (f *flattener) whiteout(dirParts []string, base string) error {
	if err := f.checkDir(dirParts); err != nil {
		return err
	}
	dir := join(dirParts)
	if base == opaqueMarker {
		return f.opaque(dir)
	}
	if strings.HasPrefix(base, whiteoutMetaPrefix) {
		return nil
	}
	name := strings.TrimPrefix(base, whiteoutPrefix)
	if err := rootfs.ValidName(name); err != nil {
		return fmt.Errorf("whiteout of %q: %w", name, err)
	}
	p := rootfs.Join(dir, name)
	if f.added[p] {
		// Whiteouts hide lower layers only (OCI image spec).
		return nil
	}
	return f.remove(p)
}

// checkDir checks that a whiteout's directory lies on real directories
// only; a missing one means there is nothing to delete.
func (f *flattener) checkDir(parts []string) error {
	for i := 1; i <= len(parts); i++ {
		e, ok := f.tree.Get(join(parts[:i]))
		if !ok {
			return nil
		}
		if e.Kind == rootfs.KindSymlink {
			return fmt.Errorf("whiteout below symlink %s is refused", join(parts[:i]))
		}
		if e.Kind != rootfs.KindDir {
			return fmt.Errorf("whiteout below %s, a %s", join(parts[:i]), e.Kind)
		}
	}
	return nil
}

// opaque deletes everything below dir that lower layers put there, keeping
// what this layer added.
func (f *flattener) opaque(dir string) error {
	e, ok := f.tree.Get(dir)
	if !ok || e.Kind != rootfs.KindDir {
		return nil
	}
	names, err := f.tree.Children(dir)
	if err != nil {
		return err
	}
	for _, name := range names {
		p := rootfs.Join(dir, name)
		if !f.added[p] {
			if err := f.remove(p); err != nil {
				return err
			}
			continue
		}
		if c, _ := f.tree.Get(p); c.Kind == rootfs.KindDir {
			if err := f.opaque(p); err != nil {
				return err
			}
		}
	}
	return nil
}

func under(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// remove deletes p and everything below it. Hard links elsewhere to a file
// being deleted keep its content: the first of them (in byte order) takes
// over the entry and the others are pointed at it.
func (f *flattener) remove(p string) error {
	e, ok := f.tree.Get(p)
	if !ok {
		return nil
	}
	if e.Kind != rootfs.KindDir {
		f.dropLink(p)
		if err := f.promote(p); err != nil {
			return err
		}
		return f.tree.Remove(p)
	}
	var inside []string
	for l := range f.linkOf {
		if under(l, p) {
			inside = append(inside, l)
		}
	}
	for _, l := range inside {
		f.dropLink(l)
	}
	var holders []string
	for h := range f.linksTo {
		if under(h, p) {
			holders = append(holders, h)
		}
	}
	sort.Strings(holders)
	for _, h := range holders {
		if err := f.promote(h); err != nil {
			return err
		}
	}
	return f.tree.Remove(p)
}

// dropLink forgets that l is a hard link.
func (f *flattener) dropLink(l string) {
	h, ok := f.linkOf[l]
	if !ok {
		return
	}
	delete(f.linkOf, l)
	ls := f.linksTo[h]
	for i, x := range ls {
		if x == l {
			ls = append(ls[:i:i], ls[i+1:]...)
			break
		}
	}
	if len(ls) == 0 {
		delete(f.linksTo, h)
	} else {
		f.linksTo[h] = ls
	}
}

// promote moves the entry at holder h to its first remaining link, before
// h goes away.
func (f *flattener) promote(h string) error {
	ls := f.linksTo[h]
	delete(f.linksTo, h)
	if len(ls) == 0 {
		return nil
	}
	sort.Strings(ls)
	e, ok := f.tree.Get(h)
	if !ok {
		return fmt.Errorf("internal: hardlink holder %s missing", h)
	}
	heir := ls[0]
	if err := f.tree.Replace(heir, e); err != nil {
		return err
	}
	delete(f.linkOf, heir)
	for _, l := range ls[1:] {
		if err := f.tree.Replace(l, rootfs.Entry{Kind: rootfs.KindHardlink, Target: heir}); err != nil {
			return err
		}
		f.linkOf[l] = heir
	}
	if len(ls) > 1 {
		f.linksTo[heir] = append([]string(nil), ls[1:]...)
	}
	return nil
}
