package vhostuser

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

const fuzzMemBytes = 64 << 10

// fuzzMemory makes guest memory of two adjacent regions over buf, so
// buffers can cross a region boundary.
func fuzzMemory(buf []byte) *guestMemory {
	half := uint64(len(buf) / 2)
	return &guestMemory{regions: []guestRegion{
		{gpa: 0, uva: 0x10000000, size: half, data: buf[:half:half]},
		{gpa: half, uva: 0x10000000 + half, size: uint64(len(buf)) - half, data: buf[half:]},
	}}
}

func inside(t *testing.T, mem []byte, segs [][]byte) {
	t.Helper()
	lo := uintptr(unsafe.Pointer(&mem[0]))
	hi := lo + uintptr(len(mem))
	for _, s := range segs {
		if len(s) == 0 {
			t.Fatalf("empty segment")
		}
		p := uintptr(unsafe.Pointer(&s[0]))
		if p < lo || p+uintptr(len(s)) > hi {
			t.Fatalf("segment %#x+%d outside guest memory %#x-%#x", p, len(s), lo, hi)
		}
	}
}

func sum(segs [][]byte) uint64 {
	var n uint64
	for _, s := range segs {
		n += uint64(len(s))
	}
	return n
}

// FuzzDescriptorChain walks chains through guest-controlled descriptor
// tables (direct and indirect) and checks that every accepted buffer lies
// in guest memory and the walk stays bounded.
func FuzzDescriptorChain(f *testing.F) {
	seed := make([]byte, 256)
	put := func(i int, addr uint64, l uint32, flags, next uint16) {
		binary.LittleEndian.PutUint64(seed[16*i:], addr)
		binary.LittleEndian.PutUint32(seed[16*i+8:], l)
		binary.LittleEndian.PutUint16(seed[16*i+12:], flags)
		binary.LittleEndian.PutUint16(seed[16*i+14:], next)
	}
	put(0, 0x1000, 44, descFlagNext, 1)
	put(1, 0x2000, 100, descFlagNext, 2)
	put(2, 0x7ff0, 0x40, descFlagWrite, 0) // crosses into the second region
	put(3, 0x100, 32, descFlagIndirect, 0)
	put(4, 0, 0, 0, 0)
	f.Add(seed, uint8(3), uint16(0), true)
	f.Add(seed, uint8(3), uint16(3), true)
	f.Add(seed, uint8(3), uint16(3), false)
	f.Add([]byte{}, uint8(0), uint16(0), false)

	f.Fuzz(func(t *testing.T, data []byte, sizeLog uint8, head uint16, indirect bool) {
		buf := make([]byte, fuzzMemBytes)
		copy(buf, data)
		mem := fuzzMemory(buf)
		size := uint16(1) << (sizeLog % 10)
		table := buf[:descBytes*int(size)]
		var c chain
		err := walkChain(&c, mem, table, size, head, indirect)
		if err != nil {
			return
		}
		inside(t, buf, c.readable)
		inside(t, buf, c.writable)
		if sum(c.readable) != c.readBytes || sum(c.writable) != c.writeBytes {
			t.Fatalf("byte counts %d/%d, segments hold %d/%d", c.readBytes, c.writeBytes, sum(c.readable), sum(c.writable))
		}
		limit := (int(size) + maxIndirectDescs) * len(mem.regions)
		if n := len(c.readable) + len(c.writable); n > limit {
			t.Fatalf("%d segments, limit %d", n, limit)
		}
	})
}

// FuzzVirtqueue runs the device's tx and rx processing over guest memory
// the fuzzer controls completely (rings, descriptors, packets), with live
// connections, and checks that it only ever fails by marking the device
// broken.
func FuzzVirtqueue(f *testing.F) {
	// A tx ring with one valid RW packet and an rx ring with one buffer.
	seed := make([]byte, 0x3000)
	le := binary.LittleEndian
	// tx: desc table at 0, avail at 0x100, used at 0x200 (size 4)
	le.PutUint64(seed[0:], 0x1000)
	le.PutUint32(seed[8:], hdrBytes+5)
	le.PutUint16(seed[0x102:], 1) // avail idx
	h := header{srcCID: testCID, dstCID: hostCID, srcPort: 5000, dstPort: firstHostPort, typ: typeStream, op: opRW, len: 5, bufAlloc: 4096}
	h.encode(seed[0x1000:])
	copy(seed[0x1000+hdrBytes:], "hello")
	// rx: desc table at 0x400, avail at 0x500, used at 0x600
	le.PutUint64(seed[0x400:], 0x2000)
	le.PutUint32(seed[0x408:], testRxBufLen)
	le.PutUint16(seed[0x40c:], descFlagWrite)
	le.PutUint16(seed[0x502:], 1)
	f.Add(seed, true)
	f.Add(seed, false)

	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte, eventIdx bool) {
		buf := make([]byte, fuzzMemBytes)
		copy(buf, data)
		e := fuzzEngine(t, dir)
		defer func() {
			close(e.done) // lets dialers started by guest REQUESTs finish
			e.wg.Wait()
		}()
		e.mem = fuzzMemory(buf)
		e.features = offeredFeatures
		if !eventIdx {
			e.features &^= featEventIdx
		}
		for i, base := range []uint64{0, 0x400} {
			r := e.rings[i]
			r.size = 4
			r.addr = vringAddr{index: uint32(i), desc: 0x10000000 + base, avail: 0x10000000 + base + 0x100, used: 0x10000000 + base + 0x200}
			r.addrSet, r.enabled = true, true
			if err := e.startRing(r); err != nil {
				t.Fatal(err)
			}
		}
		// A connection the packets can talk to.
		c := newConn(connKey{hostPort: firstHostPort, guestPort: 5000})
		host, dev := net.Pipe()
		defer host.Close()
		go io.Copy(io.Discard, host)
		c.uds, c.r, c.state = dev, dev, stateEstablished
		c.peerBufAlloc = 4096
		e.conns[c.key] = c
		pending := make([]byte, 5000)
		c.pend, c.pendBytes = []chunk{{buf: pending, data: pending}}, len(pending)
		e.want(c)
		for range 3 {
			e.processTx()
			e.fillRx()
			for _, r := range e.rings {
				if r.mapped() {
					r.needsCall()
				}
			}
		}
		for _, c := range e.conns {
			if err := checkConn(e, c); err != nil {
				t.Fatal(err)
			}
		}
		e.resetConnections()
	})
}

