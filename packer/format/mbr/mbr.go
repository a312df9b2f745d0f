// Package mbr writes and reads the classic MBR (DOS) partition table: the
// four-entry table in a disk's first sector. The Raspberry Pi boot ROM reads
// it to find the FAT boot partition, and package gpt uses it for the
// protective (and hybrid) MBR in front of a GUID partition table.
package mbr

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// SectorBytes is the logical sector size this package reads and writes.
const SectorBytes = 512

// Offsets inside sector 0.
const (
	diskIDOffset     = 440
	tableOffset      = 446
	entryBytes       = 16
	signatureOffset  = 510
	maxEntries       = 4
	bootableFlag     = 0x80
	maxCHSCylinder   = 1023
	chsHeads         = 255
	chsSectorsPerTrk = 63
)

// Type is an MBR partition type byte.
type Type byte

// Partition types this project writes.
const (
	TypeEmpty         Type = 0x00
	TypeFAT32CHS      Type = 0x0B
	TypeFAT32LBA      Type = 0x0C
	TypeLinux         Type = 0x83
	TypeGPTProtective Type = 0xEE
	TypeEFISystem     Type = 0xEF
)

// Partition is one entry of the table. An entry with Type TypeEmpty is unused.
type Partition struct {
	Type     Type
	Bootable bool
	FirstLBA uint32
	Sectors  uint32
}

// Table is a whole MBR partition table. Partitions[i] is partition number
// i+1, the number Linux gives the device node (sda1) and the PARTUUID suffix.
type Table struct {
	// DiskID is the 32-bit disk signature at offset 440.
	DiskID     uint32
	Partitions [maxEntries]Partition
}

// PartUUID returns the PARTUUID Linux reports for partition number n
// (1-based) of a disk with this table, as used in root=PARTUUID=... .
func (t Table) PartUUID(n int) string {
	return fmt.Sprintf("%08x-%02x", t.DiskID, n)
}

// Write writes the table as sector 0 of w. The boot code area is zero: the
// disks this project builds are booted by firmware that ignores it. Entries
// must lie inside the disk, after sector 0, and must not overlap.
func Write(w io.WriterAt, diskBytes int64, t Table) error {
	if diskBytes < SectorBytes || diskBytes%SectorBytes != 0 {
		return fmt.Errorf("mbr: disk size %d bytes is not a positive multiple of %d", diskBytes, SectorBytes)
	}
	if err := validate(t, uint64(diskBytes/SectorBytes)); err != nil {
		return err
	}
	if _, err := w.WriteAt(encode(t), 0); err != nil {
		return fmt.Errorf("mbr: writing sector 0: %w", err)
	}
	return nil
}

// encode returns sector 0 holding t, without validating it.
func encode(t Table) []byte {
	sector := make([]byte, SectorBytes)
	binary.LittleEndian.PutUint32(sector[diskIDOffset:], t.DiskID)
	for i, p := range t.Partitions {
		if p.Type == TypeEmpty {
			continue
		}
		e := sector[tableOffset+i*entryBytes:][:entryBytes]
		if p.Bootable {
			e[0] = bootableFlag
		}
		copy(e[1:4], chs(uint64(p.FirstLBA)))
		e[4] = byte(p.Type)
		copy(e[5:8], chs(uint64(p.FirstLBA)+uint64(p.Sectors)-1))
		binary.LittleEndian.PutUint32(e[8:], p.FirstLBA)
		binary.LittleEndian.PutUint32(e[12:], p.Sectors)
	}
	sector[signatureOffset] = 0x55
	sector[signatureOffset+1] = 0xAA
	return sector
}

// chs encodes lba as a cylinder/head/sector triple in the conventional
// 255-head, 63-sector geometry. Nobody boots by CHS any more, but tools
// compare it, and addresses past cylinder 1023 saturate as they expect.
func chs(lba uint64) []byte {
	c := lba / (chsHeads * chsSectorsPerTrk)
	h := (lba / chsSectorsPerTrk) % chsHeads
	s := lba%chsSectorsPerTrk + 1
	if c > maxCHSCylinder {
		c, h, s = maxCHSCylinder, chsHeads-1, chsSectorsPerTrk
	}
	return []byte{byte(h), byte(s) | byte(c>>8)<<6, byte(c)}
}

func validate(t Table, diskSectors uint64) error {
	for i, p := range t.Partitions {
		if p.Type == TypeEmpty {
			continue
		}
		end := uint64(p.FirstLBA) + uint64(p.Sectors)
		switch {
		case p.Sectors == 0:
			return fmt.Errorf("mbr: partition %d: zero sectors", i+1)
		case p.FirstLBA == 0:
			return fmt.Errorf("mbr: partition %d: starts at sector 0, which holds the table", i+1)
		case end > diskSectors:
			return fmt.Errorf("mbr: partition %d: sectors %d..%d past the end of the disk (%d sectors)", i+1, p.FirstLBA, end-1, diskSectors)
		}
		for j := 0; j < i; j++ {
			q := t.Partitions[j]
			if q.Type == TypeEmpty {
				continue
			}
			if uint64(p.FirstLBA) < uint64(q.FirstLBA)+uint64(q.Sectors) && uint64(q.FirstLBA) < end {
				return fmt.Errorf("mbr: partition %d overlaps partition %d", i+1, j+1)
			}
		}
	}
	return nil
}

// ErrNoTable means sector 0 lacks the 0x55AA signature.
var ErrNoTable = errors.New("mbr: no partition table (missing 0x55AA signature)")

// Read reads the table from sector 0 of r. It checks the signature and that
// no entry wraps past 2^32 sectors; bounds against the disk size are the
// caller's to check, since a protective MBR may legitimately claim more.
func Read(r io.ReaderAt) (Table, error) {
	sector := make([]byte, SectorBytes)
	if _, err := r.ReadAt(sector, 0); err != nil {
		return Table{}, fmt.Errorf("mbr: reading sector 0: %w", err)
	}
	return decode(sector)
}

// decode parses sector 0 (at least SectorBytes long).
func decode(sector []byte) (Table, error) {
	if len(sector) < SectorBytes {
		return Table{}, fmt.Errorf("mbr: sector 0 is %d bytes, want %d", len(sector), SectorBytes)
	}
	if sector[signatureOffset] != 0x55 || sector[signatureOffset+1] != 0xAA {
		return Table{}, ErrNoTable
	}
	var t Table
	t.DiskID = binary.LittleEndian.Uint32(sector[diskIDOffset:])
	for i := range t.Partitions {
		e := sector[tableOffset+i*entryBytes:][:entryBytes]
		p := Partition{
			Type:     Type(e[4]),
			Bootable: e[0]&bootableFlag != 0,
			FirstLBA: binary.LittleEndian.Uint32(e[8:]),
			Sectors:  binary.LittleEndian.Uint32(e[12:]),
		}
		if p.Type == TypeEmpty {
			continue
		}
		if uint64(p.FirstLBA)+uint64(p.Sectors) > 1<<32 {
			return Table{}, fmt.Errorf("mbr: partition %d: sectors %d+%d wrap past 2^32", i+1, p.FirstLBA, p.Sectors)
		}
		t.Partitions[i] = p
	}
	return t, nil
}
