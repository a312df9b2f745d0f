// Package gpt writes and reads GUID partition tables (UEFI specification,
// chapter 5) on disks with 512-byte sectors: protective or hybrid MBR, the
// primary header and entry array at LBA 1-33, and the backup copy at the end
// of the disk. It also derives partition GUIDs deterministically from names.
//
// The reader is small and depends only on the standard library and package
// mbr because stage0 in the guest uses it to find the root partition.
package gpt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"unicode/utf16"

	"github.com/ingotdev/ingot/packer/format/mbr"
)

// SectorBytes is the logical sector size this package supports.
const SectorBytes = 512

const (
	signature        = "EFI PART"
	revision1        = 0x00010000
	headerBytes      = 92
	entryBytes       = 128
	entryCount       = 128
	entryArrayBytes  = entryBytes * entryCount
	entryArraySector = entryArrayBytes / SectorBytes
	// maxNameUnits is the UTF-16 code units that fit the 72-byte name field.
	maxNameUnits = 36
	// maxReadArrayBytes bounds the entry array a reader will load, so a
	// corrupt header cannot make it allocate gigabytes.
	maxReadArrayBytes = 1 << 20
	primaryHeaderLBA  = 1
	primaryEntriesLBA = 2
	firstUsableLBA    = primaryEntriesLBA + entryArraySector // 34
	// minDiskSectors: MBR, two headers, two entry arrays and one usable sector.
	minDiskSectors = 1 + 2*(1+entryArraySector) + 1
)

// Attributes are the 64 partition attribute bits.
type Attributes uint64

// Attribute bits defined by the UEFI specification; bits 48-63 belong to the
// partition type.
const (
	AttrRequired           Attributes = 1 << 0
	AttrNoBlockIOProtocol  Attributes = 1 << 1
	AttrLegacyBIOSBootable Attributes = 1 << 2
)

// Partition is one used entry of the partition array.
type Partition struct {
	// Number is the 1-based entry index, the number Linux gives the device
	// node (vda2). Read sets it. Write puts the partition at entry Number
	// when it is non-zero and at its position in Table.Partitions otherwise.
	Number int
	// Name is at most 36 UTF-16 code units.
	Name       string
	Type       GUID
	GUID       GUID
	FirstLBA   uint64
	LastLBA    uint64 // inclusive
	Attributes Attributes
}

// SizeBytes returns the partition's size.
func (p Partition) SizeBytes() int64 {
	return int64(p.LastLBA-p.FirstLBA+1) * SectorBytes
}

// OffsetBytes returns the byte offset of the partition's first sector.
func (p Partition) OffsetBytes() int64 {
	return int64(p.FirstLBA) * SectorBytes
}

// Table is a disk's partition table.
type Table struct {
	DiskGUID   GUID
	Partitions []Partition
}

// Find returns the partition whose unique GUID is g.
func (t Table) Find(g GUID) (Partition, bool) {
	for _, p := range t.Partitions {
		if p.GUID == g {
			return p, true
		}
	}
	return Partition{}, false
}

// Hybrid asks for a partition to be mirrored into the MBR, for firmware that
// reads only MBRs (the Raspberry Pi boot ROM).
type Hybrid struct {
	// Number is the partition's 1-based number (entry index + 1).
	Number   int
	Type     mbr.Type
	Bootable bool
}

// Option changes how Write lays out the disk.
type Option func(*options)

type options struct {
	hybrid []Hybrid
}

// WithHybridMBR writes a hybrid MBR instead of a protective one: MBR entries
// 1..len(h) mirror the given GPT partitions with the given MBR types, and the
// next entry is the 0xEE protective partition covering the GPT structures in
// front of the first mirrored partition. At most three partitions.
func WithHybridMBR(h ...Hybrid) Option {
	return func(o *options) { o.hybrid = append(o.hybrid, h...) }
}

