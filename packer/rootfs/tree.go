// Package rootfs describes a root filesystem in memory: the typed hand-off
// between the builder, which produces a Tree from Go binaries, OCI layers and
// generated files, and the packer, which turns a Tree into filesystem bytes
// (squashfs, cpio, ext4). A Tree holds metadata and content sources, never
// the content itself, so trees of any size cost little memory.
package rootfs

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// Kind is the type of a filesystem object.
type Kind uint8

// The kinds of entries a Tree can hold.
const (
	KindFile Kind = iota + 1
	KindDir
	KindSymlink
	// KindHardlink is a second name for the file (or other non-directory)
	// at Entry.Target, an absolute path inside the same Tree. Writers give
	// both names one inode.
	KindHardlink
	KindCharDevice
	KindBlockDevice
	KindFIFO
	KindSocket
)

var kindNames = [...]string{
	KindFile:        "file",
	KindDir:         "dir",
	KindSymlink:     "symlink",
	KindHardlink:    "hardlink",
	KindCharDevice:  "char device",
	KindBlockDevice: "block device",
	KindFIFO:        "fifo",
	KindSocket:      "socket",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// MaxNameBytes is the longest single path component Linux filesystems accept.
const MaxNameBytes = 255

// PermMask selects the mode bits an Entry carries: permissions plus setuid,
// setgid and sticky, in the Unix (not io/fs) encoding.
const PermMask = 0o7777

// Content is where a regular file's bytes come from. Open is called by the
// writer when it needs the bytes, possibly from several goroutines for
// different files, and must return exactly Entry.Size bytes.
type Content interface {
	Open() (io.ReadCloser, error)
}

// Bytes is file content held in memory.
type Bytes []byte

// Open returns a reader over the bytes.
func (b Bytes) Open() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(b)), nil
}

// HostFile is file content read from a path on the build machine.
type HostFile string

// Open opens the host file.
func (p HostFile) Open() (io.ReadCloser, error) {
	f, err := os.Open(string(p))
	if err != nil {
		return nil, fmt.Errorf("rootfs: content: %w", err)
	}
	return f, nil
}

// HostFileRange is file content that is a byte range of a file on the
// build machine: a file's data inside an uncompressed layer tar.
type HostFileRange struct {
	Path   string
	Offset int64
	Size   int64
}

// Open opens the host file and reads the range.
func (r HostFileRange) Open() (io.ReadCloser, error) {
	f, err := os.Open(r.Path)
	if err != nil {
		return nil, fmt.Errorf("rootfs: content: %w", err)
	}
	return sectionFile{io.NewSectionReader(f, r.Offset, r.Size), f}, nil
}

type sectionFile struct {
	*io.SectionReader
	f *os.File
}

func (s sectionFile) Close() error { return s.f.Close() }

// Entry is one filesystem object. Which fields matter depends on Kind.
type Entry struct {
	Kind Kind
	// Mode holds the permission, setuid, setgid and sticky bits (PermMask).
	Mode uint32
	UID  uint32
	GID  uint32
	// ModTime is the modification time in seconds since the Unix epoch.
	ModTime int64
	// Size and Content describe a KindFile.
	Size    int64
	Content Content
	// Target is the link target of a KindSymlink (any string) or the
	// absolute in-tree path of a KindHardlink's file.
	Target string
	// DevMajor and DevMinor identify a KindCharDevice or KindBlockDevice.
	DevMajor uint32
	DevMinor uint32
	// Xattrs are extended attributes, e.g. "security.capability", "user.x".
	Xattrs map[string][]byte
}

type node struct {
	entry    Entry
	children map[string]*node // non-nil for directories
}

// Tree is a rooted filesystem tree. The zero value is not usable; call New.
// A Tree is not safe for concurrent mutation.
type Tree struct {
	root *node
}

// New returns a tree holding only the root directory, mode 0755, owned by
// root, with modification time modTime.
func New(modTime int64) *Tree {
	return &Tree{root: &node{
		entry:    Entry{Kind: KindDir, Mode: 0o755, ModTime: modTime},
		children: map[string]*node{},
	}}
}

