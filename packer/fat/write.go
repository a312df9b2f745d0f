// Package fat writes FAT32 filesystems for boot partitions: Write
// produces a fresh, deterministic volume, the same files and options
// giving the same bytes. The format itself (geometry, names, options) and
// the reader and in-place rewrite are packer/format/fat.
//
// For a partition inside a disk image pass io.NewOffsetWriter(disk, off)
// to Write.
package fat

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strings"

	format "github.com/ingotdev/ingot/packer/format/fat"
)

// Content is where a file's bytes come from; rootfs.Bytes and
// rootfs.HostFile satisfy it. Open must yield exactly File.Size bytes.
type Content interface {
	Open() (io.ReadCloser, error)
}

// File is one file or directory to put on the volume.
type File struct {
	// Path is slash-separated and relative ("overlays/x.dtbo"), as
	// io/fs.ValidPath requires. Parent directories are created implicitly.
	Path string
	// Dir makes an (empty unless other files are inside) directory.
	Dir bool
	// Size is the content's length in bytes, at most 4 GiB - 1.
	Size int64
	// Content is nil for empty files and directories.
	Content Content
}

// BytesFile returns a File holding b.
func BytesFile(path string, b []byte) File {
	return File{Path: path, Size: int64(len(b)), Content: bytesContent(b)}
}

type bytesContent []byte

func (b bytesContent) Open() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }

// node is a file or directory of the volume being written.
type node struct {
	name     string
	short    format.ShortName
	needLFN  bool
	dir      bool
	file     File
	parent   *node
	children []*node
	byName   map[string]*node // upper-cased name, for collisions

	first, clusters uint32
}

// Write writes a FAT32 filesystem of sizeBytes holding files to w, starting
// at offset 0. It writes the reserved sectors, both FATs, every directory
// and every file (each padded to its last cluster with zeros), but not the
// free clusters, so w should start out zeroed (a sparse file) for the
// result to be reproducible byte for byte.
//
// Directory entries are sorted by name; clusters are allocated in order,
// directories first, then files in directory-tree order, each file
// contiguous.
//
// The options are those of packer/format/fat, shared with its Rewrite.
func Write(ctx context.Context, w io.WriterAt, sizeBytes int64, files []File, opts ...format.Option) error {
	o, err := format.NewOptions(opts...)
	if err != nil {
		return err
	}
	g, err := format.PlanGeometry(sizeBytes, o)
	if err != nil {
		return err
	}
	return writeVolume(ctx, w, g, files, o)
}

// writeVolume writes a volume of geometry g.
func writeVolume(ctx context.Context, w io.WriterAt, g format.Geometry, files []File, o format.Options) error {
	root, err := buildTree(files)
	if err != nil {
		return err
	}
	// Allocate: every directory (pre-order), then every file.
	var dirs, regular []*node
	var visit func(n *node)
	visit = func(n *node) {
		if n.dir {
			dirs = append(dirs, n)
		} else if n.file.Size > 0 {
			regular = append(regular, n)
		}
		for _, c := range n.children {
			visit(c)
		}
	}
	visit(root)
	next := uint64(g.RootCluster)
	cb := g.ClusterBytes()
	for _, n := range append(dirs, regular...) {
		var bytes int64
		if n.dir {
			bytes = int64(dirEntries(n, o.HasLabel())) * format.DirEntryBytes
			if bytes > format.MaxDirEntries*format.DirEntryBytes {
				return fmt.Errorf("fat: directory %q: %d entries, at most %d", pathOf(n), bytes/format.DirEntryBytes, format.MaxDirEntries)
			}
			bytes = max(bytes, 1) // even an empty directory has a cluster
		} else {
			bytes = n.file.Size
		}
		n.first = uint32(next)
		n.clusters = uint32((bytes + cb - 1) / cb)
		next += uint64(n.clusters)
		if next-2 > uint64(g.ClusterCount) {
			return fmt.Errorf("fat: %q does not fit: the files need more than the volume's %d clusters of %d bytes", pathOf(n), g.ClusterCount, cb)
		}
	}
	used := uint32(next - 2)
	wr := &writer{w: w, g: g}
	wr.writeAt(g.ReservedArea(o, g.ClusterCount-used, uint32(next)), 0, "reserved sectors")
	wr.fats(dirs, regular, uint32(next))
	date, tm, tenths := format.DateTime(o.ModTime)
	stamp := stamp{date, tm, tenths}
	for _, d := range dirs {
		if err := ctx.Err(); err != nil {
			return err
		}
		wr.dir(d, o, stamp)
	}
	for _, f := range regular {
		if err := ctx.Err(); err != nil {
			return err
		}
		wr.file(f)
	}
	return wr.err
}

