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
	"time"

	"golang.org/x/sys/unix"
)

// The harness plays QEMU (a vhost-user front-end) and the guest's
// virtio-vsock driver against a Device in the same process, with a memfd as
// guest RAM, so device behaviour can be tested quickly and exactly.

const (
	testCID       = 3
	testMemBytes  = 16 << 20
	testUVABase   = 0x7f0000000000 // the "QEMU address" of guest RAM
	testQueueSize = 128
	testRxBufLen  = 3776 // what Linux 6.1 posts

	rxBufBase   = 0x100000
	txBufBase   = 0x200000
	txSlotBytes = 0x11000 // header + 64 KiB payload + indirect table
	txSlots     = testQueueSize / 2
)

// ringLayout places one queue's rings in guest memory.
type ringLayout struct{ desc, avail, used uint64 }

func defaultLayout(q int, gen int) ringLayout {
	base := uint64(0x10000*(1+gen)) + uint64(q)*0x4000
	return ringLayout{desc: base, avail: base + 0x1000, used: base + 0x2000}
}

type harnessOpts struct {
	features uint64 // acked features; 0 means all offered
	indirect bool   // send tx packets through indirect tables
	devOpts  []Option
}

type testVM struct {
	t       *testing.T
	dir     string
	vhost   string // vhost-user socket
	uds     string // hybrid vsock socket
	cancel  context.CancelFunc
	served  chan error
	fe      *net.UnixConn
	memfd   int
	mem     []byte
	q       [2]*testQueue
	opts    harnessOpts
	pending []rxPacket // received but not yet consumed
}

type testQueue struct {
	idx       int
	size      uint16
	layout    ringLayout
	kick      int
	call      int
	nextAvail uint16
	lastUsed  uint16
	freeSlots []int // tx only
	eventIdx  bool
}

type rxPacket struct {
	hdr     header
	payload []byte
}