// Write writes the protective (or hybrid) MBR, the primary and the backup
// GPT of a disk of diskBytes bytes to w. It writes only those sectors;
// partition contents are the caller's.
func Write(w io.WriterAt, diskBytes int64, t Table, opts ...Option) error {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if diskBytes%SectorBytes != 0 || diskBytes/SectorBytes < minDiskSectors {
		return fmt.Errorf("gpt: disk size %d bytes: want a multiple of %d and at least %d sectors", diskBytes, SectorBytes, minDiskSectors)
	}
	sectors := uint64(diskBytes / SectorBytes)
	lastUsable := sectors - 2 - entryArraySector
	if t.DiskGUID.IsZero() {
		return errors.New("gpt: disk GUID is zero")
	}
	entries, placed, err := encodeEntries(t.Partitions, lastUsable)
	if err != nil {
		return err
	}
	pmbr, err := protectiveMBR(placed, sectors, o.hybrid)
	if err != nil {
		return err
	}
	if err := mbr.Write(w, diskBytes, pmbr); err != nil {
		return fmt.Errorf("gpt: %w", err)
	}
	entriesCRC := crc32.ChecksumIEEE(entries)
	h := header{
		myLBA: primaryHeaderLBA, alternateLBA: sectors - 1,
		firstUsable: firstUsableLBA, lastUsable: lastUsable,
		diskGUID: t.DiskGUID, entriesLBA: primaryEntriesLBA,
		entryCount: entryCount, entrySize: entryBytes, entriesCRC: entriesCRC,
	}
	backup := h
	backup.myLBA, backup.alternateLBA = sectors-1, primaryHeaderLBA
	backup.entriesLBA = sectors - 1 - entryArraySector
	writes := []struct {
		what string
		lba  uint64
		b    []byte
	}{
		{"primary entries", h.entriesLBA, entries},
		{"primary header", h.myLBA, h.encode()},
		{"backup entries", backup.entriesLBA, entries},
		{"backup header", backup.myLBA, backup.encode()},
	}
	for _, wr := range writes {
		if _, err := w.WriteAt(wr.b, int64(wr.lba)*SectorBytes); err != nil {
			return fmt.Errorf("gpt: writing %s at LBA %d: %w", wr.what, wr.lba, err)
		}
	}
	return nil
}

// encodeEntries validates the partitions and returns the entry array and the
// partitions by entry index.
func encodeEntries(parts []Partition, lastUsable uint64) ([]byte, []Partition, error) {
	if len(parts) > entryCount {
		return nil, nil, fmt.Errorf("gpt: %d partitions, at most %d", len(parts), entryCount)
	}
	placed := make([]Partition, entryCount)
	used := make([]bool, entryCount)
	array := make([]byte, entryArrayBytes)
	for i, p := range parts {
		idx := i
		if p.Number != 0 {
			idx = p.Number - 1
		}
		where := fmt.Sprintf("partition %d (%q)", idx+1, p.Name)
		switch {
		case idx < 0 || idx >= entryCount:
			return nil, nil, fmt.Errorf("gpt: partition %q: number %d out of range 1..%d", p.Name, p.Number, entryCount)
		case used[idx]:
			return nil, nil, fmt.Errorf("gpt: %s: entry used twice", where)
		case p.Type.IsZero():
			return nil, nil, fmt.Errorf("gpt: %s: type GUID is zero", where)
		case p.GUID.IsZero():
			return nil, nil, fmt.Errorf("gpt: %s: partition GUID is zero", where)
		case p.FirstLBA < firstUsableLBA || p.LastLBA > lastUsable || p.FirstLBA > p.LastLBA:
			return nil, nil, fmt.Errorf("gpt: %s: LBA %d..%d outside usable %d..%d", where, p.FirstLBA, p.LastLBA, uint64(firstUsableLBA), lastUsable)
		}
		name := utf16.Encode([]rune(p.Name))
		if len(name) > maxNameUnits {
			return nil, nil, fmt.Errorf("gpt: %s: name is %d UTF-16 units, at most %d", where, len(name), maxNameUnits)
		}
		for j, q := range placed {
			if !used[j] {
				continue
			}
			if q.GUID == p.GUID {
				return nil, nil, fmt.Errorf("gpt: %s: GUID %s also used by partition %d", where, p.GUID, j+1)
			}
			if p.FirstLBA <= q.LastLBA && q.FirstLBA <= p.LastLBA {
				return nil, nil, fmt.Errorf("gpt: %s: LBA %d..%d overlaps partition %d", where, p.FirstLBA, p.LastLBA, j+1)
			}
		}
		used[idx] = true
		p.Number = idx + 1
		placed[idx] = p
		e := array[idx*entryBytes:][:entryBytes]
		p.Type.encode(e[0:16])
		p.GUID.encode(e[16:32])
		binary.LittleEndian.PutUint64(e[32:], p.FirstLBA)
		binary.LittleEndian.PutUint64(e[40:], p.LastLBA)
		binary.LittleEndian.PutUint64(e[48:], uint64(p.Attributes))
		for k, u := range name {
			binary.LittleEndian.PutUint16(e[56+2*k:], u)
		}
	}
	return array, placed, nil
}

