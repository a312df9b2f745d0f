package squashfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/ingotdev/ingot/packer/rootfs"
)

// maxHardlinkChain bounds how many hard links are followed to find a
// file, so that links pointing at each other fail instead of looping.
const maxHardlinkChain = 64

// symlinkMode is the mode of every symlink.
const symlinkMode = 0o777

// node is one inode of the image. Hard links are several names of one
// node.
type node struct {
	path  string // the first name, for error messages
	entry rootfs.Entry
	nlink uint32
	// number is the inode number, 1..count, assigned in write order.
	number   uint32
	uid, gid uint16 // id table indexes
	xattr    uint32 // xattr id or invalidXattr

	// Directories.
	children []child
	parent   *node
	subdirs  uint32

	// Regular files.
	file *fileData

	// ref locates the inode in the inode table once written.
	ref     uint64
	ordered bool
}

type child struct {
	name string
	node *node
}

// fileData is where a regular file's content ended up.
type fileData struct {
	node *node
	size int64
	// start is the image offset of the first block; blocks holds the size
	// word of each full block (0 for a sparse block).
	start  uint64
	blocks []uint32
	// sparseBytes counts the bytes of sparse blocks.
	sparseBytes uint64
	// fragment and fragOffset locate the tail, if any.
	fragment   uint32
	fragOffset uint32
	// dupOf is the earlier file with identical content whose blocks and
	// fragment this one shares.
	dupOf   *fileData
	started bool
}

// plan is a validated, flattened tree.
type plan struct {
	root *node
	// files lists regular files in walk order, the order their data is
	// written.
	files []*fileData
	// order lists every node in inode-table order: a directory's
	// subdirectories, then its other entries, then the directory itself.
	order []*node
	ids   []uint32
	// xattrTable is the key/value stream; xattrIDs its lookup entries.
	xattrKV  *metaWriter
	xattrIDs []byte
}

type pendingLink struct {
	path, target string
	dir          *node
	index        int
}

// errPlanStopped ends planning when the data writer gave up.
var errPlanStopped = errors.New("squashfs: planning stopped")

