package vhostuser

import (
	"encoding/binary"
	"sync/atomic"
	"unsafe"
)

// Go has no 16-bit atomics, but the split ring's indexes are 16 bits wide and
// shared with the guest. load16 and store16 access the aligned 32-bit word
// that contains the 16-bit field instead: a sequentially consistent load or
// compare-and-swap, which also gives the barriers the virtio spec asks for
// (used entries visible before the used index; used index stored before
// reading the guest's event index).
//
// The caller guarantees that off is even and that the containing 4-byte
// aligned word lies inside b (mapRings checks ring placement for this).

func word(b []byte, off int) (*uint32, int) {
	p := unsafe.Pointer(&b[off])
	mis := int(uintptr(p) & 3)
	_ = b[off-mis+3] // the whole word is inside b
	return (*uint32)(unsafe.Add(p, -mis)), mis
}

// load16 reads the little-endian u16 at b[off].
func load16(b []byte, off int) uint16 {
	w, mis := word(b, off)
	var buf [4]byte
	binary.NativeEndian.PutUint32(buf[:], atomic.LoadUint32(w))
	return binary.LittleEndian.Uint16(buf[mis:])
}

// store16 writes the little-endian u16 v at b[off] without disturbing the
// other half of its word, which the guest may be writing concurrently.
func store16(b []byte, off int, v uint16) {
	w, mis := word(b, off)
	for {
		old := atomic.LoadUint32(w)
		var buf [4]byte
		binary.NativeEndian.PutUint32(buf[:], old)
		binary.LittleEndian.PutUint16(buf[mis:], v)
		if atomic.CompareAndSwapUint32(w, old, binary.NativeEndian.Uint32(buf[:])) {
			return
		}
	}
}
