package vdisk

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"os"
	"time"
)

// Fixed VHD (Microsoft's "Virtual Hard Disk Image Format Specification"):
// the disk's bytes followed by a 512-byte footer. Azure takes only fixed
// VHDs whose virtual size is a whole number of MiB, so the disk is padded
// with zeros to the next MiB. Written sparse: zero blocks are holes.
const (
	vhdFooterBytes   = 512
	vhdRoundBytes    = 1 << 20
	vhdCookie        = "conectix"
	vhdFeatures      = 0x00000002 // reserved bit, always set
	vhdVersion       = 0x00010000
	vhdFixedOffset   = 0xFFFFFFFFFFFFFFFF // data offset of a fixed disk
	vhdDiskTypeFixed = 2
	// vhdCreatorApp "win " marks a disk whose size is the footer's current
	// size, as Hyper-V and Azure write it. Readers (QEMU among them) take
	// the size from the CHS geometry for other creators, which cuts a
	// disk whose size is not a whole number of cylinders.
	vhdCreatorApp     = "win "
	vhdCreatorVersion = 0x000a0000 // 10.0, as Hyper-V writes
	vhdCreatorHostOS  = "Wi2k"
)

// vhdEpoch is the zero of the footer's time stamp.
var vhdEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func writeVHD(ctx context.Context, out *os.File, m *image, o Options) error {
	s, err := m.scan(ctx)
	if err != nil {
		return err
	}
	if err := copySparse(ctx, out, m, s, 0); err != nil {
		return err
	}
	size := (m.size + vhdRoundBytes - 1) / vhdRoundBytes * vhdRoundBytes
	footer := vhdFooter(size, o.ModTime, s.digest)
	if _, err := out.WriteAt(footer, size); err != nil {
		return err
	}
	return out.Truncate(size + vhdFooterBytes)
}

// vhdFooter encodes the footer of a fixed disk of size bytes. The unique
// id is derived from the content digest, so it is the same for the same
// image and differs between images.
func vhdFooter(size int64, mod time.Time, digest [32]byte) []byte {
	b := make([]byte, vhdFooterBytes)
	be := binary.BigEndian
	copy(b[0:], vhdCookie)
	be.PutUint32(b[8:], vhdFeatures)
	be.PutUint32(b[12:], vhdVersion)
	be.PutUint64(b[16:], vhdFixedOffset)
	var stamp uint32
	if mod.After(vhdEpoch) {
		stamp = uint32(min(mod.Sub(vhdEpoch)/time.Second, 1<<32-1))
	}
	be.PutUint32(b[24:], stamp)
	copy(b[28:], vhdCreatorApp)
	be.PutUint32(b[32:], vhdCreatorVersion)
	copy(b[36:], vhdCreatorHostOS)
	be.PutUint64(b[40:], uint64(size)) // original size
	be.PutUint64(b[48:], uint64(size)) // current size
	cyl, heads, spt := vhdGeometry(size / 512)
	be.PutUint16(b[56:], cyl)
	b[58], b[59] = heads, spt
	be.PutUint32(b[60:], vhdDiskTypeFixed)
	id := uuidFrom(digest, "vhd")
	copy(b[68:], id[:])
	// Byte 84, saved state, stays 0.
	be.PutUint32(b[64:], vhdChecksum(b))
	return b
}

// vhdChecksum is the one's complement of the sum of the footer's bytes,
// the checksum field counted as zero.
func vhdChecksum(b []byte) uint32 {
	var sum uint32
	for i, v := range b {
		if i >= 64 && i < 68 {
			continue
		}
		sum += uint32(v)
	}
	return ^sum
}

// vhdGeometry is the specification's CHS algorithm (appendix "CHS
// calculation") for a disk of the given sectors.
func vhdGeometry(sectors int64) (cylinders uint16, heads, sectorsPerTrack uint8) {
	const maxSectors = 65535 * 16 * 255
	sectors = min(sectors, maxSectors)
	var spt, hds, cth int64
	if sectors >= 65535*16*63 {
		spt, hds = 255, 16
		cth = sectors / spt
	} else {
		spt = 17
		cth = sectors / spt
		hds = (cth + 1023) / 1024
		if hds < 4 {
			hds = 4
		}
		if cth >= hds*1024 || hds > 16 {
			spt, hds = 31, 16
			cth = sectors / spt
		}
		if cth >= hds*1024 {
			spt, hds = 63, 16
			cth = sectors / spt
		}
	}
	return uint16(cth / hds), uint8(hds), uint8(spt)
}

// uuidFrom derives a version-8 UUID from a content digest and the format's
// name, so each format's identifier differs for the same image.
func uuidFrom(digest [32]byte, format string) [16]byte {
	var u [16]byte
	h := sha256.Sum256(append(digest[:], format...))
	copy(u[:], h[:16])
	u[6] = u[6]&0x0f | 0x80
	u[8] = u[8]&0x3f | 0x80
	return u
}