// protectiveMBR builds the MBR in front of the GPT. Without hybrid entries it
// is the UEFI protective MBR: one 0xEE partition from LBA 1 to the end of the
// disk (capped at 2^32-1 sectors).
func protectiveMBR(placed []Partition, sectors uint64, hybrid []Hybrid) (mbr.Table, error) {
	var t mbr.Table
	if len(hybrid) == 0 {
		t.Partitions[0] = mbr.Partition{Type: mbr.TypeGPTProtective, FirstLBA: primaryHeaderLBA, Sectors: uint32(min(sectors-1, 0xFFFFFFFF))}
		return t, nil
	}
	if len(hybrid) > 3 {
		return t, fmt.Errorf("gpt: hybrid MBR: %d partitions, at most 3", len(hybrid))
	}
	firstStart := uint64(1<<64 - 1)
	for i, h := range hybrid {
		var p Partition
		for _, q := range placed {
			if h.Number > 0 && q.Number == h.Number {
				p = q
			}
		}
		if p.Number == 0 {
			return t, fmt.Errorf("gpt: hybrid MBR entry %d: no partition number %d", i+1, h.Number)
		}
		if h.Type == mbr.TypeEmpty || h.Type == mbr.TypeGPTProtective {
			return t, fmt.Errorf("gpt: hybrid MBR entry %d: type %#02x cannot mirror a partition", i+1, byte(h.Type))
		}
		if p.LastLBA >= 1<<32 {
			return t, fmt.Errorf("gpt: hybrid MBR entry %d: partition %d ends at LBA %d, past what an MBR can address", i+1, p.Number, p.LastLBA)
		}
		t.Partitions[i] = mbr.Partition{Type: h.Type, Bootable: h.Bootable, FirstLBA: uint32(p.FirstLBA), Sectors: uint32(p.LastLBA - p.FirstLBA + 1)}
		firstStart = min(firstStart, p.FirstLBA)
	}
	t.Partitions[len(hybrid)] = mbr.Partition{Type: mbr.TypeGPTProtective, FirstLBA: primaryHeaderLBA, Sectors: uint32(firstStart - primaryHeaderLBA)}
	return t, nil
}

// header is the part of a GPT header this package reads and writes.
type header struct {
	myLBA, alternateLBA     uint64
	firstUsable, lastUsable uint64
	diskGUID                GUID
	entriesLBA              uint64
	entryCount, entrySize   uint32
	entriesCRC              uint32
}