// newTestVM starts a Device and connects a front-end that sets up both rings.
func newTestVM(t *testing.T, opts harnessOpts) *testVM {
	t.Helper()
	dir, err := os.MkdirTemp("", "vu")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	vm := &testVM{t: t, dir: dir, vhost: filepath.Join(dir, "vhost.sock"), uds: filepath.Join(dir, "v.sock"), opts: opts}
	devOpts := append([]Option{WithLogger(testLogger(t))}, opts.devOpts...)
	dev, err := NewDevice(testCID, vm.uds, devOpts...)
	if err != nil {
		t.Fatal(err)
	}
	l, err := listenUnix(vm.vhost)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	vm.cancel = cancel
	vm.served = make(chan error, 1)
	go func() { vm.served <- dev.ServeListener(ctx, l) }()
	t.Cleanup(vm.stop)

	vm.memfd, err = unix.MemfdCreate("guest-ram", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(vm.memfd, testMemBytes); err != nil {
		t.Fatal(err)
	}
	vm.mem, err = unix.Mmap(vm.memfd, 0, testMemBytes, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(vm.mem); unix.Close(vm.memfd) })
	vm.connectFrontend()
	vm.negotiate()
	vm.startRings(0, [2]uint16{0, 0})
	vm.postRxBuffers()
	return vm
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("VHOSTUSER_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (vm *testVM) stop() {
	if vm.cancel == nil {
		return
	}
	vm.cancel()
	vm.cancel = nil
	select {
	case err := <-vm.served:
		if err != nil {
			vm.t.Errorf("ServeListener = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		vm.t.Errorf("ServeListener did not return after cancel")
	}
	if vm.fe != nil {
		vm.fe.Close()
	}
	for _, q := range vm.q {
		if q != nil {
			unix.Close(q.kick)
			unix.Close(q.call)
		}
	}
}

func (vm *testVM) connectFrontend() {
	vm.t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: vm.vhost, Net: "unix"})
	if err != nil {
		vm.t.Fatal(err)
	}
	vm.fe = c
}

// --- vhost-user front-end side ---

func (vm *testVM) send(req request, flags uint32, payload []byte, fds ...int) {
	vm.t.Helper()
	buf := make([]byte, headerBytes+len(payload))
	binary.LittleEndian.PutUint32(buf, uint32(req))
	binary.LittleEndian.PutUint32(buf[4:], flagVersion|flags)
	binary.LittleEndian.PutUint32(buf[8:], uint32(len(payload)))
	copy(buf[headerBytes:], payload)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := vm.fe.WriteMsgUnix(buf, oob, nil); err != nil {
		vm.t.Fatalf("send %v: %v", req, err)
	}
}

func (vm *testVM) reply(req request) []byte {
	vm.t.Helper()
	vm.fe.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer vm.fe.SetReadDeadline(time.Time{})
	var hdr [headerBytes]byte
	if _, err := io.ReadFull(vm.fe, hdr[:]); err != nil {
		vm.t.Fatalf("reply to %v: %v", req, err)
	}
	got := request(binary.LittleEndian.Uint32(hdr[:]))
	flags := binary.LittleEndian.Uint32(hdr[4:])
	if got != req || flags&flagReply == 0 {
		vm.t.Fatalf("reply to %v: got %v flags %#x", req, got, flags)
	}
	p := make([]byte, binary.LittleEndian.Uint32(hdr[8:]))
	if _, err := io.ReadFull(vm.fe, p); err != nil {
		vm.t.Fatalf("reply to %v: payload: %v", req, err)
	}
	return p
}

func (vm *testVM) get64(req request) uint64 {
	vm.t.Helper()
	vm.send(req, 0, nil)
	return binary.LittleEndian.Uint64(vm.reply(req))
}

// sendAck sends a message with NEED_REPLY and returns the status.
func (vm *testVM) sendAck(req request, payload []byte, fds ...int) uint64 {
	vm.t.Helper()
	vm.send(req, flagNeedReply, payload, fds...)
	return binary.LittleEndian.Uint64(vm.reply(req))
}

func (vm *testVM) negotiate() {
	vm.t.Helper()
	feats := vm.get64(reqGetFeatures)
	proto := vm.get64(reqGetProtocolFeatures)
	vm.sendAck(reqSetProtocolFeatures, u64Payload(proto&offeredProtocolFeatures))
	vm.send(reqSetOwner, 0, nil)
	if n := vm.get64(reqGetQueueNum); n != 2 {
		vm.t.Fatalf("GET_QUEUE_NUM = %d, want 2", n)
	}
	ack := vm.opts.features
	if ack == 0 {
		ack = feats
	}
	if st := vm.sendAck(reqSetFeatures, u64Payload(ack)); st != 0 {
		vm.t.Fatalf("SET_FEATURES(%#x) status %d", ack, st)
	}
	vm.opts.features = ack
	var table [8 + memRegionBytes]byte
	binary.LittleEndian.PutUint32(table[:], 1)
	binary.LittleEndian.PutUint64(table[8:], 0)             // gpa
	binary.LittleEndian.PutUint64(table[16:], testMemBytes) // size
	binary.LittleEndian.PutUint64(table[24:], testUVABase)  // uva
	binary.LittleEndian.PutUint64(table[32:], 0)            // mmap offset
	if st := vm.sendAck(reqSetMemTable, table[:], vm.memfd); st != 0 {
		vm.t.Fatalf("SET_MEM_TABLE status %d", st)
	}
}

func vringStatePayload(index, num uint32) []byte { return vringState{index, num}.bytes() }

// startRings sets both rings up at layout generation gen from the bases.
func (vm *testVM) startRings(gen int, bases [2]uint16) {
	vm.t.Helper()
	for i := range 2 {
		lay := defaultLayout(i, gen)
		// A fresh driver zeroes its rings.
		clear(vm.mem[lay.desc : lay.used+0x1000])
		q := &testQueue{idx: i, size: testQueueSize, layout: lay, nextAvail: bases[i], lastUsed: bases[i],
			eventIdx: vm.opts.features&featEventIdx != 0}
		if old := vm.q[i]; old != nil {
			unix.Close(old.kick)
			unix.Close(old.call)
		}
		var err error
		if q.kick, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
			vm.t.Fatal(err)
		}
		if q.call, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
			vm.t.Fatal(err)
		}
		if i == txQueue {
			for s := range txSlots {
				q.freeSlots = append(q.freeSlots, s)
			}
		}
		vm.q[i] = q
		vm.sendAck(reqSetVringNum, vringStatePayload(uint32(i), testQueueSize))
		vm.sendAck(reqSetVringBase, vringStatePayload(uint32(i), uint32(bases[i])))
		var addr [vringAddrBytes]byte
		binary.LittleEndian.PutUint32(addr[:], uint32(i))
		binary.LittleEndian.PutUint64(addr[8:], testUVABase+lay.desc)
		binary.LittleEndian.PutUint64(addr[16:], testUVABase+lay.used)
		binary.LittleEndian.PutUint64(addr[24:], testUVABase+lay.avail)
		if st := vm.sendAck(reqSetVringAddr, addr[:]); st != 0 {
			vm.t.Fatalf("SET_VRING_ADDR status %d", st)
		}
		if st := vm.sendAck(reqSetVringKick, u64Payload(uint64(i)), q.kick); st != 0 {
			vm.t.Fatalf("SET_VRING_KICK status %d", st)
		}
		vm.sendAck(reqSetVringCall, u64Payload(uint64(i)), q.call)
		vm.sendAck(reqSetVringEnable, vringStatePayload(uint32(i), 1))
	}
}