// buildTree validates the files and arranges them in sorted directories.
func buildTree(files []File) (*node, error) {
	root := &node{dir: true, byName: map[string]*node{}}
	for _, f := range files {
		if !fs.ValidPath(f.Path) || f.Path == "." {
			return nil, fmt.Errorf("fat: file %q: not a valid relative slash path", f.Path)
		}
		if f.Dir && (f.Size != 0 || f.Content != nil) {
			return nil, fmt.Errorf("fat: directory %q: has a size or content", f.Path)
		}
		if !f.Dir && (f.Size < 0 || f.Size > format.MaxFileBytes) {
			return nil, fmt.Errorf("fat: file %q: size %d bytes, FAT holds 0 to %d", f.Path, f.Size, int64(format.MaxFileBytes))
		}
		if !f.Dir && f.Size > 0 && f.Content == nil {
			return nil, fmt.Errorf("fat: file %q: size %d but no content", f.Path, f.Size)
		}
		parts := strings.Split(f.Path, "/")
		dir := root
		for i, part := range parts {
			if err := format.CheckName(part); err != nil {
				return nil, fmt.Errorf("fat: file %q: %w", f.Path, err)
			}
			last := i == len(parts)-1
			key := strings.ToUpper(part)
			n, ok := dir.byName[key]
			switch {
			case ok && n.name != part:
				return nil, fmt.Errorf("fat: %q and %q differ only in case, which FAT cannot tell apart", pathOf(n), strings.Join(parts[:i+1], "/"))
			case ok && last && n.dir != f.Dir:
				return nil, fmt.Errorf("fat: %q: given both as a file and as a directory", f.Path)
			case ok && last && !f.Dir:
				return nil, fmt.Errorf("fat: file %q: given twice", f.Path)
			case ok && !n.dir:
				return nil, fmt.Errorf("fat: file %q: %q is a file, not a directory", f.Path, pathOf(n))
			case ok:
				dir = n
				continue
			}
			n = &node{name: part, parent: dir, dir: !last || f.Dir}
			if n.dir {
				n.byName = map[string]*node{}
			} else {
				n.file = f
			}
			dir.byName[key] = n
			dir.children = append(dir.children, n)
			dir = n
		}
	}
	var assign func(d *node) error
	assign = func(d *node) error {
		sort.Slice(d.children, func(i, j int) bool { return d.children[i].name < d.children[j].name })
		names := make([]string, len(d.children))
		for i, c := range d.children {
			names[i] = c.name
		}
		short, needLFN, err := format.ShortNames(names)
		if err != nil {
			return fmt.Errorf("fat: directory %q: %w", pathOf(d), err)
		}
		for i, c := range d.children {
			c.short, c.needLFN = short[i], needLFN[i]
			if c.dir {
				if err := assign(c); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return root, assign(root)
}

func pathOf(n *node) string {
	if n.parent == nil {
		return "/"
	}
	if n.parent.parent == nil {
		return n.name
	}
	return pathOf(n.parent) + "/" + n.name
}

// dirEntries counts the 32-byte entries directory d needs.
func dirEntries(d *node, hasLabel bool) int {
	n := 2 // "." and ".."
	if d.parent == nil {
		n = 0
		if hasLabel {
			n = 1
		}
	}
	for _, c := range d.children {
		n++
		if c.needLFN {
			n += len(format.LongNameEntries(c.name, c.short)) / format.DirEntryBytes
		}
	}
	return n
}

type stamp struct {
	date, time uint16
	tenths     byte
}

// writer writes a planned volume, keeping the first error.
type writer struct {
	w   io.WriterAt
	g   format.Geometry
	err error
}

func (wr *writer) writeAt(b []byte, off int64, what string) {
	if wr.err != nil {
		return
	}
	if _, err := wr.w.WriteAt(b, off); err != nil {
		wr.err = fmt.Errorf("fat: writing %s at byte %d: %w", what, off, err)
	}
}

// fats writes every FAT copy. Allocation is contiguous per node, so each
// entry is the next cluster or end-of-chain and the table can be streamed
// without holding it in memory.
func (wr *writer) fats(dirs, regular []*node, end uint32) {
	nodes := append(append([]*node{}, dirs...), regular...)
	const chunkSectors = 128
	chunk := make([]byte, chunkSectors*int(wr.g.BytesPerSector))
	entriesPerChunk := uint32(len(chunk) / 4)
	k := 0 // index into nodes of the run holding cluster c
	for first := uint32(0); first < wr.g.FATSectors*wr.g.BytesPerSector/4; first += entriesPerChunk {
		clear(chunk)
		n := min(entriesPerChunk, wr.g.FATSectors*wr.g.BytesPerSector/4-first)
		for i := uint32(0); i < n; i++ {
			c := first + i
			var v uint32
			switch {
			case c == 0:
				v = format.EOC&^0xFF | format.MediaFixed
			case c == 1:
				v = format.EOC // also: clean shutdown, no I/O errors
			case c < end:
				for c >= nodes[k].first+nodes[k].clusters {
					k++
				}
				v = c + 1
				if c == nodes[k].first+nodes[k].clusters-1 {
					v = format.EOC
				}
			}
			binary.LittleEndian.PutUint32(chunk[4*i:], v)
		}
		for f := uint32(0); f < wr.g.NumFATs; f++ {
			wr.writeAt(chunk[:4*n], wr.g.FATOffset(f)+int64(first)*4, fmt.Sprintf("FAT %d", f+1))
		}
	}
}

// dir writes directory d's clusters.
func (wr *writer) dir(d *node, o format.Options, st stamp) {
	buf := make([]byte, int64(d.clusters)*wr.g.ClusterBytes())
	off := 0
	put := func(name format.ShortName, attr byte, cluster uint32, size uint32) {
		e := buf[off : off+format.DirEntryBytes]
		copy(e[0:11], name[:])
		e[11] = attr
		if attr&format.AttrVolumeID == 0 {
			e[13] = st.tenths
			binary.LittleEndian.PutUint16(e[14:], st.time)
			binary.LittleEndian.PutUint16(e[16:], st.date)
			binary.LittleEndian.PutUint16(e[18:], st.date)
			binary.LittleEndian.PutUint16(e[20:], uint16(cluster>>16))
			binary.LittleEndian.PutUint16(e[26:], uint16(cluster))
			binary.LittleEndian.PutUint32(e[28:], size)
		}
		binary.LittleEndian.PutUint16(e[22:], st.time)
		binary.LittleEndian.PutUint16(e[24:], st.date)
		off += format.DirEntryBytes
	}
	if d.parent == nil {
		if o.HasLabel() {
			put(o.Label, format.AttrVolumeID, 0, 0)
		}
	} else {
		parent := d.parent.first
		if d.parent.parent == nil {
			parent = 0 // ".." of a top-level directory points at the root as 0
		}
		put(format.PackShort(".", ""), format.AttrDirectory, d.first, 0)
		put(format.PackShort("..", ""), format.AttrDirectory, parent, 0)
	}
	for _, c := range d.children {
		if c.needLFN {
			off += copy(buf[off:], format.LongNameEntries(c.name, c.short))
		}
		if c.dir {
			put(c.short, format.AttrDirectory, c.first, 0)
		} else {
			put(c.short, format.AttrArchive, c.first, uint32(c.file.Size))
		}
	}
	wr.writeAt(buf, wr.g.ClusterOffset(d.first), fmt.Sprintf("directory %q", pathOf(d)))
}

// file copies one file's content into its clusters and zero-fills the tail
// of the last cluster.
func (wr *writer) file(n *node) {
	if wr.err != nil {
		return
	}
	p := pathOf(n)
	rc, err := n.file.Content.Open()
	if err != nil {
		wr.err = fmt.Errorf("fat: file %q: %w", p, err)
		return
	}
	defer rc.Close()
	off := wr.g.ClusterOffset(n.first)
	got, err := io.Copy(io.NewOffsetWriter(wr.w, off), io.LimitReader(rc, n.file.Size))
	if err != nil {
		wr.err = fmt.Errorf("fat: file %q: copying content: %w", p, err)
		return
	}
	if got != n.file.Size {
		wr.err = fmt.Errorf("fat: file %q: content has %d bytes, File.Size says %d", p, got, n.file.Size)
		return
	}
	if m, err := rc.Read(make([]byte, 1)); m > 0 || (err != nil && !errors.Is(err, io.EOF)) {
		wr.err = fmt.Errorf("fat: file %q: content longer than File.Size %d (or unreadable: %v)", p, n.file.Size, err)
		return
	}
	if pad := int64(n.clusters)*wr.g.ClusterBytes() - n.file.Size; pad > 0 {
		wr.writeAt(make([]byte, pad), off+n.file.Size, fmt.Sprintf("file %q padding", p))
	}
}