// SplitPath validates an absolute slash-separated path and returns its
// components. The root "/" has none. Components must be non-empty, not "."
// or "..", contain no NUL and be at most MaxNameBytes long.
func SplitPath(p string) ([]string, error) {
	if !strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("rootfs: path %q: not absolute", p)
	}
	if p == "/" {
		return nil, nil
	}
	parts := strings.Split(p[1:], "/")
	for i, name := range parts {
		if err := ValidName(name); err != nil {
			return nil, fmt.Errorf("rootfs: path %q: component %d: %w", p, i+1, err)
		}
	}
	return parts, nil
}

// ValidName reports whether name can be one directory entry.
func ValidName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty name")
	case name == "." || name == "..":
		return fmt.Errorf("name %q is reserved", name)
	case len(name) > MaxNameBytes:
		return fmt.Errorf("name of %d bytes exceeds %d", len(name), MaxNameBytes)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("name %q contains '/' or NUL", name)
	}
	return nil
}

func (t *Tree) lookup(parts []string) *node {
	n := t.root
	for _, name := range parts {
		if n.children == nil {
			return nil
		}
		n = n.children[name]
		if n == nil {
			return nil
		}
	}
	return n
}

func validEntry(p string, e *Entry) error {
	if e.Mode&^PermMask != 0 {
		return fmt.Errorf("rootfs: %q: mode %#o has bits outside %#o", p, e.Mode, PermMask)
	}
	switch e.Kind {
	case KindFile:
		if e.Size < 0 {
			return fmt.Errorf("rootfs: %q: negative size %d", p, e.Size)
		}
		if e.Size > 0 && e.Content == nil {
			return fmt.Errorf("rootfs: %q: file of %d bytes has no content", p, e.Size)
		}
	case KindSymlink:
		if e.Target == "" {
			return fmt.Errorf("rootfs: %q: symlink with empty target", p)
		}
	case KindHardlink:
		if _, err := SplitPath(e.Target); err != nil || e.Target == "/" {
			return fmt.Errorf("rootfs: %q: hardlink target %q must be an absolute file path", p, e.Target)
		}
	case KindDir, KindCharDevice, KindBlockDevice, KindFIFO, KindSocket:
	default:
		return fmt.Errorf("rootfs: %q: unknown kind %d", p, e.Kind)
	}
	return nil
}

// Add inserts e at path p. The parent directory must exist and p must not.
func (t *Tree) Add(p string, e Entry) error {
	parts, err := SplitPath(p)
	if err != nil {
		return err
	}
	if len(parts) == 0 {
		return fmt.Errorf("rootfs: cannot add the root; use SetRoot")
	}
	if err := validEntry(p, &e); err != nil {
		return err
	}
	parent := t.lookup(parts[:len(parts)-1])
	if parent == nil {
		return fmt.Errorf("rootfs: add %q: parent directory does not exist", p)
	}
	if parent.children == nil {
		return fmt.Errorf("rootfs: add %q: parent is a %s, not a directory", p, parent.entry.Kind)
	}
	name := parts[len(parts)-1]
	if _, dup := parent.children[name]; dup {
		return fmt.Errorf("rootfs: add %q: already exists", p)
	}
	n := &node{entry: e}
	if e.Kind == KindDir {
		n.children = map[string]*node{}
	}
	parent.children[name] = n
	return nil
}

// SetRoot replaces the metadata of the root directory.
func (t *Tree) SetRoot(e Entry) error {
	if e.Kind != KindDir {
		return fmt.Errorf("rootfs: root must be a directory, not a %s", e.Kind)
	}
	if err := validEntry("/", &e); err != nil {
		return err
	}
	t.root.entry = e
	return nil
}