// stopRings stops both rings the way QEMU does and returns the bases.
func (vm *testVM) stopRings() [2]uint16 {
	vm.t.Helper()
	var bases [2]uint16
	for i := range 2 {
		vm.sendAck(reqSetVringEnable, vringStatePayload(uint32(i), 0))
		vm.send(reqGetVringBase, 0, vringStatePayload(uint32(i), 0))
		p := vm.reply(reqGetVringBase)
		bases[i] = uint16(binary.LittleEndian.Uint32(p[4:]))
	}
	return bases
}

// --- guest driver side ---

func (vm *testVM) put16(gpa uint64, v uint16) { binary.LittleEndian.PutUint16(vm.mem[gpa:], v) }
func (vm *testVM) put32(gpa uint64, v uint32) { binary.LittleEndian.PutUint32(vm.mem[gpa:], v) }
func (vm *testVM) put64(gpa uint64, v uint64) { binary.LittleEndian.PutUint64(vm.mem[gpa:], v) }

func (vm *testVM) putDesc(q *testQueue, i uint16, addr uint64, length uint32, flags, next uint16) {
	d := q.layout.desc + uint64(i)*descBytes
	vm.put64(d, addr)
	vm.put32(d+8, length)
	vm.put16(d+12, flags)
	vm.put16(d+14, next)
}

// makeAvail publishes heads and kicks the device.
func (vm *testVM) makeAvail(q *testQueue, heads ...uint16) {
	for _, h := range heads {
		vm.put16(q.layout.avail+4+2*uint64(q.nextAvail%q.size), h)
		q.nextAvail++
	}
	store16(vm.mem[q.layout.avail:q.layout.avail+8], 2, q.nextAvail)
	vm.kick(q)
}

func (vm *testVM) kick(q *testQueue) {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	unix.Write(q.kick, one[:])
}

func rxBufAddr(i uint16) uint64 { return rxBufBase + uint64(i)*0x1000 }

func (vm *testVM) postRxBuffers() {
	q := vm.q[rxQueue]
	heads := make([]uint16, q.size)
	for i := range q.size {
		vm.putDesc(q, i, rxBufAddr(i), testRxBufLen, descFlagWrite, 0)
		heads[i] = i
	}
	vm.makeAvail(q, heads...)
}

// usedEntries returns the used entries published since the last call.
func (vm *testVM) usedEntries(q *testQueue) [][2]uint32 {
	used := vm.mem[q.layout.used : q.layout.used+8+8*uint64(q.size)]
	idx := load16(used, 2)
	var out [][2]uint32
	for q.lastUsed != idx {
		e := 4 + 8*uint64(q.lastUsed%q.size)
		out = append(out, [2]uint32{binary.LittleEndian.Uint32(used[e:]), binary.LittleEndian.Uint32(used[e+4:])})
		q.lastUsed++
	}
	if q.eventIdx {
		avail := vm.mem[q.layout.avail : q.layout.avail+8+2*uint64(q.size)]
		store16(avail, 4+2*int(q.size), q.lastUsed)
	}
	return out
}

// reclaimTx frees tx slots the device has consumed.
func (vm *testVM) reclaimTx() {
	q := vm.q[txQueue]
	for _, e := range vm.usedEntries(q) {
		q.freeSlots = append(q.freeSlots, int(e[0])/2)
	}
}

func (vm *testVM) waitCall(q *testQueue, d time.Duration) {
	fds := []unix.PollFd{{Fd: int32(q.call), Events: unix.POLLIN}}
	unix.Poll(fds, int(d/time.Millisecond))
	var buf [8]byte
	unix.Read(q.call, buf[:])
}

