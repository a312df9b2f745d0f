package vdisk

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strings"
)

// Stream-optimized VMDK (VMware's "Virtual Disk Format 1.1", the
// monolithic sparse extent with compressed grains and markers), written
// front to back in one pass:
//
//	sector 0        sparse extent header, grain directory "at end"
//	sectors 1..20   the embedded descriptor (text, zero-padded)
//	from sector 128 for each non-zero 64 KiB grain: a grain marker (the
//	                grain's LBA and the compressed length) and the grain
//	                deflated in zlib format, padded to a sector
//	                for each 32 MiB range with data: a grain-table marker
//	                and the grain table (512 entries: the sector of each
//	                grain's marker, 0 for a zero grain)
//	                a grain-directory marker and the grain directory (the
//	                sector of each grain table, 0 for none)
//	                a footer marker and the footer (the header, now with
//	                the grain directory's sector)
//	                the end-of-stream marker (a zero sector)
const (
	vmdkMagic           = 0x564d444b // "KDMV" in the file
	vmdkVersion         = 3
	vmdkFlagNewline     = 1 << 0  // the four line-end check bytes are valid
	vmdkFlagCompressed  = 1 << 16 // grains are compressed
	vmdkFlagMarkers     = 1 << 17 // the stream has markers
	vmdkGrainSectors    = blockBytes / 512
	vmdkGTEntries       = 512
	vmdkGTSectors       = vmdkGTEntries * 4 / 512
	vmdkDescOffset      = 1
	vmdkDescSectors     = 20
	vmdkOverheadSectors = vmdkGrainSectors // the first grain starts grain-aligned
	vmdkGDAtEnd         = 0xFFFFFFFFFFFFFFFF
	vmdkCompressDeflate = 1
	// Marker types.
	vmdkMarkerEOS    = 0
	vmdkMarkerGT     = 1
	vmdkMarkerGD     = 2
	vmdkMarkerFooter = 3
)

func writeVMDK(ctx context.Context, out *os.File, m *image, fileName string) error {
	if m.size%blockBytes != 0 {
		// Capacity is whole grains; ingot's images are whole MiB.
		return fmt.Errorf("size %d bytes is not a whole number of %d-byte grains", m.size, blockBytes)
	}
	s, err := m.scan(ctx)
	if err != nil {
		return err
	}
	capacity := uint64(m.size / 512)
	grains := m.size / blockBytes
	numGTs := (grains + vmdkGTEntries - 1) / vmdkGTEntries
	if numGTs*4 > 1<<32 || capacity/vmdkGrainSectors >= 1<<32 {
		return fmt.Errorf("%w: %d bytes", errSize, m.size)
	}
	cid := binary.BigEndian.Uint32(s.digest[:4])

	bw := bufio.NewWriterSize(out, 1<<20)
	w := &sectorWriter{w: bw}
	w.write(vmdkHeader(capacity, vmdkGDAtEnd))
	desc := vmdkDescriptor(cid, capacity, fileName)
	if len(desc) > vmdkDescSectors*512 {
		return fmt.Errorf("descriptor of %d bytes does not fit %d sectors", len(desc), vmdkDescSectors)
	}
	w.write([]byte(desc))
	w.padTo(vmdkOverheadSectors * 512)

	// Grains; gt holds, per grain table, the marker sector of each grain.
	gts := map[int64][]uint32{}
	raw := make([]byte, blockBytes)
	var z bytes.Buffer
	for _, g := range s.data {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := m.readBlock(g, raw); err != nil {
			return err
		}
		z.Reset()
		zw := zlib.NewWriter(&z)
		_, err := zw.Write(raw)
		if cerr := zw.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("compressing grain %d: %w", g, err)
		}
		t := gts[g/vmdkGTEntries]
		if t == nil {
			t = make([]uint32, vmdkGTEntries)
			gts[g/vmdkGTEntries] = t
		}
		if w.n/512 >= 1<<32 {
			return fmt.Errorf("%w: the stream passes 2 TiB, past what a grain table entry addresses", errSize)
		}
		t[g%vmdkGTEntries] = uint32(w.n / 512)
		var mk [12]byte
		binary.LittleEndian.PutUint64(mk[0:], uint64(g*vmdkGrainSectors))
		binary.LittleEndian.PutUint32(mk[8:], uint32(z.Len()))
		w.write(mk[:])
		w.write(z.Bytes())
		w.padSector()
	}

	gd := make([]uint32, numGTs)
	for i := range numGTs {
		t := gts[i]
		if t == nil {
			continue
		}
		w.write(vmdkMarker(vmdkGTSectors, vmdkMarkerGT))
		gd[i] = uint32(w.n / 512)
		w.write(le32s(t))
		w.padSector()
	}
	gdSectors := (numGTs*4 + 511) / 512
	w.write(vmdkMarker(uint64(gdSectors), vmdkMarkerGD))
	gdOffset := uint64(w.n / 512)
	w.write(le32s(gd))
	w.padSector()
	w.write(vmdkMarker(1, vmdkMarkerFooter))
	w.write(vmdkHeader(capacity, gdOffset))
	w.write(make([]byte, 512)) // end of stream
	if w.err != nil {
		return w.err
	}
	return bw.Flush()
}

