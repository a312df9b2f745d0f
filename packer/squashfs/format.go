package squashfs

// On-disk facts of squashfs 4.0, as the Linux kernel reads them
// (fs/squashfs/squashfs_fs.h), beyond the superblock's (packer/format/squashfs).
// Every integer is little endian.
const (
	// metadataBlockBytes is the uncompressed size of one metadata block;
	// each is stored behind a 2-byte header holding its stored size.
	metadataBlockBytes = 8192
	// metadataUncompressedBit marks a metadata block stored as is.
	metadataUncompressedBit = 1 << 15
	// dataUncompressedBit marks a data or fragment block stored as is.
	dataUncompressedBit = 1 << 24

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

	invalidFragment = 0xffffffff
	invalidXattr    = 0xffffffff
	invalidTable    = 0xffffffffffffffff
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

// encodeDev packs a device number the way Linux's new_encode_dev does,
// which is what the kernel's squashfs reader decodes.
func encodeDev(major, minor uint32) uint32 {
	return minor&0xff | major<<8 | (minor&^0xff)<<12
}