// FuzzPacket drives the connection state machine with packet sequences
// and checks its bounds after each one, and every packet the device sends.
func FuzzPacket(f *testing.F) {
	pkt := func(o op, gp, hp uint32, flags, bufAlloc, fwd uint32, payload string) []byte {
		h := header{srcCID: testCID, dstCID: hostCID, srcPort: gp, dstPort: hp, typ: typeStream, op: o,
			len: uint32(len(payload)), flags: flags, bufAlloc: bufAlloc, fwdCnt: fwd}
		b := make([]byte, hdrBytes+len(payload))
		h.encode(b)
		copy(b[hdrBytes:], payload)
		return b
	}
	cat := func(ps ...[]byte) []byte {
		var out []byte
		for _, p := range ps {
			out = append(out, p...)
		}
		return out
	}
	f.Add(cat(
		pkt(opResponse, 5000, firstHostPort, 0, 8192, 0, ""),
		pkt(opRW, 5000, firstHostPort, 0, 8192, 0, "hello"),
		pkt(opCreditUpdate, 5000, firstHostPort, 0, 8192, 100, ""),
		pkt(opShutdown, 5000, firstHostPort, 3, 8192, 100, ""),
	))
	f.Add(cat(
		pkt(opRequest, 40000, 6000, 0, 4096, 0, ""),
		pkt(opRW, 40000, 6000, 0, 4096, 0, "data"),
		pkt(opCreditRequest, 40000, 6000, 0, 4096, 0, ""),
		pkt(opRST, 40000, 6000, 0, 0, 0, ""),
	))
	f.Add(cat(
		pkt(opResponse, 5001, firstHostPort+1, 0, 1<<20, 0, ""),
		pkt(opRW, 5001, firstHostPort+1, 0, 1<<20, 0, string(make([]byte, 9000))),
		pkt(opShutdown, 5001, firstHostPort+1, 1, 1<<20, 0, ""),
		pkt(opRequest, 5001, firstHostPort+1, 0, 0, 0, ""),
	))

	dir := f.TempDir()
	l, err := net.Listen("unix", filepath.Join(dir, "v.sock_6000"))
	if err != nil {
		f.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()

	f.Fuzz(func(t *testing.T, data []byte) {
		e := fuzzEngine(t, dir)
		ctx, cancel := context.WithCancel(context.Background())
		go e.run(ctx)
		defer func() {
			cancel()
			<-e.done
			e.wg.Wait()
		}()
		// Two host-initiated connections waiting for the guest.
		for i := range 2 {
			host, dev := net.Pipe()
			defer host.Close()
			go func() {
				host.Write([]byte("host data"))
				io.Copy(io.Discard, host)
			}()
			e.call(func() { e.hostConnect(dev, dev, uint32(5000+i)) })
		}
		rx := make([]byte, testRxBufLen)
		for len(data) >= hdrBytes {
			n := hdrBytes + int(min(uint32(len(data)-hdrBytes), binary.LittleEndian.Uint32(data[24:])))
			p := data[:n]
			data = data[n:]
			var err error
			e.call(func() {
				e.handleTxChain(&chain{readable: [][]byte{p}, readBytes: uint64(len(p))})
				for _, c := range e.conns {
					if err = checkConn(e, c); err != nil {
						return
					}
				}
				if len(e.conns) > e.cfg.maxConns || len(e.rsts) > maxPendingRSTs {
					err = fmt.Errorf("%d connections, %d queued resets", len(e.conns), len(e.rsts))
					return
				}
				for range 8 {
					if !e.hasOutput() {
						break
					}
					clear(rx)
					ch := chain{writable: [][]byte{rx}, writeBytes: uint64(len(rx))}
					n := e.emit(&ch)
					if err = checkEmitted(rx[:n]); err != nil {
						return
					}
				}
				if e.internalErrors > 0 {
					err = errors.New("internal error (recovered panic); run with VHOSTUSER_TEST_LOG=1")
				}
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	})
}

func fuzzEngine(t *testing.T, dir string) *engine {
	cfg := config{log: slog.New(slog.DiscardHandler), bufBytes: 8192, maxConns: 4, connectTimeout: 1e9}
	if os.Getenv("VHOSTUSER_TEST_LOG") != "" {
		cfg.log = testLogger(t)
	}
	return newEngine(testCID, filepath.Join(dir, "v.sock"), cfg)
}

func checkConn(e *engine, c *vconn) error {
	if c.state == stateClosed {
		return fmt.Errorf("closed connection %v still in the table", c.key)
	}
	if c.pendBytes < 0 || c.pendBytes > int(e.cfg.bufBytes) {
		return fmt.Errorf("connection %v: %d bytes waiting for the guest, limit %d", c.key, c.pendBytes, e.cfg.bufBytes)
	}
	if c.rxCnt-c.fwdCnt > e.cfg.bufBytes {
		return fmt.Errorf("connection %v: %d guest bytes buffered, limit %d", c.key, c.rxCnt-c.fwdCnt, e.cfg.bufBytes)
	}
	return nil
}

func checkEmitted(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if len(b) < hdrBytes {
		return fmt.Errorf("emitted %d bytes, less than a header", len(b))
	}
	h := decodeHeader(b)
	switch {
	case h.dstCID != testCID || int(h.len) != len(b)-hdrBytes:
		return fmt.Errorf("emitted %v in %d bytes", h, len(b))
	case h.op != opRST && h.srcCID != hostCID:
		return fmt.Errorf("emitted %v from a foreign CID", h)
	case h.op != opRW && h.len != 0:
		return fmt.Errorf("emitted %v with payload", h)
	case h.op < opRequest || h.op > opCreditRequest:
		return fmt.Errorf("emitted %v", h)
	}
	return nil
}

// FuzzFrontendMessages feeds vhost-user message sequences to the engine,
// with eventfds attached where a message takes an fd, over guest memory
// the fuzzer cannot see into. The control plane must refuse nonsense
// without crashing or leaking.
func FuzzFrontendMessages(f *testing.F) {
	msg := func(req request, payload []byte) []byte {
		return append([]byte{byte(req), byte(len(payload))}, payload...)
	}
	u64 := func(v uint64) []byte { return u64Payload(v) }
	addr := func(i uint32, desc, avail, used uint64) []byte {
		b := make([]byte, vringAddrBytes)
		binary.LittleEndian.PutUint32(b, i)
		binary.LittleEndian.PutUint64(b[8:], desc)
		binary.LittleEndian.PutUint64(b[16:], used)
		binary.LittleEndian.PutUint64(b[24:], avail)
		return b
	}
	var seed []byte
	for _, m := range [][]byte{
		msg(reqSetFeatures, u64(offeredFeatures)),
		msg(reqSetVringNum, vringStatePayload(0, 8)),
		msg(reqSetVringBase, vringStatePayload(0, 0)),
		msg(reqSetVringAddr, addr(0, 0x10000000, 0x10000100, 0x10000200)),
		msg(reqSetVringKick, u64(0)),
		msg(reqSetVringCall, u64(0)),
		msg(reqSetVringEnable, vringStatePayload(0, 1)),
		msg(reqGetVringBase, vringStatePayload(0, 0)),
		msg(reqGetConfig, append(make([]byte, 12), make([]byte, 8)...)),
	} {
		seed = append(seed, m...)
	}
	f.Add(seed)

	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		e := fuzzEngine(t, dir)
		ctx, cancel := context.WithCancel(context.Background())
		go e.run(ctx)
		defer func() {
			cancel()
			<-e.done
			e.wg.Wait()
		}()
		buf := make([]byte, fuzzMemBytes)
		e.call(func() { e.mem = fuzzMemory(buf) })
		for len(data) >= 2 {
			req, n := request(data[0]), int(data[1])
			data = data[2:]
			n = min(n, len(data))
			m := message{req: req, flags: flagVersion, payload: data[:n]}
			data = data[n:]
			if req == reqSetVringKick || req == reqSetVringCall || req == reqSetVringErr {
				fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
				if err != nil {
					t.Fatal(err)
				}
				m.fds = []int{fd}
			}
			if req == reqSetMemTable {
				continue // fds of real files; covered by the harness
			}
			var nilReply bool
			e.call(func() {
				reply, hasReply, _ := e.handleMessage(&m)
				nilReply = hasReply && reply == nil
			})
			m.closeFDs()
			if nilReply {
				t.Fatalf("%v: nil reply", req)
			}
		}
		var internal int
		e.call(func() { internal = e.internalErrors })
		if internal > 0 {
			t.Fatal("internal error (recovered panic); run with VHOSTUSER_TEST_LOG=1")
		}
	})
}
