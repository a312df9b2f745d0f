// Package squashfs is the squashfs 4.0 superblock, as the Linux kernel
// reads it (fs/squashfs/squashfs_fs.h): the first 96 bytes of an image,
// every integer little endian. The writer (packer/squashfs) encodes it;
// the update path in the appliance and the push client parse it to check
// an image and to find where it ends inside its partition.
package squashfs

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
)

// On-disk facts of the superblock.
const (
	// Magic is "hsqs" read as a little-endian uint32.
	Magic        = 0x73717368
	VersionMajor = 4
	VersionMinor = 0
	// SuperblockBytes is the superblock's size.
	SuperblockBytes = 96
	// AlignBytes is what images are padded to, like mksquashfs does, so
	// that an image is a whole number of device blocks.
	AlignBytes = 4096

	// MinBlockBytes and MaxBlockBytes bound the data block size; the kernel
	// needs a block at least one page large and at most 1 MiB.
	MinBlockBytes = 4 << 10
	MaxBlockBytes = 1 << 20
)

// Compressor ids of the superblock; 2 to 5 are lzma, lzo, xz and lz4.
const (
	CompressorGzip = 1
	CompressorZstd = 6
)

// Superblock flags.
const (
	FlagUncompressedInodes    = 0x0001
	FlagUncompressedData      = 0x0002
	FlagUncompressedFragments = 0x0008
	FlagAlwaysFragments       = 0x0020
	FlagDuplicates            = 0x0040
	FlagExportable            = 0x0080
	FlagUncompressedXattrs    = 0x0100
	FlagNoXattrs              = 0x0200
	FlagCompressorOptions     = 0x0400
	FlagUncompressedIDs       = 0x0800
)

// Byte offsets of the fields Parse checks, for its errors.
const (
	majorOffset      = 28
	blockSizeOffset  = 12
	compressorOffset = 20
	blockLogOffset   = 22
	rootInodeOffset  = 32
	bytesUsedOffset  = 40
)

// Superblock is the superblock's fields after the magic, less the version.
type Superblock struct {
	Inodes             uint32
	MkfsTime           uint32
	BlockSize          uint32
	Fragments          uint32
	Compressor         uint16
	BlockLog           uint16
	Flags              uint16
	IDs                uint16
	RootInode          uint64
	BytesUsed          uint64 // the image's length before padding
	IDTableStart       uint64
	XattrIDTableStart  uint64
	InodeTableStart    uint64
	DirTableStart      uint64
	FragmentTableStart uint64
	ExportTableStart   uint64
}

// Encode returns the superblock's 96 bytes.
func (s *Superblock) Encode() []byte {
	le := binary.LittleEndian
	b := make([]byte, 0, SuperblockBytes)
	b = le.AppendUint32(b, Magic)
	b = le.AppendUint32(b, s.Inodes)
	b = le.AppendUint32(b, s.MkfsTime)
	b = le.AppendUint32(b, s.BlockSize)
	b = le.AppendUint32(b, s.Fragments)
	b = le.AppendUint16(b, s.Compressor)
	b = le.AppendUint16(b, s.BlockLog)
	b = le.AppendUint16(b, s.Flags)
	b = le.AppendUint16(b, s.IDs)
	b = le.AppendUint16(b, VersionMajor)
	b = le.AppendUint16(b, VersionMinor)
	for _, v := range s.words() {
		b = le.AppendUint64(b, *v)
	}
	return b
}

// words are the 64-bit fields, in their order on disk.
func (s *Superblock) words() []*uint64 {
	return []*uint64{&s.RootInode, &s.BytesUsed, &s.IDTableStart, &s.XattrIDTableStart,
		&s.InodeTableStart, &s.DirTableStart, &s.FragmentTableStart, &s.ExportTableStart}
}

