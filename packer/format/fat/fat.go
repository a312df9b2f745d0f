// Package fat writes and reads FAT32 filesystems (Microsoft FAT
// specification, with VFAT long file names) for boot partitions.
//
// Write produces a fresh, deterministic image: the same files and options
// give the same bytes. Open reads one as an io/fs.FS and treats every
// on-disk value as untrusted, so a corrupt image yields an error rather than
// a panic or a hang. Rewrite replaces one file's content in place so that a
// crash leaves either the old or the new content.
//
// Everything works on io.ReaderAt / io.WriterAt at offset 0. For a partition
// inside a disk image pass io.NewOffsetWriter(disk, off) to Write and
// io.NewSectionReader(disk, off, n) to Open, or NewSection(disk, off, n) to
// any of them.
package fat

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Fixed layout choices of the writer.
const (
	sectorBytes      = 512
	reservedSectors  = 32 // the spec's recommendation for FAT32
	numFATs          = 2
	fsInfoSector     = 1
	backupBootSector = 6
	rootCluster      = 2
	mediaFixed       = 0xF8
	oemName          = "MSWIN4.1" // the most compatible value, per the spec
	noLabel          = "NO NAME    "
	defaultClusterB  = 4096
	maxClusterBytes  = 32 << 10
	dirEntryBytes    = 32
	// maxDirEntries is the spec's limit on entries in one directory.
	maxDirEntries = 65536
	maxFileBytes  = 1<<32 - 1
)

// FAT32 cluster-count limits: fewer than minClusters and every driver takes
// the volume for FAT16; entries above maxCluster are reserved values.
const (
	minClusters = 65525
	maxClusters = 0x0FFFFFF5
)

// FAT entry values.
const (
	fatEntryMask = 0x0FFFFFFF
	fatFree      = 0
	fatBad       = 0x0FFFFFF7
	fatEOCMin    = 0x0FFFFFF8
	fatEOC       = 0x0FFFFFFF
)

// Directory entry attributes and NT case flags.
const (
	attrReadOnly  = 0x01
	attrHidden    = 0x02
	attrSystem    = 0x04
	attrVolumeID  = 0x08
	attrDirectory = 0x10
	attrArchive   = 0x20
	attrLongName  = attrReadOnly | attrHidden | attrSystem | attrVolumeID
	ntLowerBase   = 0x08
	ntLowerExt    = 0x10
	deletedMarker = 0xE5
)

// FSInfo signatures and offsets.
const (
	fsInfoLeadSig   = 0x41615252
	fsInfoStrucSig  = 0x61417272
	fsInfoTrailSig  = 0xAA550000
	fsInfoFreeOff   = 488
	fsInfoNextOff   = 492
	fsInfoUnknown   = 0xFFFFFFFF
	bootSigOffset   = 510
	extBootSig      = 0x29
	fsTypeFAT32     = "FAT32   "
	minSectorBytes  = 512
	maxSectorBytes  = 4096
	maxSecPerClus   = 128
	maxCapableBytes = 1 << 32 * sectorBytes
)

// MinSizeBytes is the smallest volume Write accepts, 34089472 bytes (about
// 32.5 MiB): 65525 clusters of one sector plus reserved sectors and two FATs.
const MinSizeBytes = (reservedSectors + numFATs*(((minClusters+2)*4+sectorBytes-1)/sectorBytes) + minClusters) * sectorBytes

// geometry is where everything lives on a volume.
type geometry struct {
	bytesPerSector    uint32
	sectorsPerCluster uint32
	reservedSectors   uint32
	numFATs           uint32
	fatSectors        uint32
	totalSectors      uint32
	clusterCount      uint32
	rootCluster       uint32
	activeFAT         uint32 // FAT that readers use
	mirrored          bool   // writers update every FAT, not just the active one
	fsInfoSector      uint32 // 0 if none
}

func (g geometry) clusterBytes() int64 { return int64(g.bytesPerSector) * int64(g.sectorsPerCluster) }

