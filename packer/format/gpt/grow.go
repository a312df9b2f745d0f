package gpt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Device is a disk that Grow rewrites in place: it reads, writes and
// flushes to stable storage.
type Device interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// ErrNotLast is wrapped by Grow's error when another partition lies after
// the one to grow.
var ErrNotLast = errors.New("not the last partition")

// Grow makes partition number end where the disk now ends, for a disk of
// diskBytes that is larger than when its table was written (a cloud disk
// or a `qemu-img resize`d image). It reports the partition as it is
// afterwards and whether it changed anything: a table whose backup header
// is already in the disk's last sector is left alone.
//
// The order of the writes keeps a valid table on the disk whatever write
// a power cut interrupts, and the primary table valid at every point, as
// Linux reads only the primary unless booted with "gpt":
//
//  1. the backup entry array and header, at the new end of the disk (the
//     old primary still points at the old backup, which stays intact);
//  2. the new primary entry array, into the other of two places: LBA 2,
//     or right after the array now in use (first usable LBA moves there,
//     in front of the first partition), so the array in use is never
//     overwritten;
//  3. the primary header, one sector, which switches to the new array and
//     the new end at once.
//
// Each step is flushed before the next. A cut before 3 leaves the old
// table, and Grow does it all again at the next boot; after 3 the new one.
// Last, a protective MBR's 0xEE entry is widened to the new size (one
// sector; readers ignore a short one). The partition's contents are the
// caller's to grow.
func Grow(d Device, diskBytes int64, number int) (Partition, bool, error) {
	if diskBytes%SectorBytes != 0 || diskBytes/SectorBytes < minDiskSectors {
		return Partition{}, false, fmt.Errorf("gpt: disk size %d bytes: want a multiple of %d and at least %d sectors", diskBytes, SectorBytes, minDiskSectors)
	}
	sectors := uint64(diskBytes / SectorBytes)
	hb := make([]byte, SectorBytes)
	if _, err := d.ReadAt(hb, primaryHeaderLBA*SectorBytes); err != nil {
		return Partition{}, false, fmt.Errorf("gpt: primary header: %w", err)
	}
	h, err := decodeHeader(hb, sectors, primaryHeaderLBA)
	if err != nil {
		return Partition{}, false, fmt.Errorf("gpt: primary header: %w", err)
	}
	array := make([]byte, int(h.entryCount)*int(h.entrySize))
	if _, err := d.ReadAt(array, int64(h.entriesLBA)*SectorBytes); err != nil {
		return Partition{}, false, fmt.Errorf("gpt: primary entries at LBA %d: %w", h.entriesLBA, err)
	}
	if got := crc32.ChecksumIEEE(array); got != h.entriesCRC {
		return Partition{}, false, fmt.Errorf("gpt: primary entries at LBA %d: CRC32 %#08x, header says %#08x", h.entriesLBA, got, h.entriesCRC)
	}
	if number < 1 || number > int(h.entryCount) {
		return Partition{}, false, fmt.Errorf("gpt: partition %d: out of range 1..%d", number, h.entryCount)
	}
	entry := func(i int) []byte { return array[i*int(h.entrySize):][:entryBytes] }
	e := entry(number - 1)
	if decodeGUID(e[0:16]).IsZero() {
		return Partition{}, false, fmt.Errorf("gpt: partition %d: unused entry", number)
	}
	p := Partition{
		Number: number, Type: decodeGUID(e[0:16]), GUID: decodeGUID(e[16:32]),
		FirstLBA: binary.LittleEndian.Uint64(e[32:]), LastLBA: binary.LittleEndian.Uint64(e[40:]),
		Attributes: Attributes(binary.LittleEndian.Uint64(e[48:])), Name: decodeName(e[56:128]),
	}
	switch {
	case h.alternateLBA == sectors-1:
		return p, false, nil // the table already spans the disk
	case h.alternateLBA > sectors-1:
		return p, false, fmt.Errorf("gpt: the table's backup header is at LBA %d, past the disk's end (%d sectors): the disk shrank", h.alternateLBA, sectors)
	}
	arraySectors := (uint64(len(array)) + SectorBytes - 1) / SectorBytes
	lastUsable := sectors - 2 - arraySectors
	newEntriesLBA := uint64(primaryEntriesLBA)
	if h.entriesLBA == primaryEntriesLBA {
		newEntriesLBA = primaryEntriesLBA + arraySectors
	}
	firstUsable := max(h.firstUsable, newEntriesLBA+arraySectors)
	for i := 0; i < int(h.entryCount); i++ {
		q := entry(i)
		if decodeGUID(q[0:16]).IsZero() {
			continue
		}
		first := binary.LittleEndian.Uint64(q[32:])
		if i != number-1 && first > p.FirstLBA {
			return p, false, fmt.Errorf("gpt: partition %d (%q): %w: partition %d starts at LBA %d, after it", number, p.Name, ErrNotLast, i+1, first)
		}
		if first < firstUsable {
			return p, false, fmt.Errorf("gpt: partition %d starts at LBA %d: no room for a second entry array before it (LBA %d..%d)", i+1, first, newEntriesLBA, firstUsable-1)
		}
	}
	if lastUsable <= p.LastLBA {
		return p, false, nil // grown by less than the backup table needs
	}
	p.LastLBA = lastUsable
	binary.LittleEndian.PutUint64(e[40:], p.LastLBA)
	nh := h
	nh.firstUsable, nh.lastUsable = firstUsable, lastUsable
	nh.entriesCRC = crc32.ChecksumIEEE(array)
	backup := nh
	backup.myLBA, backup.alternateLBA = sectors-1, primaryHeaderLBA
	backup.entriesLBA = sectors - 1 - arraySectors
	primary := nh
	primary.myLBA, primary.alternateLBA = primaryHeaderLBA, sectors-1
	primary.entriesLBA = newEntriesLBA
	steps := []struct {
		what string
		lba  uint64
		b    []byte
		sync bool
	}{
		{"backup entries", backup.entriesLBA, array, false},
		{"backup header", backup.myLBA, backup.encode(), true},
		{"primary entries", primary.entriesLBA, array, true},
		{"primary header", primary.myLBA, primary.encode(), true},
	}
	for _, s := range steps {
		if _, err := d.WriteAt(s.b, int64(s.lba)*SectorBytes); err != nil {
			return p, false, fmt.Errorf("gpt: writing %s at LBA %d: %w", s.what, s.lba, err)
		}
		if s.sync {
			if err := d.Sync(); err != nil {
				return p, false, fmt.Errorf("gpt: flushing %s: %w", s.what, err)
			}
		}
	}
	if err := widenProtectiveMBR(d, sectors); err != nil {
		return p, true, err
	}
	return p, true, nil
}