// Parse reads the superblock at the start of b and checks what every
// reader relies on: the magic, version 4, a block size the kernel accepts
// that agrees with its logarithm, a known compressor and a length of at
// least a superblock. Errors name the field and its byte offset.
func Parse(b []byte) (Superblock, error) {
	le := binary.LittleEndian
	if len(b) < SuperblockBytes {
		return Superblock{}, fmt.Errorf("squashfs: %d bytes are too few for a superblock (%d)", len(b), SuperblockBytes)
	}
	if m := le.Uint32(b); m != Magic {
		return Superblock{}, fmt.Errorf("squashfs: offset 0: magic %#08x is not squashfs (%#08x, \"hsqs\")", m, Magic)
	}
	if v := le.Uint16(b[majorOffset:]); v != VersionMajor {
		return Superblock{}, fmt.Errorf("squashfs: offset %d: major version %d, want %d", majorOffset, v, VersionMajor)
	}
	s := Superblock{
		Inodes: le.Uint32(b[4:]), MkfsTime: le.Uint32(b[8:]), BlockSize: le.Uint32(b[blockSizeOffset:]),
		Fragments: le.Uint32(b[16:]), Compressor: le.Uint16(b[compressorOffset:]), BlockLog: le.Uint16(b[blockLogOffset:]),
		Flags: le.Uint16(b[24:]), IDs: le.Uint16(b[26:]),
	}
	for i, v := range s.words() {
		*v = le.Uint64(b[rootInodeOffset+8*i:])
	}
	switch bs := s.BlockSize; {
	case bs < MinBlockBytes || bs > MaxBlockBytes || bs&(bs-1) != 0:
		return Superblock{}, fmt.Errorf("squashfs: offset %d: block size %d, want a power of two from %d to %d", blockSizeOffset, bs, MinBlockBytes, MaxBlockBytes)
	case int(s.BlockLog) != bits.TrailingZeros32(bs):
		return Superblock{}, fmt.Errorf("squashfs: offset %d: block log %d does not match the block size %d", blockLogOffset, s.BlockLog, bs)
	case s.Compressor < CompressorGzip || s.Compressor > CompressorZstd:
		return Superblock{}, fmt.Errorf("squashfs: offset %d: unknown compressor %d", compressorOffset, s.Compressor)
	case s.BytesUsed < SuperblockBytes:
		return Superblock{}, fmt.Errorf("squashfs: offset %d: bytes_used %d is less than the superblock", bytesUsedOffset, s.BytesUsed)
	}
	return s, nil
}

// PaddedBytes is the image's length with its padding to AlignBytes: what
// a partition holding the image must hold at least.
func (s *Superblock) PaddedBytes() uint64 {
	return (s.BytesUsed + AlignBytes - 1) / AlignBytes * AlignBytes
}

// ParseWithin is Parse for an image that must lie within sizeBytes, such
// as a root partition or a declared stream length: it also checks that
// bytes_used fits. A slot whose start passes holds a complete root,
// since the writers write the superblock last.
func ParseWithin(b []byte, sizeBytes int64) (Superblock, error) {
	s, err := Parse(b)
	if err != nil {
		return Superblock{}, err
	}
	if sizeBytes < 0 || s.BytesUsed > uint64(sizeBytes) {
		return Superblock{}, fmt.Errorf("squashfs: offset %d: bytes_used %d does not fit the %d bytes that hold the image", bytesUsedOffset, s.BytesUsed, sizeBytes)
	}
	return s, nil
}

// Section returns the squashfs image at the start of part, a partition of
// partBytes, up to its bytes_used rounded up to AlignBytes (PaddedBytes):
// what an update sends and a release stores of a root.
func Section(part io.ReaderAt, partBytes int64) (*io.SectionReader, error) {
	b := make([]byte, SuperblockBytes)
	if _, err := part.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("squashfs: reading the superblock: %w", err)
	}
	sb, err := Parse(b)
	if err != nil {
		return nil, err
	}
	if sb.PaddedBytes() > uint64(partBytes) {
		return nil, fmt.Errorf("squashfs: bytes_used %d does not fit the partition's %d bytes", sb.BytesUsed, partBytes)
	}
	return io.NewSectionReader(part, 0, int64(sb.PaddedBytes())), nil
}
