package squashfs

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/ingotdev/ingot/packer/rootfs"
)

// tableWriter builds the inode and directory tables. Nodes come in plan
// order, so everything a directory listing refers to is already written
// when the listing is, and the listing is written just before its
// directory's inode.
type tableWriter struct {
	inodes *metaWriter
	dirs   *metaWriter
	// parentOfRoot is the parent inode number stored in the root inode:
	// one past the last inode, as mksquashfs does.
	parentOfRoot uint32
	buf          []byte
	run          []byte
	index        []byte
}

func basicType(k rootfs.Kind) inodeType {
	switch k {
	case rootfs.KindDir:
		return typeDir
	case rootfs.KindFile:
		return typeFile
	case rootfs.KindSymlink:
		return typeSymlink
	case rootfs.KindBlockDevice:
		return typeBlockDevice
	case rootfs.KindCharDevice:
		return typeCharDevice
	case rootfs.KindFIFO:
		return typeFIFO
	}
	return typeSocket
}

func (tw *tableWriter) header(t inodeType, n *node) []byte {
	b := tw.buf[:0]
	b = binary.LittleEndian.AppendUint16(b, uint16(t))
	b = binary.LittleEndian.AppendUint16(b, uint16(n.entry.Mode&rootfs.PermMask))
	b = binary.LittleEndian.AppendUint16(b, n.uid)
	b = binary.LittleEndian.AppendUint16(b, n.gid)
	b = binary.LittleEndian.AppendUint32(b, uint32(n.entry.ModTime))
	b = binary.LittleEndian.AppendUint32(b, n.number)
	return b
}

func (tw *tableWriter) writeNode(n *node) error {
	if n.entry.Kind == rootfs.KindDir {
		return tw.writeDir(n)
	}
	n.ref = tw.inodes.ref()
	t := basicType(n.entry.Kind)
	hasXattr := n.xattr != invalidXattr
	if hasXattr {
		t = t.extended()
	}
	var b []byte
	switch n.entry.Kind {
	case rootfs.KindFile:
		b = tw.fileInode(n)
	case rootfs.KindSymlink:
		b = tw.header(t, n)
		b = binary.LittleEndian.AppendUint32(b, n.nlink)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(n.entry.Target)))
		b = append(b, n.entry.Target...)
	case rootfs.KindCharDevice, rootfs.KindBlockDevice:
		b = tw.header(t, n)
		b = binary.LittleEndian.AppendUint32(b, n.nlink)
		b = binary.LittleEndian.AppendUint32(b, encodeDev(n.entry.DevMajor, n.entry.DevMinor))
	default: // FIFO, socket
		b = tw.header(t, n)
		b = binary.LittleEndian.AppendUint32(b, n.nlink)
	}
	if hasXattr && n.entry.Kind != rootfs.KindFile {
		b = binary.LittleEndian.AppendUint32(b, n.xattr)
	}
	tw.buf = b
	tw.inodes.write(b)
	return nil
}

func (tw *tableWriter) fileInode(n *node) []byte {
	f := n.file
	basic := f.start <= math.MaxUint32 && f.size <= math.MaxUint32 && n.nlink == 1 &&
		n.xattr == invalidXattr && f.sparseBytes == 0
	var b []byte
	if basic {
		b = tw.header(typeFile, n)
		b = binary.LittleEndian.AppendUint32(b, uint32(f.start))
		b = binary.LittleEndian.AppendUint32(b, f.fragment)
		b = binary.LittleEndian.AppendUint32(b, f.fragOffset)
		b = binary.LittleEndian.AppendUint32(b, uint32(f.size))
	} else {
		b = tw.header(typeExtFile, n)
		b = binary.LittleEndian.AppendUint64(b, f.start)
		b = binary.LittleEndian.AppendUint64(b, uint64(f.size))
		b = binary.LittleEndian.AppendUint64(b, f.sparseBytes)
		b = binary.LittleEndian.AppendUint32(b, n.nlink)
		b = binary.LittleEndian.AppendUint32(b, f.fragment)
		b = binary.LittleEndian.AppendUint32(b, f.fragOffset)
		b = binary.LittleEndian.AppendUint32(b, n.xattr)
	}
	for _, s := range f.blocks {
		b = binary.LittleEndian.AppendUint32(b, s)
	}
	return b
}

// listingBytes is the size of a listing's entries without headers, which
// decides whether a directory gets an index.
func listingBytes(d *node) int {
	n := 0
	for _, c := range d.children {
		n += dirEntryBytes + len(c.name)
	}
	return n
}

