package vhostuser

import (
	"encoding/binary"
	"fmt"
)

// Split virtqueue descriptor layout (virtio 1.2, 2.7.5).
const (
	descBytes = 16

	descFlagNext     = 1
	descFlagWrite    = 2
	descFlagIndirect = 4

	// maxIndirectDescs bounds an indirect table. The spec leaves the size
	// open; Linux's vsock driver puts two entries there, and vhost in the
	// kernel accepts at most 1024 (UIO_MAXIOV).
	maxIndirectDescs = 1024
)

// chain is one descriptor chain taken from a virtqueue: the device-readable
// buffers, then the device-writable ones, as host slices into guest memory.
// Its slices are reused from one chain to the next.
type chain struct {
	head       uint16
	readable   [][]byte
	writable   [][]byte
	readBytes  uint64
	writeBytes uint64

	indirect []byte   // private copy of an indirect table
	scratch  [][]byte // host slices of the indirect table
}

func (c *chain) reset(head uint16) {
	c.head = head
	c.readable = c.readable[:0]
	c.writable = c.writable[:0]
	c.readBytes, c.writeBytes = 0, 0
}

// walkChain resolves the chain that starts at descriptor head of table, a
// descriptor table of size entries in guest memory. Every address is checked
// against mem, every index against its table, and the walk is bounded by the
// table size, so loops and wild indexes end in an error. Each descriptor is
// read exactly once, so a guest rewriting the table meanwhile cannot make
// the checks and the use disagree.
func walkChain(c *chain, mem *guestMemory, table []byte, size uint16, head uint16, indirectOK bool) error {
	c.reset(head)
	if head >= size {
		return fmt.Errorf("head descriptor %d, queue size %d", head, size)
	}
	descs, n := table, uint32(size)
	idx := uint32(head)
	inIndirect, sawWritable := false, false
	for steps := uint32(0); ; steps++ {
		if steps >= n {
			return fmt.Errorf("chain at head %d: more than %d descriptors (a loop?)", head, n)
		}
		d := descs[idx*descBytes : idx*descBytes+descBytes]
		addr := binary.LittleEndian.Uint64(d)
		length := binary.LittleEndian.Uint32(d[8:])
		flags := binary.LittleEndian.Uint16(d[12:])
		next := uint32(binary.LittleEndian.Uint16(d[14:]))

		if flags&descFlagIndirect != 0 {
			switch {
			case !indirectOK:
				return fmt.Errorf("chain at head %d: descriptor %d: indirect descriptor without VIRTIO_F_INDIRECT_DESC", head, idx)
			case inIndirect:
				return fmt.Errorf("chain at head %d: nested indirect descriptor", head)
			case flags&descFlagNext != 0:
				return fmt.Errorf("chain at head %d: descriptor %d: both INDIRECT and NEXT", head, idx)
			case length == 0 || length%descBytes != 0 || length/descBytes > maxIndirectDescs:
				return fmt.Errorf("chain at head %d: indirect table of %d bytes, want a multiple of %d up to %d entries", head, length, descBytes, maxIndirectDescs)
			}
			var err error
			c.scratch, err = mem.appendGPA(c.scratch[:0], addr, uint64(length))
			if err != nil {
				return fmt.Errorf("chain at head %d: indirect table: %w", head, err)
			}
			c.indirect = c.indirect[:0]
			for _, s := range c.scratch {
				c.indirect = append(c.indirect, s...)
			}
			descs, n, idx = c.indirect, length/descBytes, 0
			inIndirect = true
			steps = ^uint32(0) // the indirect table gets its own bound
			continue
		}

		if flags&descFlagWrite != 0 {
			sawWritable = true
			if length > 0 {
				var err error
				if c.writable, err = mem.appendGPA(c.writable, addr, uint64(length)); err != nil {
					return fmt.Errorf("chain at head %d: descriptor %d: %w", head, idx, err)
				}
				c.writeBytes += uint64(length)
			}
		} else {
			if sawWritable {
				return fmt.Errorf("chain at head %d: descriptor %d: device-readable after device-writable", head, idx)
			}
			if length > 0 {
				var err error
				if c.readable, err = mem.appendGPA(c.readable, addr, uint64(length)); err != nil {
					return fmt.Errorf("chain at head %d: descriptor %d: %w", head, idx, err)
				}
				c.readBytes += uint64(length)
			}
		}
		if flags&descFlagNext == 0 {
			return nil
		}
		if next >= n {
			return fmt.Errorf("chain at head %d: descriptor %d: next %d outside a table of %d", head, idx, next, n)
		}
		idx = next
	}
}

// gather copies bytes from segs, starting off bytes in, into p and returns
// how many it copied.
func gather(segs [][]byte, off uint64, p []byte) int {
	done := 0
	for _, s := range segs {
		if done == len(p) {
			break
		}
		if off >= uint64(len(s)) {
			off -= uint64(len(s))
			continue
		}
		done += copy(p[done:], s[off:])
		off = 0
	}
	return done
}

// scatter writes sequentially into a list of segments.
type scatter struct {
	segs [][]byte
	i    int
	off  int
}

// write copies as much of p as fits and returns the count.
func (s *scatter) write(p []byte) int {
	done := 0
	for done < len(p) && s.i < len(s.segs) {
		n := copy(s.segs[s.i][s.off:], p[done:])
		done += n
		s.off += n
		if s.off == len(s.segs[s.i]) {
			s.i++
			s.off = 0
		}
	}
	return done
}
