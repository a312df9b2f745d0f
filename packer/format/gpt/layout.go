package gpt

import "fmt"

// AlignBytes is where Layout starts partitions: 1 MiB, the alignment every
// partitioning tool uses, which suits flash erase blocks and 4K sectors.
const AlignBytes = 1 << 20

const alignSectors = AlignBytes / SectorBytes

// backupSectors is what the backup GPT takes at the end of the disk.
const backupSectors = 1 + entryArraySector

// Extent is a run of sectors, LastLBA inclusive.
type Extent struct {
	FirstLBA, LastLBA uint64
}

// Layout places partitions of the given sizes one after another, each
// starting on a 1 MiB boundary, the first at 1 MiB. Sizes are rounded up to
// whole sectors. A size of 0 is allowed for the last partition only and
// makes it fill the rest of the disk.
func Layout(diskBytes int64, sizesBytes ...int64) ([]Extent, error) {
	if diskBytes%SectorBytes != 0 || diskBytes/SectorBytes < minDiskSectors {
		return nil, fmt.Errorf("gpt: layout: disk size %d bytes: want a multiple of %d and at least %d sectors", diskBytes, SectorBytes, minDiskSectors)
	}
	lastUsable := uint64(diskBytes/SectorBytes) - 1 - backupSectors
	next := uint64(alignSectors)
	out := make([]Extent, 0, len(sizesBytes))
	for i, size := range sizesBytes {
		if size < 0 || (size == 0 && i != len(sizesBytes)-1) {
			return nil, fmt.Errorf("gpt: layout: partition %d: size %d bytes (0 means \"the rest\" and only for the last)", i+1, size)
		}
		e := Extent{FirstLBA: next, LastLBA: lastUsable}
		if size > 0 {
			e.LastLBA = next + uint64((size+SectorBytes-1)/SectorBytes) - 1
		}
		if e.FirstLBA > lastUsable || e.LastLBA > lastUsable {
			return nil, fmt.Errorf("gpt: layout: partition %d (%d bytes) does not fit a disk of %d bytes; need %d", i+1, size, diskBytes, DiskBytes(sizesBytes...))
		}
		out = append(out, e)
		next = (e.LastLBA + alignSectors) / alignSectors * alignSectors
	}
	return out, nil
}

// DiskBytes returns the smallest disk, a whole number of MiB, that Layout can
// fit partitions of these sizes into (a 0 size counts as one sector).
func DiskBytes(sizesBytes ...int64) int64 {
	next := int64(alignSectors)
	for _, size := range sizesBytes {
		sectors := max((size+SectorBytes-1)/SectorBytes, 1)
		next = (next + alignSectors - 1) / alignSectors * alignSectors
		next += sectors
	}
	total := (next + backupSectors) * SectorBytes
	return (total + AlignBytes - 1) / AlignBytes * AlignBytes
}