// writeDir writes d's listing to the directory table, then d's inode.
//
// The listing is cut into runs behind headers: at most 256 entries, all
// inodes in one inode-table block, inode numbers within ±32767 of the
// header's. A listing longer than a metadata block also starts a run in
// every new directory-table block and indexes those runs, so that a
// lookup reads a single block.
func (tw *tableWriter) writeDir(d *node) error {
	indexed := listingBytes(d) > metadataBlockBytes
	start, offset := tw.dirs.blockStart(), tw.dirs.offset()
	listStart := tw.dirs.upos()
	lastIndexed := listStart / metadataBlockBytes
	tw.index = tw.index[:0]
	indexCount := 0

	var (
		run       = tw.run[:0]
		runCount  int
		runBlock  uint32
		runBase   uint32
		runStart  int64
		firstName string
	)
	emit := func() {
		if runCount == 0 {
			return
		}
		if indexed && runStart/metadataBlockBytes != lastIndexed {
			lastIndexed = runStart / metadataBlockBytes
			tw.index = binary.LittleEndian.AppendUint32(tw.index, uint32(runStart-listStart))
			tw.index = binary.LittleEndian.AppendUint32(tw.index, tw.dirs.blockStart())
			tw.index = binary.LittleEndian.AppendUint32(tw.index, uint32(len(firstName)-1))
			tw.index = append(tw.index, firstName...)
			indexCount++
		}
		var h [dirHeaderBytes]byte
		binary.LittleEndian.PutUint32(h[0:], uint32(runCount-1))
		binary.LittleEndian.PutUint32(h[4:], runBlock)
		binary.LittleEndian.PutUint32(h[8:], runBase)
		tw.dirs.write(h[:])
		tw.dirs.write(run)
		run = run[:0]
		runCount = 0
	}
	for _, c := range d.children {
		block := uint32(c.node.ref >> 16)
		delta := int64(c.node.number) - int64(runBase)
		entryAt := runStart + dirHeaderBytes + int64(len(run))
		if runCount == maxDirRun || block != runBlock || delta < math.MinInt16 || delta > math.MaxInt16 ||
			(indexed && entryAt/metadataBlockBytes != runStart/metadataBlockBytes) {
			emit()
		}
		if runCount == 0 {
			runBlock, runBase = block, c.node.number
			runStart = tw.dirs.upos()
			firstName = c.name
			delta = 0
		}
		run = binary.LittleEndian.AppendUint16(run, uint16(c.node.ref&0xffff))
		run = binary.LittleEndian.AppendUint16(run, uint16(int16(delta)))
		run = binary.LittleEndian.AppendUint16(run, uint16(basicType(c.node.entry.Kind)))
		run = binary.LittleEndian.AppendUint16(run, uint16(len(c.name)-1))
		run = append(run, c.name...)
		runCount++
	}
	emit()
	tw.run = run
	size := tw.dirs.upos() - listStart + dirListingExtraBytes
	if size > math.MaxUint32 || indexCount > math.MaxUint16 {
		return fmt.Errorf("squashfs: dir %q: listing of %d bytes is too large", d.path, size)
	}

	parent := tw.parentOfRoot
	if d.parent != nil {
		parent = d.parent.number
	}
	d.ref = tw.inodes.ref()
	var b []byte
	if indexCount == 0 && d.xattr == invalidXattr && size <= maxBasicDirSize {
		b = tw.header(typeDir, d)
		b = binary.LittleEndian.AppendUint32(b, start)
		b = binary.LittleEndian.AppendUint32(b, d.nlink)
		b = binary.LittleEndian.AppendUint16(b, uint16(size))
		b = binary.LittleEndian.AppendUint16(b, offset)
		b = binary.LittleEndian.AppendUint32(b, parent)
	} else {
		b = tw.header(typeExtDir, d)
		b = binary.LittleEndian.AppendUint32(b, d.nlink)
		b = binary.LittleEndian.AppendUint32(b, uint32(size))
		b = binary.LittleEndian.AppendUint32(b, start)
		b = binary.LittleEndian.AppendUint32(b, parent)
		b = binary.LittleEndian.AppendUint16(b, uint16(indexCount))
		b = binary.LittleEndian.AppendUint16(b, offset)
		b = binary.LittleEndian.AppendUint32(b, d.xattr)
		b = append(b, tw.index...)
	}
	tw.buf = b
	tw.inodes.write(b)
	return nil
}
