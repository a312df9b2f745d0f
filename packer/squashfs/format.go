package squashfs

import "encoding/binary"

// On-disk facts of squashfs 4.0, as the Linux kernel reads them
// (fs/squashfs/squashfs_fs.h). Every integer is little endian.
const (
	magic        = 0x73717368 // "hsqs"
	versionMajor = 4
	versionMinor = 0

	superblockBytes = 96

	// metadataBlockBytes is the uncompressed size of one metadata block;
	// each is stored behind a 2-byte header holding its stored size.
	metadataBlockBytes = 8192
	// metadataUncompressedBit marks a metadata block stored as is.
	metadataUncompressedBit = 1 << 15
	// dataUncompressedBit marks a data or fragment block stored as is.
	dataUncompressedBit = 1 << 24

	// MinBlockBytes and MaxBlockBytes bound the data block size; the kernel
	// needs a block at least one page large and at most 1 MiB.
	MinBlockBytes = 4 << 10
	MaxBlockBytes = 1 << 20
	// DefaultBlockBytes is the block size of mksquashfs and of Write.
	DefaultBlockBytes = 128 << 10

	// maxDirRun is the most entries one directory header may cover.
	maxDirRun = 256
	// dirHeaderBytes and dirEntryBytes are the fixed parts of a directory
	// header and of an entry (the name follows the entry).
	dirHeaderBytes = 12
	dirEntryBytes  = 8
	// dirListingExtraBytes is added to a listing's size in the directory
	// inode: the kernel counts "." and ".." as 3 bytes it never stores.
	dirListingExtraBytes = 3
	// maxBasicDirSize is the largest file_size a basic directory inode
	// holds (16 bits).
	maxBasicDirSize = 0xffff

	// maxSymlinkBytes is the longest symlink target; the kernel rejects
	// targets longer than a page and Linux paths end below 4096 anyway.
	maxSymlinkBytes = 4095
	// maxXattrNameBytes and maxXattrValueBytes are Linux's limits
	// (XATTR_NAME_MAX, XATTR_SIZE_MAX).
	maxXattrNameBytes  = 255
	maxXattrValueBytes = 64 << 10
	// maxIDs is the number of distinct uids and gids the superblock's
	// 16-bit count can hold.
	maxIDs = 1<<16 - 1
	// maxDevMajor and maxDevMinor are the largest device numbers the 32-bit
	// Linux encoding (new_encode_dev) holds.
	maxDevMajor = 0xfff
	maxDevMinor = 0xfffff

	// imageAlignBytes pads the image like mksquashfs does, so that it is a
	// whole number of device blocks for loop devices and partitions.
	imageAlignBytes = 4096

	invalidFragment = 0xffffffff
	invalidXattr    = 0xffffffff
	invalidTable    = 0xffffffffffffffff
)

// Compressor ids of the superblock.
const (
	compressorGzip = 1
	compressorZstd = 6
)

// Superblock flags.
const (
	flagUncompressedInodes    = 0x0001
	flagUncompressedData      = 0x0002
	flagUncompressedFragments = 0x0008
	flagAlwaysFragments       = 0x0020
	flagDuplicates            = 0x0040
	flagExportable            = 0x0080
	flagUncompressedXattrs    = 0x0100
	flagNoXattrs              = 0x0200
	flagCompressorOptions     = 0x0400
	flagUncompressedIDs       = 0x0800
)

// inodeType is the type field of an inode. Directory entries always carry
// the basic type.
type inodeType uint16

const (
	typeDir inodeType = iota + 1
	typeFile
	typeSymlink
	typeBlockDevice
	typeCharDevice
	typeFIFO
	typeSocket
	typeExtDir
	typeExtFile
	typeExtSymlink
	typeExtBlockDevice
	typeExtCharDevice
	typeExtFIFO
	typeExtSocket
)

// extended returns the extended variant of a basic type.
func (t inodeType) extended() inodeType {
	if t >= typeExtDir {
		return t
	}
	return t + typeExtDir - typeDir
}

// Xattr name prefixes, stored as a type so that names stay short.
const (
	xattrUser     = 0
	xattrTrusted  = 1
	xattrSecurity = 2
)

var xattrPrefixes = [...]struct {
	prefix string
	id     uint16
}{
	{"user.", xattrUser},
	{"trusted.", xattrTrusted},
	{"security.", xattrSecurity},
}

// Entry sizes of the lookup tables; each fills metadata blocks exactly.
const (
	fragmentEntryBytes = 16
	exportEntryBytes   = 8
	idEntryBytes       = 4
	xattrIDEntryBytes  = 16
)

// superblock is the first 96 bytes of an image.
type superblock struct {
	inodes             uint32
	mkfsTime           uint32
	blockSize          uint32
	fragments          uint32
	compressor         uint16
	blockLog           uint16
	flags              uint16
	ids                uint16
	rootInode          uint64
	bytesUsed          uint64
	idTableStart       uint64
	xattrIDTableStart  uint64
	inodeTableStart    uint64
	dirTableStart      uint64
	fragmentTableStart uint64
	exportTableStart   uint64
}

func (s *superblock) encode() []byte {
	b := make([]byte, 0, superblockBytes)
	b = binary.LittleEndian.AppendUint32(b, magic)
	b = binary.LittleEndian.AppendUint32(b, s.inodes)
	b = binary.LittleEndian.AppendUint32(b, s.mkfsTime)
	b = binary.LittleEndian.AppendUint32(b, s.blockSize)
	b = binary.LittleEndian.AppendUint32(b, s.fragments)
	b = binary.LittleEndian.AppendUint16(b, s.compressor)
	b = binary.LittleEndian.AppendUint16(b, s.blockLog)
	b = binary.LittleEndian.AppendUint16(b, s.flags)
	b = binary.LittleEndian.AppendUint16(b, s.ids)
	b = binary.LittleEndian.AppendUint16(b, versionMajor)
	b = binary.LittleEndian.AppendUint16(b, versionMinor)
	b = binary.LittleEndian.AppendUint64(b, s.rootInode)
	b = binary.LittleEndian.AppendUint64(b, s.bytesUsed)
	b = binary.LittleEndian.AppendUint64(b, s.idTableStart)
	b = binary.LittleEndian.AppendUint64(b, s.xattrIDTableStart)
	b = binary.LittleEndian.AppendUint64(b, s.inodeTableStart)
	b = binary.LittleEndian.AppendUint64(b, s.dirTableStart)
	b = binary.LittleEndian.AppendUint64(b, s.fragmentTableStart)
	b = binary.LittleEndian.AppendUint64(b, s.exportTableStart)
	return b
}

// encodeDev packs a device number the way Linux's new_encode_dev does,
// which is what the kernel's squashfs reader decodes.
func encodeDev(major, minor uint32) uint32 {
	return minor&0xff | major<<8 | (minor&^0xff)<<12
}