func (h header) encode() []byte {
	b := make([]byte, SectorBytes)
	copy(b, signature)
	binary.LittleEndian.PutUint32(b[8:], revision1)
	binary.LittleEndian.PutUint32(b[12:], headerBytes)
	binary.LittleEndian.PutUint64(b[24:], h.myLBA)
	binary.LittleEndian.PutUint64(b[32:], h.alternateLBA)
	binary.LittleEndian.PutUint64(b[40:], h.firstUsable)
	binary.LittleEndian.PutUint64(b[48:], h.lastUsable)
	h.diskGUID.encode(b[56:72])
	binary.LittleEndian.PutUint64(b[72:], h.entriesLBA)
	binary.LittleEndian.PutUint32(b[80:], h.entryCount)
	binary.LittleEndian.PutUint32(b[84:], h.entrySize)
	binary.LittleEndian.PutUint32(b[88:], h.entriesCRC)
	binary.LittleEndian.PutUint32(b[16:], crc32.ChecksumIEEE(b[:headerBytes]))
	return b
}

// Read reads the partition table of a disk of diskBytes bytes. It uses the
// primary GPT when its header and entry array pass every check (signature,
// revision, CRCs, LBAs inside the disk, entries inside the usable range) and
// falls back to the backup GPT in the disk's last sector otherwise. The
// protective MBR is not consulted. Partitions come in entry order; unused
// entries are left out.
func Read(r io.ReaderAt, diskBytes int64) (Table, error) {
	if diskBytes%SectorBytes != 0 || diskBytes/SectorBytes < minDiskSectors {
		return Table{}, fmt.Errorf("gpt: disk size %d bytes: want a multiple of %d and at least %d sectors", diskBytes, SectorBytes, minDiskSectors)
	}
	sectors := uint64(diskBytes / SectorBytes)
	t, perr := readAt(r, sectors, primaryHeaderLBA)
	if perr == nil {
		return t, nil
	}
	t, berr := readAt(r, sectors, sectors-1)
	if berr == nil {
		return t, nil
	}
	return Table{}, fmt.Errorf("gpt: primary: %w; backup: %w", perr, berr)
}

func readAt(r io.ReaderAt, sectors, lba uint64) (Table, error) {
	b := make([]byte, SectorBytes)
	if _, err := r.ReadAt(b, int64(lba)*SectorBytes); err != nil {
		return Table{}, fmt.Errorf("header at LBA %d: %w", lba, err)
	}
	h, err := decodeHeader(b, sectors, lba)
	if err != nil {
		return Table{}, fmt.Errorf("header at LBA %d: %w", lba, err)
	}
	array := make([]byte, int(h.entryCount)*int(h.entrySize))
	if _, err := r.ReadAt(array, int64(h.entriesLBA)*SectorBytes); err != nil {
		return Table{}, fmt.Errorf("entries at LBA %d: %w", h.entriesLBA, err)
	}
	if got := crc32.ChecksumIEEE(array); got != h.entriesCRC {
		return Table{}, fmt.Errorf("entries at LBA %d: CRC32 %#08x, header says %#08x", h.entriesLBA, got, h.entriesCRC)
	}
	t := Table{DiskGUID: h.diskGUID}
	for i := 0; i < int(h.entryCount); i++ {
		e := array[i*int(h.entrySize):][:entryBytes]
		p := Partition{
			Number:     i + 1,
			Type:       decodeGUID(e[0:16]),
			GUID:       decodeGUID(e[16:32]),
			FirstLBA:   binary.LittleEndian.Uint64(e[32:]),
			LastLBA:    binary.LittleEndian.Uint64(e[40:]),
			Attributes: Attributes(binary.LittleEndian.Uint64(e[48:])),
			Name:       decodeName(e[56:128]),
		}
		if p.Type.IsZero() {
			continue
		}
		if p.FirstLBA < h.firstUsable || p.LastLBA > h.lastUsable || p.FirstLBA > p.LastLBA {
			return Table{}, fmt.Errorf("entry %d: LBA %d..%d outside usable %d..%d", i+1, p.FirstLBA, p.LastLBA, h.firstUsable, h.lastUsable)
		}
		t.Partitions = append(t.Partitions, p)
	}
	return t, nil
}