// vmdkHeader encodes the sparse extent header (and the footer, its copy
// with the grain directory's sector).
func vmdkHeader(capacity, gdOffset uint64) []byte {
	b := make([]byte, 512)
	le := binary.LittleEndian
	le.PutUint32(b[0:], vmdkMagic)
	le.PutUint32(b[4:], vmdkVersion)
	le.PutUint32(b[8:], vmdkFlagNewline|vmdkFlagCompressed|vmdkFlagMarkers)
	le.PutUint64(b[12:], capacity)
	le.PutUint64(b[20:], vmdkGrainSectors)
	le.PutUint64(b[28:], vmdkDescOffset)
	le.PutUint64(b[36:], vmdkDescSectors)
	le.PutUint32(b[44:], vmdkGTEntries)
	le.PutUint64(b[48:], 0) // no redundant grain directory
	le.PutUint64(b[56:], gdOffset)
	le.PutUint64(b[64:], vmdkOverheadSectors)
	b[72] = 0 // clean shutdown
	copy(b[73:], "\n \r\n")
	le.PutUint16(b[77:], vmdkCompressDeflate)
	return b
}

// vmdkMarker encodes a metadata marker sector.
func vmdkMarker(sectors uint64, typ uint32) []byte {
	b := make([]byte, 512)
	binary.LittleEndian.PutUint64(b[0:], sectors)
	binary.LittleEndian.PutUint32(b[12:], typ)
	return b
}

// vmdkDescriptor is the embedded descriptor. The geometry is the BIOS
// translation (255 heads, 63 sectors) importers expect of an LSI Logic
// disk.
func vmdkDescriptor(cid uint32, capacity uint64, fileName string) string {
	cyl := min(capacity/(255*63), 65535)
	name := strings.NewReplacer(`"`, "_", "\n", "_").Replace(fileName)
	return fmt.Sprintf(`# Disk DescriptorFile
version=1
CID=%08x
parentCID=ffffffff
createType="streamOptimized"

# Extent description
RW %d SPARSE "%s"

# The Disk Data Base
#DDB

ddb.virtualHWVersion = "4"
ddb.adapterType = "lsilogic"
ddb.geometry.cylinders = "%d"
ddb.geometry.heads = "255"
ddb.geometry.sectors = "63"
`, cid, capacity, name, cyl)
}

func le32s(v []uint32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], x)
	}
	return b
}

// sectorWriter writes sequentially and counts bytes; the first error sticks.
type sectorWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (s *sectorWriter) write(b []byte) {
	if s.err != nil {
		return
	}
	n, err := s.w.Write(b)
	s.n += int64(n)
	s.err = err
}

func (s *sectorWriter) padTo(off int64) {
	if off > s.n {
		s.write(make([]byte, off-s.n))
	}
}

func (s *sectorWriter) padSector() { s.padTo((s.n + 511) / 512 * 512) }