func (g geometry) dataStartBytes() int64 {
	return (int64(g.reservedSectors) + int64(g.numFATs)*int64(g.fatSectors)) * int64(g.bytesPerSector)
}

// clusterOffset is the byte offset of cluster c (c >= 2).
func (g geometry) clusterOffset(c uint32) int64 {
	return g.dataStartBytes() + int64(c-2)*g.clusterBytes()
}

// fatOffset is the byte offset of FAT copy i.
func (g geometry) fatOffset(i uint32) int64 {
	return (int64(g.reservedSectors) + int64(i)*int64(g.fatSectors)) * int64(g.bytesPerSector)
}

// validCluster reports whether c names a data cluster of the volume.
func (g geometry) validCluster(c uint32) bool {
	return c >= 2 && c-2 < g.clusterCount
}

// planGeometry picks the layout for a new volume. With clusterBytes 0 it
// prefers 4 KiB clusters and falls back to smaller ones on volumes too small
// to have 65525 of them, and to larger ones on volumes too big.
func planGeometry(sizeBytes int64, clusterBytes int) (geometry, error) {
	if sizeBytes < MinSizeBytes {
		return geometry{}, fmt.Errorf("fat: volume of %d bytes is too small for FAT32 (at least %d bytes, 65525 clusters)", sizeBytes, int64(MinSizeBytes))
	}
	if sizeBytes/sectorBytes > 0xFFFFFFFF {
		return geometry{}, fmt.Errorf("fat: volume of %d bytes is larger than FAT32's %d", sizeBytes, int64(maxCapableBytes))
	}
	candidates := []int{defaultClusterB, 2048, 1024, 512, 8192, 16384, 32768}
	if clusterBytes != 0 {
		if clusterBytes < sectorBytes || clusterBytes > maxClusterBytes || clusterBytes&(clusterBytes-1) != 0 {
			return geometry{}, fmt.Errorf("fat: cluster size %d bytes: want a power of two from %d to %d", clusterBytes, sectorBytes, maxClusterBytes)
		}
		candidates = []int{clusterBytes}
	}
	total := uint32(sizeBytes / sectorBytes)
	var last error
	for _, cb := range candidates {
		spc := uint32(cb / sectorBytes)
		// Smallest FAT that can map every cluster left after it:
		// fat*128 >= (total - rsvd - 2*fat)/spc + 2.
		entriesPerSector := uint64(sectorBytes / 4)
		fat := uint32((uint64(total) - reservedSectors + 2*uint64(spc) + entriesPerSector*uint64(spc) + numFATs - 1) / (entriesPerSector*uint64(spc) + numFATs))
		// Pad the reserved area so that clusters start on a cluster
		// boundary: flash media and the page cache like aligned clusters.
		rsvd := uint32(reservedSectors)
		rsvd += (spc - (rsvd+numFATs*fat)%spc) % spc
		meta := uint64(rsvd) + numFATs*uint64(fat)
		if meta >= uint64(total) {
			last = fmt.Errorf("fat: volume of %d bytes has no room for data with %d-byte clusters", sizeBytes, cb)
			continue
		}
		count := (uint64(total) - meta) / uint64(spc)
		switch {
		case count < minClusters:
			last = fmt.Errorf("fat: volume of %d bytes has %d clusters of %d bytes, FAT32 needs at least %d", sizeBytes, count, cb, minClusters)
			continue
		case count > maxClusters:
			last = fmt.Errorf("fat: volume of %d bytes has %d clusters of %d bytes, FAT32 allows at most %d", sizeBytes, count, cb, maxClusters)
			continue
		case uint64(fat)*entriesPerSector < count+2:
			return geometry{}, fmt.Errorf("fat: internal error: FAT of %d sectors cannot map %d clusters", fat, count)
		}
		return geometry{
			bytesPerSector: sectorBytes, sectorsPerCluster: spc, reservedSectors: rsvd,
			numFATs: numFATs, fatSectors: fat, totalSectors: total, clusterCount: uint32(count),
			rootCluster: rootCluster, fsInfoSector: fsInfoSector,
		}, nil
	}
	return geometry{}, last
}

