package squashfs

import (
	"encoding/binary"
	"fmt"
	"testing"

	format "github.com/ingotdev/ingot/packer/format/squashfs"
	"github.com/ingotdev/ingot/packer/rootfs"
)

// unpackMetadata joins the uncompressed metadata blocks of a stream
// written without compression.
func unpackMetadata(t *testing.T, b []byte) []byte {
	var out []byte
	for len(b) > 0 {
		h := binary.LittleEndian.Uint16(b)
		if h&metadataUncompressedBit == 0 {
			t.Fatal("compressed metadata block in an uncompressed stream")
		}
		n := int(h &^ metadataUncompressedBit)
		out = append(out, b[2:2+n]...)
		b = b[2+n:]
	}
	return out
}

// TestDirectoryIndex checks the index of a large directory: one entry per
// directory-table block the listing enters, each pointing at a header
// whose first name it carries, and headers of at most 256 entries.
func TestDirectoryIndex(t *testing.T) {
	tree := rootfs.New(testTime)
	b := treeBuilder{t, tree}
	b.dir("/many", 0o755)
	for i := range 5000 {
		b.bytes(fmt.Sprintf("/many/entry-%05d", i), "x")
	}
	comp := noneCompressor{}
	files := make(chan *fileData, 10000)
	p, err := makePlan(tree, comp, files, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out seekBuffer
	o, _ := newOutput(&out)
	var sb format.Superblock
	if err := writeTables(o, comp, p, nil, &sb); err != nil {
		t.Fatal(err)
	}
	o.flush()
	inodes := unpackMetadata(t, out.b[sb.InodeTableStart:sb.DirTableStart])
	dirs := unpackMetadata(t, out.b[sb.DirTableStart:sb.FragmentTableStart])
	// Compressed and uncompressed offsets agree without compression,
	// except for the 2-byte block headers.
	blockAt := func(start uint32) int { return int(start) / (metadataBlockBytes + 2) * metadataBlockBytes }

	many := p.root.children[0].node
	ino := inodes[blockAt(uint32(many.ref>>16))+int(many.ref&0xffff):]
	if typ := inodeType(binary.LittleEndian.Uint16(ino)); typ != typeExtDir {
		t.Fatalf("/many has inode type %d, want %d (extended directory)", typ, typeExtDir)
	}
	size := binary.LittleEndian.Uint32(ino[20:])
	start := binary.LittleEndian.Uint32(ino[24:])
	count := int(binary.LittleEndian.Uint16(ino[32:]))
	offset := int(binary.LittleEndian.Uint16(ino[34:]))
	listing := dirs[blockAt(start)+offset:][:size-dirListingExtraBytes]
	if want := len(listing) / metadataBlockBytes; count < want {
		t.Errorf("/many has %d index entries, want at least %d", count, want)
	}
	idx := ino[40:]
	for i := range count {
		at := binary.LittleEndian.Uint32(idx)
		blockStart := binary.LittleEndian.Uint32(idx[4:])
		nameLen := int(binary.LittleEndian.Uint32(idx[8:])) + 1
		name := string(idx[12 : 12+nameLen])
		idx = idx[12+nameLen:]
		// The header the entry points at, found through the block it
		// names, as the kernel does.
		abs := blockAt(blockStart) + (offset+int(at))%metadataBlockBytes
		if abs != blockAt(start)+offset+int(at) {
			t.Errorf("index %d: block %d offset %d is not listing byte %d", i, blockStart, at, at)
			continue
		}
		hdr := dirs[abs:]
		first := dirs[abs+dirHeaderBytes:]
		firstName := string(first[dirEntryBytes : dirEntryBytes+int(binary.LittleEndian.Uint16(first[6:]))+1])
		if firstName != name {
			t.Errorf("index %d names %q, its header starts with %q", i, name, firstName)
		}
		if n := binary.LittleEndian.Uint32(hdr) + 1; n > maxDirRun {
			t.Errorf("index %d: header of %d entries", i, n)
		}
	}
}
