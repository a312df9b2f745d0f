package vhostuser

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	maxQueueSize = 32768 // split virtqueues, virtio 1.2 2.7

	availFlagNoInterrupt = 1
)

// vring is one split virtqueue as configured by the front-end. It is only
// touched from the engine goroutine.
type vring struct {
	index int

	// Front-end configuration.
	size    uint16 // SET_VRING_NUM; 0 until set
	addr    vringAddr
	addrSet bool
	base    uint16 // SET_VRING_BASE
	kickFD  int
	callFD  int
	errFD   int
	enabled bool

	// Set while the ring is started (from SET_VRING_KICK to GET_VRING_BASE).
	started  bool
	waiter   *kickWaiter
	eventIdx bool
	indirect bool

	// Ring memory; nil unless mapped.
	desc, avail, used []byte

	lastAvail uint16 // next avail entry to take
	usedIdx   uint16 // next used entry to fill

	pushed         bool   // used entries added since the last call decision
	signalled      uint16 // used index at the last call decision
	signalledValid bool

	// What GET_VRING_BASE last answered, to tell a driver reset (new rings
	// from index 0) from a stop/cont of the same rings.
	stopped     bool
	stoppedBase uint16
	stoppedAddr vringAddr
}

func newVring(index int) *vring {
	return &vring{index: index, kickFD: -1, callFD: -1, errFD: -1}
}

func roundUp4(n uint64) uint64 { return (n + 3) &^ 3 }

func aligned4(b []byte) bool { return uintptr(unsafe.Pointer(&b[0]))&3 == 0 }

// mapRings translates the ring addresses. The avail and used rings are
// mapped rounded up to whole 32-bit words so that the 16-bit atomics in
// atomics.go stay inside them; that needs them 4-byte aligned (the used ring
// must be anyway; Linux aligns the avail ring to at least 16).
func (r *vring) mapRings(mem *guestMemory) error {
	if r.size == 0 {
		return fmt.Errorf("queue %d: size not set", r.index)
	}
	if !r.addrSet {
		return fmt.Errorf("queue %d: addresses not set", r.index)
	}
	n := uint64(r.size)
	desc, err := mem.uva(r.addr.desc, descBytes*n)
	if err != nil {
		return fmt.Errorf("queue %d: descriptor table: %w", r.index, err)
	}
	avail, err := mem.uva(r.addr.avail, roundUp4(6+2*n))
	if err != nil {
		return fmt.Errorf("queue %d: avail ring: %w", r.index, err)
	}
	used, err := mem.uva(r.addr.used, roundUp4(6+8*n))
	if err != nil {
		return fmt.Errorf("queue %d: used ring: %w", r.index, err)
	}
	if !aligned4(avail) || !aligned4(used) {
		return fmt.Errorf("queue %d: avail ring %#x or used ring %#x not 4-byte aligned", r.index, r.addr.avail, r.addr.used)
	}
	r.desc, r.avail, r.used = desc, avail, used
	return nil
}

func (r *vring) unmapRings() { r.desc, r.avail, r.used = nil, nil, nil }

func (r *vring) mapped() bool { return r.used != nil }

func (r *vring) availIdx() uint16 { return load16(r.avail, 2) }

// pop takes the next available chain into c. It reports false when the
// ring is empty. An error means the guest broke the ring protocol.
func (r *vring) pop(mem *guestMemory, c *chain) (bool, error) {
	avail := r.availIdx()
	if avail == r.lastAvail {
		return false, nil
	}
	if pending := avail - r.lastAvail; pending > r.size {
		return false, fmt.Errorf("queue %d: avail index %d is %d entries past %d, queue size %d", r.index, avail, pending, r.lastAvail, r.size)
	}
	slot := uint64(r.lastAvail & (r.size - 1))
	head := binary.LittleEndian.Uint16(r.avail[4+2*slot:])
	if err := walkChain(c, mem, r.desc, r.size, head, r.indirect); err != nil {
		return false, fmt.Errorf("queue %d: avail entry %d: %w", r.index, r.lastAvail, err)
	}
	r.lastAvail++
	return true, nil
}

// push returns a chain to the guest with written bytes written into it.
func (r *vring) push(head uint16, written uint32) {
	slot := uint64(r.usedIdx & (r.size - 1))
	e := r.used[4+8*slot:]
	binary.LittleEndian.PutUint32(e, uint32(head))
	binary.LittleEndian.PutUint32(e[4:], written)
	r.usedIdx++
	store16(r.used, 2, r.usedIdx)
	r.pushed = true
}

// armKick asks the guest to kick when it adds buffers past what we have
// taken, and reports whether some arrived meanwhile. Without EVENT_IDX the
// guest kicks anyway: we never set VRING_USED_F_NO_NOTIFY.
func (r *vring) armKick() bool {
	if r.eventIdx {
		store16(r.used, 4+8*int(r.size), r.lastAvail)
	}
	return r.availIdx() != r.lastAvail
}

// needsCall decides whether the guest wants an interrupt for the used
// entries pushed since the last decision (virtio 1.2, 2.7.10).
func (r *vring) needsCall() bool {
	if !r.pushed {
		return false
	}
	r.pushed = false
	if !r.eventIdx {
		return load16(r.avail, 0)&availFlagNoInterrupt == 0
	}
	old, valid := r.signalled, r.signalledValid
	r.signalled, r.signalledValid = r.usedIdx, true
	if !valid {
		return true
	}
	event := load16(r.avail, 4+2*int(r.size))
	return r.usedIdx-event-1 < r.usedIdx-old
}

// call interrupts the guest. A full eventfd counter (EAGAIN) already means
// an interrupt is pending.
func (r *vring) call() {
	if r.callFD < 0 {
		return
	}
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	unix.Write(r.callFD, one[:])
}

// signalError tells the front-end the ring failed (vring err eventfd).
func (r *vring) signalError() {
	if r.errFD < 0 {
		return
	}
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	unix.Write(r.errFD, one[:])
}

func closeFD(fd *int) {
	if *fd >= 0 {
		unix.Close(*fd)
		*fd = -1
	}
}