// makePlan validates and flattens t. It sends every regular file to found
// as soon as it is seen, so that writing data overlaps planning; it stops
// when stop is closed.
func makePlan(t *rootfs.Tree, comp compressor, found chan<- *fileData, stop <-chan struct{}) (*plan, error) {
	p := &plan{xattrKV: newMetaWriter(comp)}
	byPath := map[string]*node{}
	linkOf := map[string]string{}
	var links []pendingLink
	idIndex := map[uint32]uint16{}
	xattrIndex := map[string]uint32{}

	idOf := func(path string, id uint32) (uint16, error) {
		if i, ok := idIndex[id]; ok {
			return i, nil
		}
		if len(p.ids) == maxIDs {
			return 0, fmt.Errorf("squashfs: %q: more than %d distinct uids and gids", path, maxIDs)
		}
		i := uint16(len(p.ids))
		idIndex[id] = i
		p.ids = append(p.ids, id)
		return i, nil
	}

	err := t.Walk(func(path string, e *rootfs.Entry) error {
		var dir *node
		name := ""
		if path != "/" {
			i := strings.LastIndexByte(path, '/')
			parent := path[:i]
			if i == 0 {
				parent = "/"
			}
			name = path[i+1:]
			dir = byPath[parent]
			if dir == nil || dir.entry.Kind != rootfs.KindDir {
				return fmt.Errorf("squashfs: %q: parent is not a directory in the tree", path)
			}
		} else if e.Kind != rootfs.KindDir {
			return fmt.Errorf("squashfs: root is a %s, not a directory", e.Kind)
		}
		if e.Kind == rootfs.KindHardlink {
			linkOf[path] = e.Target
			links = append(links, pendingLink{path: path, target: e.Target, dir: dir, index: len(dir.children)})
			dir.children = append(dir.children, child{name: name})
			return nil
		}
		if err := checkEntry(path, e); err != nil {
			return err
		}
		n := &node{path: path, entry: *e, nlink: 1, xattr: invalidXattr}
		if e.Kind == rootfs.KindSymlink {
			// Linux gives every symlink mode 0777 and cannot change it;
			// storing anything else would make readers disagree.
			n.entry.Mode = symlinkMode
		}
		var err error
		if n.uid, err = idOf(path, e.UID); err != nil {
			return err
		}
		if n.gid, err = idOf(path, e.GID); err != nil {
			return err
		}
		if n.xattr, err = p.addXattrs(path, e.Xattrs, xattrIndex); err != nil {
			return err
		}
		byPath[path] = n
		switch e.Kind {
		case rootfs.KindDir:
			n.nlink = 2
			n.parent = dir
			if dir != nil {
				dir.subdirs++
				dir.nlink++
			}
		case rootfs.KindFile:
			n.file = &fileData{node: n, size: e.Size, fragment: invalidFragment}
			p.files = append(p.files, n.file)
			select {
			case found <- n.file:
			case <-stop:
				return errPlanStopped
			}
		}
		if dir == nil {
			p.root = n
		} else {
			dir.children = append(dir.children, child{name: name, node: n})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		target, err := resolveLink(l.path, l.target, byPath, linkOf)
		if err != nil {
			return nil, err
		}
		target.nlink++
		l.dir.children[l.index].node = target
	}
	p.orderNodes(p.root)
	if len(p.order) > math.MaxUint32-1 {
		return nil, fmt.Errorf("squashfs: %d inodes exceed the format's limit", len(p.order))
	}
	for i, n := range p.order {
		n.number = uint32(i + 1)
	}
	return p, nil
}

// resolveLink follows a hard link (and hard links to hard links) to the
// node it names.
func resolveLink(path, target string, byPath map[string]*node, linkOf map[string]string) (*node, error) {
	cur := target
	for range maxHardlinkChain {
		if next, ok := linkOf[cur]; ok {
			cur = next
			continue
		}
		n, ok := byPath[cur]
		if !ok {
			return nil, fmt.Errorf("squashfs: hardlink %q: target %q is not in the tree", path, cur)
		}
		if n.entry.Kind == rootfs.KindDir {
			return nil, fmt.Errorf("squashfs: hardlink %q: target %q is a directory", path, cur)
		}
		return n, nil
	}
	return nil, fmt.Errorf("squashfs: hardlink %q: more than %d links in a chain", path, maxHardlinkChain)
}

// checkEntry rejects what the format cannot hold, naming the path.
func checkEntry(path string, e *rootfs.Entry) error {
	if e.Mode&^rootfs.PermMask != 0 {
		return fmt.Errorf("squashfs: %q: mode %#o has bits outside %#o", path, e.Mode, rootfs.PermMask)
	}
	if e.ModTime < 0 || e.ModTime > math.MaxUint32 {
		return fmt.Errorf("squashfs: %q: mtime %d outside the format's 1970..2106 range", path, e.ModTime)
	}
	switch e.Kind {
	case rootfs.KindFile:
		if e.Size < 0 {
			return fmt.Errorf("squashfs: %q: negative size %d", path, e.Size)
		}
		if e.Size > 0 && e.Content == nil {
			return fmt.Errorf("squashfs: %q: file of %d bytes has no content", path, e.Size)
		}
	case rootfs.KindSymlink:
		if e.Target == "" || len(e.Target) > maxSymlinkBytes {
			return fmt.Errorf("squashfs: %q: symlink target of %d bytes, want 1..%d", path, len(e.Target), maxSymlinkBytes)
		}
	case rootfs.KindCharDevice, rootfs.KindBlockDevice:
		if e.DevMajor > maxDevMajor || e.DevMinor > maxDevMinor {
			return fmt.Errorf("squashfs: %q: device %d:%d outside %d:%d", path, e.DevMajor, e.DevMinor, maxDevMajor, maxDevMinor)
		}
	case rootfs.KindDir, rootfs.KindFIFO, rootfs.KindSocket:
	default:
		return fmt.Errorf("squashfs: %q: unknown kind %s", path, e.Kind)
	}
	return nil
}

// addXattrs stores an xattr set once per distinct set and returns its id.
func (p *plan) addXattrs(path string, xattrs map[string][]byte, index map[string]uint32) (uint32, error) {
	if len(xattrs) == 0 {
		return invalidXattr, nil
	}
	names := make([]string, 0, len(xattrs))
	for name := range xattrs {
		names = append(names, name)
	}
	sort.Strings(names)
	var kv []byte
	for _, name := range names {
		prefix, ok := xattrPrefix(name)
		if !ok {
			return 0, fmt.Errorf("squashfs: %q: xattr %q: squashfs stores only user., trusted. and security. names", path, name)
		}
		suffix := name[len(xattrPrefixes[prefix].prefix):]
		value := xattrs[name]
		switch {
		case suffix == "":
			return 0, fmt.Errorf("squashfs: %q: xattr %q: empty name after the prefix", path, name)
		case len(name) > maxXattrNameBytes:
			return 0, fmt.Errorf("squashfs: %q: xattr %q: name longer than %d bytes", path, name, maxXattrNameBytes)
		case len(value) > maxXattrValueBytes:
			return 0, fmt.Errorf("squashfs: %q: xattr %q: value of %d bytes exceeds %d", path, name, len(value), maxXattrValueBytes)
		}
		kv = binary.LittleEndian.AppendUint16(kv, xattrPrefixes[prefix].id)
		kv = binary.LittleEndian.AppendUint16(kv, uint16(len(suffix)))
		kv = append(kv, suffix...)
		kv = binary.LittleEndian.AppendUint32(kv, uint32(len(value)))
		kv = append(kv, value...)
	}
	if id, ok := index[string(kv)]; ok {
		return id, nil
	}
	id := uint32(len(p.xattrIDs) / xattrIDEntryBytes)
	index[string(kv)] = id
	p.xattrIDs = binary.LittleEndian.AppendUint64(p.xattrIDs, p.xattrKV.ref())
	p.xattrIDs = binary.LittleEndian.AppendUint32(p.xattrIDs, uint32(len(names)))
	p.xattrIDs = binary.LittleEndian.AppendUint32(p.xattrIDs, uint32(len(kv)))
	p.xattrKV.write(kv)
	return id, nil
}

func xattrPrefix(name string) (int, bool) {
	for i, x := range xattrPrefixes {
		if strings.HasPrefix(name, x.prefix) {
			return i, true
		}
	}
	return 0, false
}

// orderNodes appends d's subtree to p.order: subdirectories first (each
// complete), then the directory's other inodes together, then d. A
// directory thus follows everything its listing refers to, and the
// listing can be written just before the directory inode.
func (p *plan) orderNodes(d *node) {
	for _, c := range d.children {
		if c.node.entry.Kind == rootfs.KindDir {
			p.orderNodes(c.node)
		}
	}
	for _, c := range d.children {
		if c.node.entry.Kind != rootfs.KindDir && !c.node.ordered {
			c.node.ordered = true
			p.order = append(p.order, c.node)
		}
	}
	p.order = append(p.order, d)
}
