// Package fat is the FAT32 on-disk format (Microsoft FAT specification,
// with VFAT long file names) of boot partitions: what the host and the
// appliance both read. It holds the geometry and boot sector, 8.3 and long
// names, timestamps, a reader and an in-place rewrite; the writer of fresh
// volumes (packer/fat) builds on it.
//
// Open reads a volume as an io/fs.FS and treats every on-disk value as
// untrusted, so a corrupt image yields an error rather than a panic or a
// hang. Rewrite replaces one file's content in place so that a crash
// leaves either the old or the new content.
//
// Everything works on io.ReaderAt / io.WriterAt at offset 0. For a partition
// inside a disk image pass io.NewSectionReader(disk, off, n) to Open, or
// NewSection(disk, off, n) to Open and Rewrite.
package fat

import (
	"encoding/binary"
	"fmt"
	"strings"
	"time"
)

// Fixed layout choices of the volumes PlanGeometry lays out.
const (
	sectorBytes        = 512
	newReservedSectors = 32 // the spec's recommendation for FAT32
	newNumFATs         = 2
	newFSInfoSector    = 1
	backupBootSector   = 6
	newRootCluster     = 2
	oemName            = "MSWIN4.1" // the most compatible value, per the spec
	noLabel            = "NO NAME    "
	defaultClusterB    = 4096
	maxClusterBytes    = 32 << 10
)

// Limits of FAT32 that the writer and the reader both enforce.
const (
	// DirEntryBytes is the size of a directory entry.
	DirEntryBytes = 32
	// MaxDirEntries is the spec's limit on entries in one directory.
	MaxDirEntries = 65536
	// MaxFileBytes is the largest file size a directory entry holds.
	MaxFileBytes = 1<<32 - 1
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
	// EOC ends a cluster chain.
	EOC = 0x0FFFFFFF
	// MediaFixed is the media byte of a fixed disk, in the boot sector and
	// in the low byte of FAT entry 0.
	MediaFixed = 0xF8
)