// guestSend puts one packet on the tx queue.
func (vm *testVM) guestSend(h header, payload []byte) {
	vm.t.Helper()
	q := vm.q[txQueue]
	deadline := time.Now().Add(5 * time.Second)
	for {
		vm.reclaimTx()
		if len(q.freeSlots) > 0 {
			break
		}
		if time.Now().After(deadline) {
			vm.t.Fatal("tx queue full: device is not consuming")
		}
		vm.waitCall(q, 10*time.Millisecond)
	}
	slot := q.freeSlots[0]
	q.freeSlots = q.freeSlots[1:]
	h.len = uint32(len(payload))
	base := txBufBase + uint64(slot)*txSlotBytes
	h.encode(vm.mem[base:])
	copy(vm.mem[base+hdrBytes:], payload)
	d0, d1 := uint16(2*slot), uint16(2*slot+1)
	if vm.opts.indirect && len(payload) > 0 {
		table := base + hdrBytes + maxPacketPayloadBytes
		table = (table + 15) &^ 15
		put := func(i uint64, addr uint64, l uint32, flags, next uint16) {
			vm.put64(table+16*i, addr)
			vm.put32(table+16*i+8, l)
			vm.put16(table+16*i+12, flags)
			vm.put16(table+16*i+14, next)
		}
		put(0, base, hdrBytes, descFlagNext, 1)
		put(1, base+hdrBytes, uint32(len(payload)), 0, 0)
		vm.putDesc(q, d0, table, 32, descFlagIndirect, 0)
	} else if len(payload) > 0 {
		vm.putDesc(q, d0, base, hdrBytes, descFlagNext, d1)
		vm.putDesc(q, d1, base+hdrBytes, uint32(len(payload)), 0, 0)
	} else {
		vm.putDesc(q, d0, base, hdrBytes, 0, 0)
	}
	vm.makeAvail(q, d0)
}

// guestRecv returns the next packet the device put on the rx queue, or
// false after d. Consumed buffers are posted again at once.
func (vm *testVM) guestRecv(d time.Duration) (rxPacket, bool) {
	vm.t.Helper()
	deadline := time.Now().Add(d)
	q := vm.q[rxQueue]
	for {
		if len(vm.pending) > 0 {
			p := vm.pending[0]
			vm.pending = vm.pending[1:]
			return p, true
		}
		entries := vm.usedEntries(q)
		var heads []uint16
		for _, e := range entries {
			id, n := uint16(e[0]), e[1]
			if id >= q.size {
				vm.t.Fatalf("used id %d out of range", id)
			}
			if n > testRxBufLen {
				vm.t.Fatalf("used len %d over buffer %d", n, testRxBufLen)
			}
			if n >= hdrBytes {
				buf := vm.mem[rxBufAddr(id) : rxBufAddr(id)+uint64(n)]
				h := decodeHeader(buf)
				if uint64(h.len) != uint64(n)-hdrBytes {
					vm.t.Fatalf("packet %v: header len %d but used len %d", h, h.len, n)
				}
				vm.pending = append(vm.pending, rxPacket{hdr: h, payload: append([]byte(nil), buf[hdrBytes:]...)})
			}
			vm.putDesc(q, id, rxBufAddr(id), testRxBufLen, descFlagWrite, 0)
			heads = append(heads, id)
		}
		if len(heads) > 0 {
			vm.makeAvail(q, heads...)
			continue
		}
		left := time.Until(deadline)
		if left <= 0 {
			return rxPacket{}, false
		}
		vm.waitCall(q, min(left, 20*time.Millisecond))
	}
}

// expect returns the next packet and checks its op.
func (vm *testVM) expect(o op) rxPacket {
	vm.t.Helper()
	p, ok := vm.guestRecv(5 * time.Second)
	if !ok {
		vm.t.Fatalf("waiting for %v: no packet", o)
	}
	if p.hdr.op != o {
		vm.t.Fatalf("got packet %v, want %v", p.hdr, o)
	}
	if p.hdr.srcCID != hostCID || p.hdr.dstCID != testCID || p.hdr.typ != typeStream {
		vm.t.Fatalf("packet %v: wrong cids or type", p.hdr)
	}
	return p
}

// expectNothing checks that no packet arrives for d.
func (vm *testVM) expectNothing(d time.Duration) {
	vm.t.Helper()
	if p, ok := vm.guestRecv(d); ok {
		vm.t.Fatalf("got unexpected packet %v", p.hdr)
	}
}

// guestHdr builds a header from guest port gp to host port hp.
func guestHdr(o op, gp, hp uint32) header {
	return header{srcCID: testCID, dstCID: hostCID, srcPort: gp, dstPort: hp, typ: typeStream, op: o, bufAlloc: 256 << 10}
}

