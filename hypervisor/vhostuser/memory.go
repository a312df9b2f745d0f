package vhostuser

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// maxRegionBytes bounds one guest memory region (and its mmap offset) so
// that sums of offsets and sizes stay far from overflow.
const maxRegionBytes = 1 << 46

// guestRegion is one mapped region of guest RAM.
type guestRegion struct {
	gpa, uva, size uint64
	data           []byte // len(data) == size
	mapping        []byte // whole mmap, for munmap; nil when not mmapped
}

// guestMemory translates guest-physical addresses (used in descriptors) and
// QEMU virtual addresses (used for ring locations) to host memory.
type guestMemory struct {
	regions []guestRegion
}

var errNoMemory = errors.New("no guest memory table")

// mapGuestMemory mmaps each region's fd MAP_SHARED. It takes ownership of
// fds only on success of the whole table; the caller closes them either way
// (a mapping outlives its fd).
func mapGuestMemory(regions []memRegion, fds []int) (*guestMemory, error) {
	if len(fds) != len(regions) {
		return nil, fmt.Errorf("%v: %d regions but %d fds", reqSetMemTable, len(regions), len(fds))
	}
	m := &guestMemory{}
	for i, r := range regions {
		length := r.mmapOffset + r.size
		var st unix.Stat_t
		if err := unix.Fstat(fds[i], &st); err != nil {
			m.unmap()
			return nil, fmt.Errorf("%v: region %d: fstat: %w", reqSetMemTable, i, err)
		}
		// A mapping beyond the end of a file faults (SIGBUS) when touched,
		// so refuse regions the file cannot back.
		if st.Mode&unix.S_IFMT == unix.S_IFREG && uint64(st.Size) < length {
			m.unmap()
			return nil, fmt.Errorf("%v: region %d: needs %#x bytes of a %#x-byte file", reqSetMemTable, i, length, st.Size)
		}
		mapping, err := unix.Mmap(fds[i], 0, int(length), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			m.unmap()
			return nil, fmt.Errorf("%v: region %d: mmap %#x bytes: %w", reqSetMemTable, i, length, err)
		}
		m.regions = append(m.regions, guestRegion{
			gpa: r.gpa, uva: r.uva, size: r.size,
			data:    mapping[r.mmapOffset:length:length],
			mapping: mapping,
		})
	}
	return m, nil
}

// unmap releases the mappings; m must not be used afterwards.
func (m *guestMemory) unmap() {
	if m == nil {
		return
	}
	for _, r := range m.regions {
		if r.mapping != nil {
			unix.Munmap(r.mapping)
		}
	}
	m.regions = nil
}

// appendGPA appends host slices covering [addr, addr+n) to dst. The range
// may cross from one region into a region that follows it directly.
func (m *guestMemory) appendGPA(dst [][]byte, addr, n uint64) ([][]byte, error) {
	if m == nil {
		return dst, errNoMemory
	}
	if addr+n < addr {
		return dst, fmt.Errorf("guest address %#x+%#x overflows", addr, n)
	}
	start, total := addr, n
	for hops := 0; n > 0; hops++ {
		if hops == len(m.regions) {
			return dst, fmt.Errorf("guest address %#x+%#x outside guest memory", start, total)
		}
		found := false
		for i := range m.regions {
			r := &m.regions[i]
			if addr < r.gpa || addr-r.gpa >= r.size {
				continue
			}
			off := addr - r.gpa
			k := min(n, r.size-off)
			dst = append(dst, r.data[off:off+k:off+k])
			addr += k
			n -= k
			found = true
			break
		}
		if !found {
			return dst, fmt.Errorf("guest address %#x+%#x outside guest memory", start, total)
		}
	}
	return dst, nil
}

// uva returns the host bytes for [addr, addr+n) of QEMU's address space,
// which must lie inside one region.
func (m *guestMemory) uva(addr, n uint64) ([]byte, error) {
	if m == nil {
		return nil, errNoMemory
	}
	if addr+n < addr {
		return nil, fmt.Errorf("front-end address %#x+%#x overflows", addr, n)
	}
	for i := range m.regions {
		r := &m.regions[i]
		if addr >= r.uva && addr-r.uva < r.size && n <= r.size-(addr-r.uva) {
			off := addr - r.uva
			return r.data[off : off+n : off+n], nil
		}
	}
	return nil, fmt.Errorf("front-end address %#x+%#x outside guest memory", addr, n)
}