// Directory entry attributes and NT case flags.
const (
	attrReadOnly  = 0x01
	attrHidden    = 0x02
	attrSystem    = 0x04
	AttrVolumeID  = 0x08
	AttrDirectory = 0x10
	AttrArchive   = 0x20
	attrLongName  = attrReadOnly | attrHidden | attrSystem | AttrVolumeID
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

// MinSizeBytes is the smallest volume PlanGeometry lays out, 34089472
// bytes (about 32.5 MiB): 65525 clusters of one sector plus reserved
// sectors and two FATs.
const MinSizeBytes = (newReservedSectors + newNumFATs*(((minClusters+2)*4+sectorBytes-1)/sectorBytes) + minClusters) * sectorBytes

// Geometry is where everything lives on a volume, as the boot sector says.
type Geometry struct {
	BytesPerSector    uint32
	SectorsPerCluster uint32
	ReservedSectors   uint32
	NumFATs           uint32
	FATSectors        uint32 // of each FAT
	TotalSectors      uint32
	ClusterCount      uint32 // data clusters, numbered from 2
	RootCluster       uint32
	ActiveFAT         uint32 // FAT that readers use
	Mirrored          bool   // writers update every FAT, not just the active one
	FSInfoSector      uint32 // 0 if none
}

// ClusterBytes is the size of a cluster.
func (g Geometry) ClusterBytes() int64 { return int64(g.BytesPerSector) * int64(g.SectorsPerCluster) }

func (g Geometry) dataStartBytes() int64 {
	return (int64(g.ReservedSectors) + int64(g.NumFATs)*int64(g.FATSectors)) * int64(g.BytesPerSector)
}

// ClusterOffset is the byte offset of cluster c (c >= 2).
func (g Geometry) ClusterOffset(c uint32) int64 {
	return g.dataStartBytes() + int64(c-2)*g.ClusterBytes()
}

// FATOffset is the byte offset of FAT copy i.
func (g Geometry) FATOffset(i uint32) int64 {
	return (int64(g.ReservedSectors) + int64(i)*int64(g.FATSectors)) * int64(g.BytesPerSector)
}

// validCluster reports whether c names a data cluster of the volume.
func (g Geometry) validCluster(c uint32) bool {
	return c >= 2 && c-2 < g.ClusterCount
}

// PlanGeometry picks the layout for a new volume of sizeBytes. Without
// WithClusterBytes it prefers 4 KiB clusters and falls back to smaller ones
// on volumes too small to have 65525 of them, and to larger ones on
// volumes too big.
func PlanGeometry(sizeBytes int64, o Options) (Geometry, error) {
	clusterBytes := o.clusterBytes
	if sizeBytes < MinSizeBytes {
		return Geometry{}, fmt.Errorf("fat: volume of %d bytes is too small for FAT32 (at least %d bytes, 65525 clusters)", sizeBytes, int64(MinSizeBytes))
	}
	if sizeBytes/sectorBytes > 0xFFFFFFFF {
		return Geometry{}, fmt.Errorf("fat: volume of %d bytes is larger than FAT32's %d", sizeBytes, int64(maxCapableBytes))
	}
	candidates := []int{defaultClusterB, 2048, 1024, 512, 8192, 16384, 32768}
	if clusterBytes != 0 {
		if clusterBytes < sectorBytes || clusterBytes > maxClusterBytes || clusterBytes&(clusterBytes-1) != 0 {
			return Geometry{}, fmt.Errorf("fat: cluster size %d bytes: want a power of two from %d to %d", clusterBytes, sectorBytes, maxClusterBytes)
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
		fat := uint32((uint64(total) - newReservedSectors + 2*uint64(spc) + entriesPerSector*uint64(spc) + newNumFATs - 1) / (entriesPerSector*uint64(spc) + newNumFATs))
		// Pad the reserved area so that clusters start on a cluster
		// boundary: flash media and the page cache like aligned clusters.
		rsvd := uint32(newReservedSectors)
		rsvd += (spc - (rsvd+newNumFATs*fat)%spc) % spc
		meta := uint64(rsvd) + newNumFATs*uint64(fat)
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
			return Geometry{}, fmt.Errorf("fat: internal error: FAT of %d sectors cannot map %d clusters", fat, count)
		}
		return Geometry{
			BytesPerSector: sectorBytes, SectorsPerCluster: spc, ReservedSectors: rsvd,
			NumFATs: newNumFATs, FATSectors: fat, TotalSectors: total, ClusterCount: uint32(count),
			RootCluster: newRootCluster, FSInfoSector: newFSInfoSector,
		}, nil
	}
	return Geometry{}, last
}

// ReservedArea returns the reserved sectors of a new volume: boot sector
// and FSInfo (with the count of free clusters and the next free one),
// their backups, and zeros everywhere else.
func (g Geometry) ReservedArea(o Options, free, nextFree uint32) []byte {
	area := make([]byte, int(g.ReservedSectors)*sectorBytes)
	boot := bootSector(g, o)
	if nextFree-2 >= g.ClusterCount {
		nextFree = fsInfoUnknown
	}
	info := fsInfo(free, nextFree)
	for _, base := range []int{0, backupBootSector} {
		copy(area[base*sectorBytes:], boot)
		copy(area[(base+newFSInfoSector)*sectorBytes:], info)
	}
	return area
}

// bootSector encodes the boot sector of a volume this package writes.
func bootSector(g Geometry, o Options) []byte {
	b := make([]byte, sectorBytes)
	copy(b[0:3], []byte{0xEB, 0x58, 0x90}) // jump over the BPB to offset 0x5A
	copy(b[3:11], oemName)
	le := binary.LittleEndian
	le.PutUint16(b[11:], uint16(g.BytesPerSector))
	b[13] = byte(g.SectorsPerCluster)
	le.PutUint16(b[14:], uint16(g.ReservedSectors))
	b[16] = byte(g.NumFATs)
	// RootEntCnt, TotSec16 and FATSz16 stay 0: that is what makes it FAT32.
	b[21] = MediaFixed
	le.PutUint16(b[24:], 63)  // sectors per track, conventional LBA geometry
	le.PutUint16(b[26:], 255) // heads
	le.PutUint32(b[28:], o.hidden)
	le.PutUint32(b[32:], g.TotalSectors)
	le.PutUint32(b[36:], g.FATSectors)
	// ExtFlags 0: FATs mirrored. FSVer 0.0.
	le.PutUint32(b[44:], g.RootCluster)
	le.PutUint16(b[48:], newFSInfoSector)
	le.PutUint16(b[50:], backupBootSector)
	b[64] = 0x80 // drive number: hard disk
	b[66] = extBootSig
	le.PutUint32(b[67:], o.volumeID)
	copy(b[71:82], o.Label[:])
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

// DateTime encodes t as a directory entry's date, time and hundredths of
// seconds (in tens of milliseconds), clamped to the range FAT can hold
// (1980-2107).
func DateTime(t time.Time) (date, tm uint16, tenths byte) {
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

// Option sets a property of a volume that PlanGeometry lays out and the
// writer (packer/fat) fills, or, for WithTime, of the entry that Rewrite
// replaces.
type Option func(*Options)

// Options are what the Options set, with defaults: see NewOptions.
type Options struct {
	// ModTime is the timestamp of every entry written.
	ModTime time.Time
	// Label is the volume label's 11-byte form, "NO NAME" when there is none.
	Label ShortName

	timeSet      bool
	label        string
	volumeID     uint32
	volumeIDSet  bool
	clusterBytes int
	hidden       uint32
}

// WithTime sets the timestamp of every directory entry (default
// 2020-01-01T00:00:00Z). Builds pass SOURCE_DATE_EPOCH here. For Rewrite it
// sets the new modification time; without it Rewrite keeps the old one.
func WithTime(t time.Time) Option {
	return func(o *Options) { o.ModTime, o.timeSet = t, true }
}

// WithVolumeLabel sets the volume label: up to 11 characters valid in 8.3
// names, or spaces. Lower-case letters are upper-cased, as DOS does.
func WithVolumeLabel(label string) Option {
	return func(o *Options) { o.label = label }
}

// WithVolumeID sets the 32-bit volume serial number (default: the
// timestamp's Unix seconds, so that it is deterministic).
func WithVolumeID(id uint32) Option {
	return func(o *Options) { o.volumeID, o.volumeIDSet = id, true }
}

// WithClusterBytes forces the cluster size (a power of two, 512 to 32768);
// by default PlanGeometry uses 4 KiB clusters where the volume is big enough.
func WithClusterBytes(n int) Option {
	return func(o *Options) { o.clusterBytes = n }
}

// WithHiddenSectors records the partition's first sector on its disk in the
// boot sector (BPB_HiddSec), as mkfs.fat does for partitions. Linux ignores
// it; some firmware reads it.
func WithHiddenSectors(lba uint32) Option {
	return func(o *Options) { o.hidden = lba }
}

// NewOptions applies opts to the defaults and checks the volume label.
func NewOptions(opts ...Option) (Options, error) {
	o := Options{ModTime: time.Unix(defaultEpoch, 0).UTC()}
	for _, opt := range opts {
		opt(&o)
	}
	if !o.volumeIDSet {
		o.volumeID = uint32(o.ModTime.Unix())
	}
	var err error
	o.Label, err = volumeLabel(o.label)
	return o, err
}

// HasLabel reports whether the volume has a label.
func (o Options) HasLabel() bool { return string(o.Label[:]) != noLabel }

// volumeLabel validates a label and returns its 11-byte form.
func volumeLabel(l string) (ShortName, error) {
	var out ShortName
	if l == "" {
		copy(out[:], noLabel)
		return out, nil
	}
	if len(l) > shortNameBytes {
		return out, fmt.Errorf("fat: volume label %q: longer than %d characters", l, shortNameBytes)
	}
	l = strings.ToUpper(l)
	for _, r := range l {
		if r != ' ' && (r <= 0x20 || r >= 0x7f || strings.ContainsRune(invalidLongChars+invalidShortChars+".", r)) {
			return out, fmt.Errorf("fat: volume label %q: character %q not allowed", l, r)
		}
	}
	copy(out[:], l+strings.Repeat(" ", shortNameBytes-len(l)))
	return out, nil
}