// --- host side ---

// hostDial connects to the hybrid socket and asks for guest port port.
func (vm *testVM) hostDial(port uint32) *net.UnixConn {
	vm.t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: vm.uds, Net: "unix"})
	if err != nil {
		vm.t.Fatal(err)
	}
	vm.t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "CONNECT %d\n", port)
	return c
}

// readLine reads one "\n"-terminated line byte by byte.
func readLine(c net.Conn) (string, error) {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	var line []byte
	var b [1]byte
	for {
		if _, err := c.Read(b[:]); err != nil {
			return string(line), err
		}
		if b[0] == '\n' {
			return string(line), nil
		}
		line = append(line, b[0])
	}
}

// gconn is the guest end of an established connection.
type gconn struct {
	vm                   *testVM
	guestPort, hostPort  uint32
	bufAlloc             uint32
	fwdCnt, rxCnt, txCnt uint32
	devFwd               uint32 // the device's last advertised fwd_cnt
}

// hostConnect opens a host-initiated connection to guest port port and
// completes it as the guest would.
func (vm *testVM) hostConnect(port, guestBufAlloc uint32) (*net.UnixConn, *gconn) {
	vm.t.Helper()
	c := vm.hostDial(port)
	req := vm.expect(opRequest)
	if req.hdr.dstPort != port || req.hdr.srcPort < firstHostPort || req.hdr.srcPort >= endHostPort {
		vm.t.Fatalf("REQUEST %v: want dst port %d and src port in [1<<30, 1<<31)", req.hdr, port)
	}
	g := &gconn{vm: vm, guestPort: port, hostPort: req.hdr.srcPort, bufAlloc: guestBufAlloc}
	g.send(opResponse, 0, nil)
	line, err := readLine(c)
	if err != nil || line != fmt.Sprintf("OK %d", g.hostPort) {
		vm.t.Fatalf("handshake reply %q, %v; want %q", line, err, fmt.Sprintf("OK %d", g.hostPort))
	}
	return c, g
}

func (g *gconn) hdr(o op) header {
	h := guestHdr(o, g.guestPort, g.hostPort)
	h.bufAlloc, h.fwdCnt = g.bufAlloc, g.fwdCnt
	return h
}

func (g *gconn) send(o op, flags uint32, payload []byte) {
	g.vm.t.Helper()
	h := g.hdr(o)
	h.flags = flags
	g.vm.guestSend(h, payload)
	g.txCnt += uint32(len(payload))
}

// recvData reads n payload bytes of RW packets for g, acknowledging them
// with credit updates as a reading guest does, and checks every packet.
func (g *gconn) recvData(n int) []byte {
	g.vm.t.Helper()
	var out []byte
	for len(out) < n {
		p, ok := g.vm.guestRecv(5 * time.Second)
		if !ok {
			g.vm.t.Fatalf("received %d of %d bytes, then nothing", len(out), n)
		}
		g.check(p.hdr)
		if p.hdr.op == opCreditUpdate {
			continue
		}
		if p.hdr.op != opRW {
			g.vm.t.Fatalf("got %v, want RW", p.hdr)
		}
		if len(p.payload) > testRxBufLen-hdrBytes {
			g.vm.t.Fatalf("RW payload %d over one buffer", len(p.payload))
		}
		out = append(out, p.payload...)
		g.rxCnt += uint32(len(p.payload))
		if g.rxCnt-g.fwdCnt > g.bufAlloc {
			g.vm.t.Fatalf("device sent %d unacknowledged bytes, credit %d", g.rxCnt-g.fwdCnt, g.bufAlloc)
		}
		if g.rxCnt-g.fwdCnt >= g.bufAlloc/2 {
			g.fwdCnt = g.rxCnt
			g.send(opCreditUpdate, 0, nil)
		}
	}
	if len(out) != n {
		g.vm.t.Fatalf("received %d bytes, want %d", len(out), n)
	}
	return out
}

func (g *gconn) check(h header) {
	g.vm.t.Helper()
	if h.srcPort != g.hostPort || h.dstPort != g.guestPort {
		g.vm.t.Fatalf("packet %v for ports %d->%d, want %d->%d", h, h.srcPort, h.dstPort, g.hostPort, g.guestPort)
	}
}

// expectClosed checks that the host end sees EOF or a reset.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("host connection still open")
		}
		return
	}
}