// widenProtectiveMBR sets the size of a protective MBR's one 0xEE entry
// (from LBA 1) to the disk's, capped at 2^32-1 sectors. Hybrid MBRs (more
// than one entry) cover only the GPT's own sectors and are left alone.
func widenProtectiveMBR(d Device, sectors uint64) error {
	const (
		table     = 446
		entrySize = 16
	)
	b := make([]byte, SectorBytes)
	if _, err := d.ReadAt(b, 0); err != nil {
		return fmt.Errorf("gpt: protective MBR: %w", err)
	}
	if b[510] != 0x55 || b[511] != 0xAA || b[table+4] != 0xEE || binary.LittleEndian.Uint32(b[table+8:]) != primaryHeaderLBA {
		return nil
	}
	for i := 1; i < 4; i++ {
		if b[table+i*entrySize+4] != 0 {
			return nil
		}
	}
	size := uint32(min(sectors-1, 0xFFFFFFFF))
	if binary.LittleEndian.Uint32(b[table+12:]) == size {
		return nil
	}
	binary.LittleEndian.PutUint32(b[table+12:], size)
	if _, err := d.WriteAt(b, 0); err != nil {
		return fmt.Errorf("gpt: protective MBR: %w", err)
	}
	if err := d.Sync(); err != nil {
		return fmt.Errorf("gpt: protective MBR: %w", err)
	}
	return nil
}
