package squashfs

import (
	"encoding/binary"
)

// metaWriter builds one metadata stream (inode table, directory table,
// xattr table, a lookup table) in memory: bytes are cut into 8 KiB blocks,
// each compressed as soon as it is full, so that the on-disk position of
// every byte written so far is known. That is what lets inodes refer to
// directory listings and listings to inodes.
type metaWriter struct {
	comp compressor
	// out holds the finished blocks, headers included.
	out []byte
	// starts lists the offset in out of every finished block.
	starts []uint32
	// pending holds the uncompressed bytes of the unfinished block; it is
	// always shorter than a block between calls.
	pending []byte
	scratch []byte
	err     error
}

func newMetaWriter(comp compressor) *metaWriter {
	return &metaWriter{comp: comp, pending: make([]byte, 0, 2*metadataBlockBytes)}
}

// ref returns the reference of the next byte: the offset of its block in
// the stream, shifted left 16 bits, plus its offset in the uncompressed
// block.
func (m *metaWriter) ref() uint64 {
	return uint64(len(m.out))<<16 | uint64(len(m.pending))
}

// blockStart returns the stream offset of the block the next byte lands in.
func (m *metaWriter) blockStart() uint32 { return uint32(len(m.out)) }

// offset returns the offset of the next byte in its uncompressed block.
func (m *metaWriter) offset() uint16 { return uint16(len(m.pending)) }

// upos returns how many uncompressed bytes were written.
func (m *metaWriter) upos() int64 {
	return int64(len(m.starts))*metadataBlockBytes + int64(len(m.pending))
}

func (m *metaWriter) write(p []byte) {
	m.pending = append(m.pending, p...)
	if len(m.pending) < metadataBlockBytes {
		return
	}
	n := 0
	for len(m.pending)-n >= metadataBlockBytes {
		m.flushBlock(m.pending[n : n+metadataBlockBytes])
		n += metadataBlockBytes
	}
	m.pending = append(m.pending[:0], m.pending[n:]...)
}

// finish writes the last, partial block.
func (m *metaWriter) finish() []byte {
	if len(m.pending) > 0 {
		m.flushBlock(m.pending)
		m.pending = m.pending[:0]
	}
	return m.out
}

func (m *metaWriter) flushBlock(b []byte) {
	m.starts = append(m.starts, uint32(len(m.out)))
	var c []byte
	if m.err == nil {
		c, m.err = m.comp.compress(m.scratch, b)
		m.scratch = c
	}
	if c != nil && len(c) < len(b) {
		m.out = binary.LittleEndian.AppendUint16(m.out, uint16(len(c)))
		m.out = append(m.out, c...)
		return
	}
	m.out = binary.LittleEndian.AppendUint16(m.out, uint16(len(b))|metadataUncompressedBit)
	m.out = append(m.out, b...)
}

// lookupTable stores fixed-size entries in metadata blocks, followed by
// the uncompressed array of the blocks' absolute positions that the
// superblock points to. It returns the bytes to write at offset at and
// the position of the array.
func lookupTable(comp compressor, entries []byte, at uint64) (table []byte, indexAt uint64, err error) {
	m := newMetaWriter(comp)
	m.write(entries)
	table = m.finish()
	if m.err != nil {
		return nil, 0, m.err
	}
	indexAt = at + uint64(len(table))
	for _, s := range m.starts {
		table = binary.LittleEndian.AppendUint64(table, at+uint64(s))
	}
	return table, indexAt, nil
}