// MkdirAll creates p and any missing parents as directories with the given
// mode, owner root and modification time modTime. Existing directories are
// left as they are; an existing non-directory on the way is an error.
func (t *Tree) MkdirAll(p string, mode uint32, modTime int64) error {
	parts, err := SplitPath(p)
	if err != nil {
		return err
	}
	n := t.root
	for i, name := range parts {
		if n.children == nil {
			return fmt.Errorf("rootfs: mkdir %q: /%s is a %s", p, strings.Join(parts[:i], "/"), n.entry.Kind)
		}
		c := n.children[name]
		if c == nil {
			c = &node{
				entry:    Entry{Kind: KindDir, Mode: mode & PermMask, ModTime: modTime},
				children: map[string]*node{},
			}
			n.children[name] = c
		}
		n = c
	}
	if n.children == nil {
		return fmt.Errorf("rootfs: mkdir %q: exists as a %s", p, n.entry.Kind)
	}
	return nil
}

// Get returns a copy of the entry at p.
func (t *Tree) Get(p string) (Entry, bool) {
	parts, err := SplitPath(p)
	if err != nil {
		return Entry{}, false
	}
	n := t.lookup(parts)
	if n == nil {
		return Entry{}, false
	}
	return n.entry, true
}

// Replace overwrites the entry at an existing path p. Replacing a directory
// with a non-directory drops its children; replacing with a directory keeps
// them.
func (t *Tree) Replace(p string, e Entry) error {
	parts, err := SplitPath(p)
	if err != nil {
		return err
	}
	if err := validEntry(p, &e); err != nil {
		return err
	}
	n := t.lookup(parts)
	if n == nil {
		return fmt.Errorf("rootfs: replace %q: does not exist", p)
	}
	if len(parts) == 0 && e.Kind != KindDir {
		return fmt.Errorf("rootfs: root must be a directory, not a %s", e.Kind)
	}
	n.entry = e
	switch {
	case e.Kind == KindDir && n.children == nil:
		n.children = map[string]*node{}
	case e.Kind != KindDir:
		n.children = nil
	}
	return nil
}

// Remove deletes p and everything below it. Removing a missing path is not
// an error; removing the root is.
func (t *Tree) Remove(p string) error {
	parts, err := SplitPath(p)
	if err != nil {
		return err
	}
	if len(parts) == 0 {
		return fmt.Errorf("rootfs: cannot remove the root")
	}
	parent := t.lookup(parts[:len(parts)-1])
	if parent == nil || parent.children == nil {
		return nil
	}
	delete(parent.children, parts[len(parts)-1])
	return nil
}

// Children returns the sorted names in directory p.
func (t *Tree) Children(p string) ([]string, error) {
	parts, err := SplitPath(p)
	if err != nil {
		return nil, err
	}
	n := t.lookup(parts)
	if n == nil {
		return nil, fmt.Errorf("rootfs: list %q: does not exist", p)
	}
	if n.children == nil {
		return nil, fmt.Errorf("rootfs: list %q: is a %s", p, n.entry.Kind)
	}
	return sortedNames(n.children), nil
}

func sortedNames(m map[string]*node) []string {
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// WalkFunc is called for every entry of a Tree. For a directory, it is
// called before the directory's children.
type WalkFunc func(p string, e *Entry) error

// Walk visits every entry depth-first, the root first, the children of each
// directory in byte order of their names. The order is deterministic, so
// writers that follow it produce the same bytes for the same tree. fn may
// modify the fields of the entry it is given but not the tree's shape.
func (t *Tree) Walk(fn WalkFunc) error {
	return walk("/", t.root, fn)
}

func walk(p string, n *node, fn WalkFunc) error {
	if err := fn(p, &n.entry); err != nil {
		return err
	}
	if n.children == nil {
		return nil
	}
	for _, name := range sortedNames(n.children) {
		child := p + "/" + name
		if p == "/" {
			child = "/" + name
		}
		if err := walk(child, n.children[name], fn); err != nil {
			return err
		}
	}
	return nil
}

// Join returns the absolute path of name inside directory dir.
func Join(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}