// bootSector encodes the boot sector of a volume this package writes.
func bootSector(g geometry, hidden uint32, volumeID uint32, label [shortNameBytes]byte) []byte {
	b := make([]byte, sectorBytes)
	copy(b[0:3], []byte{0xEB, 0x58, 0x90}) // jump over the BPB to offset 0x5A
	copy(b[3:11], oemName)
	le := binary.LittleEndian
	le.PutUint16(b[11:], uint16(g.bytesPerSector))
	b[13] = byte(g.sectorsPerCluster)
	le.PutUint16(b[14:], uint16(g.reservedSectors))
	b[16] = byte(g.numFATs)
	// RootEntCnt, TotSec16 and FATSz16 stay 0: that is what makes it FAT32.
	b[21] = mediaFixed
	le.PutUint16(b[24:], 63)  // sectors per track, conventional LBA geometry
	le.PutUint16(b[26:], 255) // heads
	le.PutUint32(b[28:], hidden)
	le.PutUint32(b[32:], g.totalSectors)
	le.PutUint32(b[36:], g.fatSectors)
	// ExtFlags 0: FATs mirrored. FSVer 0.0.
	le.PutUint32(b[44:], g.rootCluster)
	le.PutUint16(b[48:], fsInfoSector)
	le.PutUint16(b[50:], backupBootSector)
	b[64] = 0x80 // drive number: hard disk
	b[66] = extBootSig
	le.PutUint32(b[67:], volumeID)
	copy(b[71:82], label[:])
	copy(b[82:90], fsTypeFAT32)
	// Boot code for a BIOS that tries to boot the volume: int 18h
	// ("no bootable disk"), then halt forever.
	copy(b[90:], []byte{0xCD, 0x18, 0xF4, 0xEB, 0xFD})
	b[bootSigOffset] = 0x55
	b[bootSigOffset+1] = 0xAA
	return b
}

// fsInfo encodes the FSInfo sector.
func fsInfo(free, next uint32) []byte {
	b := make([]byte, sectorBytes)
	le := binary.LittleEndian
	le.PutUint32(b[0:], fsInfoLeadSig)
	le.PutUint32(b[484:], fsInfoStrucSig)
	le.PutUint32(b[fsInfoFreeOff:], free)
	le.PutUint32(b[fsInfoNextOff:], next)
	le.PutUint32(b[508:], fsInfoTrailSig)
	return b
}

// Timestamps: FAT has no time zone; callers pass UTC.

// defaultEpoch (2020-01-01T00:00:00Z) is the timestamp of every entry
// unless WithTime says otherwise.
const defaultEpoch = 1577836800

// fatDateTime encodes t, clamped to the range FAT can hold (1980-2107).
func fatDateTime(t time.Time) (date, tm uint16, tenths byte) {
	t = t.UTC()
	if t.Year() < 1980 {
		t = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if t.Year() > 2107 {
		t = time.Date(2107, 12, 31, 23, 59, 58, 0, time.UTC)
	}
	date = uint16(t.Year()-1980)<<9 | uint16(t.Month())<<5 | uint16(t.Day())
	tm = uint16(t.Hour())<<11 | uint16(t.Minute())<<5 | uint16(t.Second()/2)
	tenths = byte(t.Second()%2*100 + t.Nanosecond()/10_000_000)
	return date, tm, tenths
}

// parseDateTime decodes a FAT date and time; nonsense fields give the zero
// time rather than an error, since timestamps never matter for reading.
func parseDateTime(date, tm uint16) time.Time {
	day, month, year := int(date&0x1f), time.Month(date>>5&0x0f), int(date>>9)+1980
	sec, min, hour := int(tm&0x1f)*2, int(tm>>5&0x3f), int(tm>>11)
	if day < 1 || day > 31 || month < 1 || month > 12 || sec > 59 || min > 59 || hour > 23 {
		return time.Time{}
	}
	return time.Date(year, month, day, hour, min, sec, 0, time.UTC)
}