func decodeHeader(b []byte, sectors, lba uint64) (header, error) {
	if !bytes.Equal(b[:8], []byte(signature)) {
		return header{}, errors.New("no \"EFI PART\" signature")
	}
	if rev := binary.LittleEndian.Uint32(b[8:]); rev>>16 != 1 {
		return header{}, fmt.Errorf("revision %#08x, want 1.x", rev)
	}
	size := binary.LittleEndian.Uint32(b[12:])
	if size < headerBytes || size > SectorBytes {
		return header{}, fmt.Errorf("header size %d, want %d..%d", size, headerBytes, SectorBytes)
	}
	want := binary.LittleEndian.Uint32(b[16:])
	c := make([]byte, size)
	copy(c, b[:size])
	binary.LittleEndian.PutUint32(c[16:], 0)
	if got := crc32.ChecksumIEEE(c); got != want {
		return header{}, fmt.Errorf("header CRC32 %#08x, header says %#08x", got, want)
	}
	h := header{
		myLBA:        binary.LittleEndian.Uint64(b[24:]),
		alternateLBA: binary.LittleEndian.Uint64(b[32:]),
		firstUsable:  binary.LittleEndian.Uint64(b[40:]),
		lastUsable:   binary.LittleEndian.Uint64(b[48:]),
		diskGUID:     decodeGUID(b[56:72]),
		entriesLBA:   binary.LittleEndian.Uint64(b[72:]),
		entryCount:   binary.LittleEndian.Uint32(b[80:]),
		entrySize:    binary.LittleEndian.Uint32(b[84:]),
		entriesCRC:   binary.LittleEndian.Uint32(b[88:]),
	}
	if h.myLBA != lba {
		return header{}, fmt.Errorf("header says it is at LBA %d", h.myLBA)
	}
	if h.entrySize < entryBytes || h.entrySize&(h.entrySize-1) != 0 {
		return header{}, fmt.Errorf("entry size %d, want 128 times a power of 2", h.entrySize)
	}
	arrayBytes := uint64(h.entryCount) * uint64(h.entrySize)
	if arrayBytes > maxReadArrayBytes {
		return header{}, fmt.Errorf("entry array of %d bytes, at most %d", arrayBytes, maxReadArrayBytes)
	}
	arraySectors := (arrayBytes + SectorBytes - 1) / SectorBytes
	switch {
	case h.firstUsable > h.lastUsable || h.lastUsable >= sectors-1 || h.firstUsable < 2:
		return header{}, fmt.Errorf("usable LBA %d..%d does not fit a disk of %d sectors", h.firstUsable, h.lastUsable, sectors)
	case h.entriesLBA < 1 || h.entriesLBA >= sectors || arraySectors > sectors-h.entriesLBA:
		return header{}, fmt.Errorf("entry array at LBA %d (%d sectors) does not fit a disk of %d sectors", h.entriesLBA, arraySectors, sectors)
	case h.entriesLBA+arraySectors > h.firstUsable && h.entriesLBA <= h.lastUsable:
		return header{}, fmt.Errorf("entry array at LBA %d (%d sectors) overlaps usable LBA %d..%d", h.entriesLBA, arraySectors, h.firstUsable, h.lastUsable)
	case h.entriesLBA <= h.myLBA && h.myLBA < h.entriesLBA+arraySectors:
		return header{}, fmt.Errorf("entry array at LBA %d (%d sectors) covers the header", h.entriesLBA, arraySectors)
	case h.myLBA >= h.firstUsable && h.myLBA <= h.lastUsable:
		return header{}, fmt.Errorf("header at LBA %d inside usable LBA %d..%d", h.myLBA, h.firstUsable, h.lastUsable)
	}
	return h, nil
}

// decodeName decodes a NUL-terminated UTF-16LE name.
func decodeName(b []byte) string {
	units := make([]uint16, 0, maxNameUnits)
	for i := 0; i+1 < len(b); i += 2 {
		u := binary.LittleEndian.Uint16(b[i:])
		if u == 0 {
			break
		}
		units = append(units, u)
	}
	return string(utf16.Decode(units))
}
