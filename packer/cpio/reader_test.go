package cpio

import (
	"bytes"
	"fmt"
	"strconv"
)

// rawEntry is one entry as a minimal newc reader sees it; the tests use it
// to check the writer's bytes independently of GNU cpio.
type rawEntry struct {
	Name                     string
	Ino, Mode, UID, GID      uint32
	NLink, MTime, Size       uint32
	DevMajor, DevMinor       uint32
	RDevMajor, RDevMinor     uint32
	Check                    uint32
	Data                     string
	HeaderOffset, DataOffset int
}

// readArchive parses a whole newc archive up to and including the trailer,
// insisting on 4-byte alignment of names and data.
func readArchive(b []byte) ([]rawEntry, error) {
	var out []rawEntry
	off := 0
	for {
		if off%4 != 0 {
			return nil, fmt.Errorf("offset %d: header not aligned", off)
		}
		if len(b)-off < 110 {
			return nil, fmt.Errorf("offset %d: short header", off)
		}
		h := b[off : off+110]
		if string(h[:6]) != "070701" {
			return nil, fmt.Errorf("offset %d: magic %q", off, h[:6])
		}
		var f [13]uint32
		for i := range f {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				return nil, fmt.Errorf("offset %d: field %d: %v", off, i, err)
			}
			f[i] = uint32(v)
		}
		e := rawEntry{Ino: f[0], Mode: f[1], UID: f[2], GID: f[3], NLink: f[4], MTime: f[5], Size: f[6],
			DevMajor: f[7], DevMinor: f[8], RDevMajor: f[9], RDevMinor: f[10], Check: f[12], HeaderOffset: off}
		nameSize := int(f[11])
		nameStart := off + 110
		if nameSize < 1 || nameStart+nameSize > len(b) {
			return nil, fmt.Errorf("offset %d: name size %d", off, nameSize)
		}
		name := b[nameStart : nameStart+nameSize]
		if name[nameSize-1] != 0 || bytes.IndexByte(name[:nameSize-1], 0) >= 0 {
			return nil, fmt.Errorf("offset %d: name %q not NUL-terminated", off, name)
		}
		e.Name = string(name[:nameSize-1])
		dataStart := (nameStart + nameSize + 3) &^ 3
		for _, z := range b[nameStart+nameSize : min(dataStart, len(b))] {
			if z != 0 {
				return nil, fmt.Errorf("offset %d: non-zero name padding", off)
			}
		}
		end := dataStart + int(e.Size)
		if end > len(b) {
			return nil, fmt.Errorf("entry %q: data runs past the end", e.Name)
		}
		e.DataOffset = dataStart
		e.Data = string(b[dataStart:end])
		out = append(out, e)
		if e.Name == TrailerName {
			if end != len(b) {
				return nil, fmt.Errorf("%d bytes after the trailer", len(b)-end)
			}
			return out, nil
		}
		off = (end + 3) &^ 3
	}
}
