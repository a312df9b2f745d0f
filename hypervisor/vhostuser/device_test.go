package vhostuser

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"testing"
	"time"
)

func pattern(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestNewDeviceRejects(t *testing.T) {
	long := "/" + string(bytes.Repeat([]byte("x"), 100))
	tests := []struct {
		name string
		cid  uint64
		path string
		opts []Option
	}{
		{"cid 2", 2, "/tmp/v.sock", nil},
		{"cid any", 0xffffffff, "/tmp/v.sock", nil},
		{"empty path", 3, "", nil},
		{"long path", 3, long, nil},
		{"tiny buffer", 3, "/tmp/v.sock", []Option{WithBufferBytes(100)}},
		{"no connections", 3, "/tmp/v.sock", []Option{WithMaxConnections(0)}},
		{"zero timeout", 3, "/tmp/v.sock", []Option{WithConnectTimeout(0)}},
	}
	for _, tt := range tests {
		if _, err := NewDevice(tt.cid, tt.path, tt.opts...); err == nil {
			t.Errorf("NewDevice(%s) = nil error, want an error", tt.name)
		}
	}
}

func TestNegotiation(t *testing.T) {
	vm := newTestVM(t, harnessOpts{})
	feats := vm.get64(reqGetFeatures)
	for _, bit := range []uint64{featVersion1, featProtocolFeatures} {
		if feats&bit == 0 {
			t.Errorf("GET_FEATURES = %#x, missing %#x", feats, bit)
		}
	}
	if got := vm.get64(reqGetProtocolFeatures); got != protoMQ|protoReplyAck|protoConfig {
		t.Errorf("GET_PROTOCOL_FEATURES = %#x, want %#x", got, protoMQ|protoReplyAck|protoConfig)
	}
	var cfg [configHeaderBytes + 8]byte
	binary.LittleEndian.PutUint32(cfg[4:], 8)
	vm.send(reqGetConfig, 0, cfg[:])
	reply := vm.reply(reqGetConfig)
	if len(reply) != len(cfg) || binary.LittleEndian.Uint64(reply[configHeaderBytes:]) != testCID {
		t.Errorf("GET_CONFIG = %x, want guest CID %d", reply, testCID)
	}
	// Unknown requests and bad payloads are refused, not fatal.
	if st := vm.sendAck(request(99), nil); st == 0 {
		t.Errorf("unknown request acked with 0, want failure")
	}
	if st := vm.sendAck(reqSetVringNum, vringStatePayload(0, 100)); st == 0 {
		t.Errorf("SET_VRING_NUM 100 acked with 0, want failure")
	}
	if st := vm.sendAck(reqSetFeatures, u64Payload(1<<40)); st == 0 {
		t.Errorf("SET_FEATURES with unoffered bit acked with 0, want failure")
	}
	// The session still works.
	hc, g := vm.hostConnect(5000, 256<<10)
	g.send(opRW, 0, []byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(hc, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("host read %q, %v; want ping", buf, err)
	}
}

func TestHostInitiatedRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts harnessOpts
	}{
		{"event idx, indirect", harnessOpts{indirect: true}},
		{"event idx, direct", harnessOpts{}},
		{"no event idx", harnessOpts{features: featVersion1 | featProtocolFeatures}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			vm := newTestVM(t, tt.opts)
			hc, g := vm.hostConnect(5000, 256<<10)

			h2g := pattern(100_000, 1)
			go hc.Write(h2g)
			if got := g.recvData(len(h2g)); !bytes.Equal(got, h2g) {
				t.Fatalf("guest received %d bytes that differ from the %d sent", len(got), len(h2g))
			}

			g2h := pattern(300_000, 2)
			got := make([]byte, len(g2h))
			read := make(chan error, 1)
			go func() {
				_, err := io.ReadFull(hc, got)
				read <- err
			}()
			for off := 0; off < len(g2h); {
				n := min(len(g2h)-off, maxPacketPayloadBytes)
				g.send(opRW, 0, g2h[off:off+n])
				off += n
				// Respect the device's credit: wait for updates.
				for g.txCnt-deviceFwd(t, vm, g) > 128<<10 {
				}
			}
			if err := <-read; err != nil || !bytes.Equal(got, g2h) {
				t.Fatalf("host read %v; data equal %v", err, bytes.Equal(got, g2h))
			}

			// Host half-closes: the guest sees SHUTDOWN(SEND).
			hc.CloseWrite()
			p := vm.expect(opShutdown)
			g.check(p.hdr)
			if p.hdr.flags != shutdownSend {
				t.Errorf("SHUTDOWN flags %d, want %d", p.hdr.flags, shutdownSend)
			}
			// Guest closes: the host sees EOF and the guest gets RST.
			g.send(opShutdown, shutdownBoth, nil)
			g.vm.expect(opRST)
			if n, err := hc.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("host read after guest close = %d, %v; want EOF", n, err)
			}
		})
	}
}

// deviceFwd waits briefly for a CREDIT_UPDATE and returns the device's
// last advertised fwd_cnt for g.
func deviceFwd(t *testing.T, vm *testVM, g *gconn) uint32 {
	t.Helper()
	p, ok := vm.guestRecv(10 * time.Millisecond)
	if ok {
		g.check(p.hdr)
		if p.hdr.op != opCreditUpdate {
			t.Fatalf("got %v, want CREDIT_UPDATE", p.hdr)
		}
		g.devFwd = p.hdr.fwdCnt
	}
	return g.devFwd
}

func TestGuestInitiated(t *testing.T) {
	vm := newTestVM(t, harnessOpts{})
	l, err := net.Listen("unix", fmt.Sprintf("%s_%d", vm.uds, 6000))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	vm.guestSend(guestHdr(opRequest, 40000, 6000), nil)
	resp := vm.expect(opResponse)
	if resp.hdr.srcPort != 6000 || resp.hdr.dstPort != 40000 || resp.hdr.bufAlloc != defaultBufBytes {
		t.Fatalf("RESPONSE %v, want 6000->40000 with buf_alloc %d", resp.hdr, defaultBufBytes)
	}
	var hc net.Conn
	select {
	case hc = <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("host listener got no connection")
	}
	defer hc.Close()
	g := &gconn{vm: vm, guestPort: 40000, hostPort: 6000, bufAlloc: 256 << 10}
	g.send(opRW, 0, []byte("hello host"))
	buf := make([]byte, 10)
	if _, err := io.ReadFull(hc, buf); err != nil || string(buf) != "hello host" {
		t.Fatalf("host read %q, %v", buf, err)
	}
	hc.Write([]byte("hello guest"))
	if got := g.recvData(11); string(got) != "hello guest" {
		t.Fatalf("guest read %q", got)
	}
	// Host closes fully: SHUTDOWN(SEND) to the guest; the guest's close
	// then completes with RST.
	hc.Close()
	if p := vm.expect(opShutdown); p.hdr.flags != shutdownSend {
		t.Errorf("SHUTDOWN flags %d, want %d", p.hdr.flags, shutdownSend)
	}
	g.send(opShutdown, shutdownBoth, nil)
	vm.expect(opRST)
}

func TestRSTs(t *testing.T) {
	vm := newTestVM(t, harnessOpts{})
	// Nobody listens on <uds>_7000.
	vm.guestSend(guestHdr(opRequest, 40001, 7000), nil)
	if p := vm.expect(opRST); p.hdr.dstPort != 40001 || p.hdr.srcPort != 7000 {
		t.Errorf("RST %v, want 7000->40001", p.hdr)
	}
	// Data, shutdown or credit for no connection.
	for _, o := range []op{opRW, opShutdown, opCreditUpdate, opCreditRequest, opResponse} {
		var payload []byte
		if o == opRW {
			payload = []byte("x")
		}
		vm.guestSend(guestHdr(o, 40002, 5000), payload)
		if p := vm.expect(opRST); p.hdr.dstPort != 40002 {
			t.Errorf("after %v: RST %v, want to port 40002", o, p.hdr)
		}
	}
	// A reset is never answered.
	vm.guestSend(guestHdr(opRST, 40003, 5000), nil)
	vm.expectNothing(100 * time.Millisecond)
}

func TestForeignPackets(t *testing.T) {
	vm := newTestVM(t, harnessOpts{})
	// Another CID: the reset comes from the address the guest dialed, so
	// the guest's connect fails at once.
	h := guestHdr(opRequest, 40004, 5000)
	h.dstCID = 7
	vm.guestSend(h, nil)
	p, ok := vm.guestRecv(5 * time.Second)
	if !ok || p.hdr.op != opRST || p.hdr.srcCID != 7 || p.hdr.dstCID != testCID || p.hdr.srcPort != 5000 || p.hdr.dstPort != 40004 {
		t.Fatalf("reply %v (%v), want RST 7:5000->3:40004", p.hdr, ok)
	}
	h = guestHdr(opRequest, 40004, 5000)
	h.typ = 2 // SEQPACKET, not negotiated
	vm.guestSend(h, nil)
	if p, ok := vm.guestRecv(5 * time.Second); !ok || p.hdr.op != opRST || p.hdr.dstPort != 40004 {
		t.Fatalf("reply %v (%v), want RST to port 40004", p.hdr, ok)
	}
	// A spoofed source CID gets no answer.
	h = guestHdr(opRW, 40005, 5000)
	h.srcCID = 9
	vm.guestSend(h, []byte("x"))
	vm.expectNothing(200 * time.Millisecond)
}

func TestHostToGuestCredit(t *testing.T) {
	vm := newTestVM(t, harnessOpts{})
	hc, g := vm.hostConnect(5000, 8192)
	data := pattern(40_000, 3)
	go hc.Write(data)
	var got []byte
	for len(got) < 8192 {
		p := vm.expect(opRW)
		got = append(got, p.payload...)
	}
	if len(got) != 8192 {
		t.Fatalf("guest got %d bytes with 8192 credit", len(got))
	}
	vm.expectNothing(200 * time.Millisecond)
	// The guest reads and says so: the rest flows.
	g.rxCnt, g.fwdCnt = 8192, 8192
	g.send(opCreditUpdate, 0, nil)
	rest := g.recvData(len(data) - 8192)
	if !bytes.Equal(append(got, rest...), data) {
		t.Fatal("data differs")
	}
}

// TestHostToGuestStream moves megabytes host to guest through device
// buffers of several sizes: the read chunks are recycled from packet to
// packet and connection to connection, and reads wait for room, so this
// checks that no byte is lost, repeated or reordered on the way.
func TestHostToGuestStream(t *testing.T) {
	for _, tt := range []struct {
		name     string
		bufBytes uint32
		n        int
	}{
		{"default buffer", defaultBufBytes, 3<<20 + 12345},
		{"smallest buffer", 4096, 300_000},
		{"buffer not a chunk multiple", 100_000, 1<<20 + 7},
	} {
		t.Run(tt.name, func(t *testing.T) {
			vm := newTestVM(t, harnessOpts{devOpts: []Option{WithBufferBytes(tt.bufBytes)}})
			for i := range 2 {
				hc, g := vm.hostConnect(uint32(5000+i), 64<<10)
				data := pattern(tt.n, uint64(10+i))
				go hc.Write(data)
				if got := g.recvData(len(data)); !bytes.Equal(got, data) {
					t.Fatalf("connection %d: guest received %d bytes that differ from the %d sent", i, len(got), len(data))
				}
				hc.Close()
				g.vm.expect(opShutdown)
			}
		})
	}
}

func TestGuestCreditRequest(t *testing.T) {
	vm := newTestVM(t, harnessOpts{})
	_, g := vm.hostConnect(5000, 256<<10)
	g.send(opCreditRequest, 0, nil)
	p := vm.expect(opCreditUpdate)
	if p.hdr.bufAlloc != defaultBufBytes || p.hdr.fwdCnt != 0 {
		t.Errorf("CREDIT_UPDATE %v, want buf_alloc %d fwd_cnt 0", p.hdr, defaultBufBytes)
	}
}

func TestGuestToHostCreditEnforced(t *testing.T) {
	const buf = 16384
	vm := newTestVM(t, harnessOpts{devOpts: []Option{WithBufferBytes(buf)}})
	hc, g := vm.hostConnect(5000, 256<<10)
	// The host never reads. The guest sends within the device's credit
	// until the host socket is full and the credit stops growing.
	for {
		if free := buf - (g.txCnt - g.devFwd); free > 0 {
			g.send(opRW, 0, pattern(int(min(free, 8192)), uint64(g.txCnt)))
			continue
		}
		p, ok := vm.guestRecv(500 * time.Millisecond)
		if !ok {
			break
		}
		if p.hdr.op != opCreditUpdate {
			t.Fatalf("got %v, want CREDIT_UPDATE", p.hdr)
		}
		g.devFwd = p.hdr.fwdCnt
	}
	// One byte beyond the credit resets the connection.
	g.send(opRW, 0, []byte{1})
	p := vm.expect(opRST)
	g.check(p.hdr)
	expectClosed(t, hc)
}

func TestGuestCreditUpdatesWhenHostReads(t *testing.T) {
	vm := newTestVM(t, harnessOpts{devOpts: []Option{WithBufferBytes(16384)}})
	hc, g := vm.hostConnect(5000, 256<<10)
	g.send(opRW, 0, pattern(12000, 5))
	if _, err := io.ReadFull(hc, make([]byte, 12000)); err != nil {
		t.Fatal(err)
	}
	// The guest's view of free space fell under half: an update follows.
	p := vm.expect(opCreditUpdate)
	if p.hdr.fwdCnt != 12000 {
		t.Errorf("CREDIT_UPDATE fwd_cnt %d, want 12000", p.hdr.fwdCnt)
	}
}

func TestLyingFwdCnt(t *testing.T) {
	vm := newTestVM(t, harnessOpts{})
	hc, g := vm.hostConnect(5000, 256<<10)
	g.fwdCnt = 1 << 20 // claims to have consumed bytes never sent
	g.send(opCreditUpdate, 0, nil)
	vm.expect(opRST)
	expectClosed(t, hc)
}

func TestGuestHalfClose(t *testing.T) {
	vm := newTestVM(t, harnessOpts{})
	hc, g := vm.hostConnect(5000, 256<<10)
	g.send(opRW, 0, []byte("last words"))
	g.send(opShutdown, shutdownSend, nil)
	got, err := io.ReadAll(hc)
	if err != nil || string(got) != "last words" {
		t.Fatalf("host ReadAll = %q, %v; want last words, EOF", got, err)
	}
	// The other direction still works.
	hc.Write([]byte("reply"))
	if got := g.recvData(5); string(got) != "reply" {
		t.Fatalf("guest got %q", got)
	}
	// Data after SHUTDOWN(SEND) is a protocol violation.
	g.send(opRW, 0, []byte("more"))
	vm.expect(opRST)
}

func TestConnectTimeoutAndBadHandshake(t *testing.T) {
	vm := newTestVM(t, harnessOpts{devOpts: []Option{WithConnectTimeout(300 * time.Millisecond)}})
	// The guest never answers the REQUEST.
	hc := vm.hostDial(5000)
	req := vm.expect(opRequest)
	expectClosed(t, hc)
	if p := vm.expect(opRST); p.hdr.srcPort != req.hdr.srcPort {
		t.Errorf("RST %v after timeout, want for port %d", p.hdr, req.hdr.srcPort)
	}
	for _, line := range []string{"HELLO\n", "CONNECT x\n", "CONNECT 99999999999\n", "CONNECT 5000"} {
		c, err := net.Dial("unix", vm.uds)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(line))
		expectClosed(t, c)
		c.Close()
	}
	vm.expectNothing(100 * time.Millisecond)
	// The guest refuses.
	hc = vm.hostDial(5001)
	req = vm.expect(opRequest)
	vm.guestSend(guestHdr(opRST, 5001, req.hdr.srcPort), nil)
	expectClosed(t, hc)
}

func TestDataBeforeConnectLine(t *testing.T) {
	vm := newTestVM(t, harnessOpts{})
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: vm.uds, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A client may pipeline data right behind the command.
	c.Write([]byte("CONNECT 5000\nearly bytes"))
	req := vm.expect(opRequest)
	g := &gconn{vm: vm, guestPort: 5000, hostPort: req.hdr.srcPort, bufAlloc: 256 << 10}
	g.send(opResponse, 0, nil)
	if line, err := readLine(c); err != nil || line != fmt.Sprintf("OK %d", g.hostPort) {
		t.Fatalf("reply %q, %v", line, err)
	}
	if got := g.recvData(11); string(got) != "early bytes" {
		t.Fatalf("guest got %q, want early bytes", got)
	}
}

func TestManyConnections(t *testing.T) {
	vm := newTestVM(t, harnessOpts{indirect: true})
	const conns = 20
	var hcs []*net.UnixConn
	var gs []*gconn
	for i := range conns {
		hc, g := vm.hostConnect(uint32(5000+i), 256<<10)
		hcs = append(hcs, hc)
		gs = append(gs, g)
	}
	// Every host end writes at once; the guest demultiplexes by port.
	want := make([][]byte, conns)
	for i, hc := range hcs {
		want[i] = pattern(20_000, uint64(10+i))
		go hc.Write(want[i])
	}
	got := make([][]byte, conns)
	total := 0
	for total < conns*20_000 {
		p, ok := vm.guestRecv(5 * time.Second)
		if !ok {
			t.Fatalf("got %d bytes, then nothing", total)
		}
		if p.hdr.op != opRW {
			t.Fatalf("unexpected %v", p.hdr)
		}
		i := int(p.hdr.dstPort - 5000)
		if i < 0 || i >= conns || p.hdr.srcPort != gs[i].hostPort {
			t.Fatalf("packet for unknown connection: %v", p.hdr)
		}
		got[i] = append(got[i], p.payload...)
		total += len(p.payload)
		gs[i].rxCnt += uint32(len(p.payload))
		if gs[i].rxCnt-gs[i].fwdCnt > 64<<10 {
			gs[i].fwdCnt = gs[i].rxCnt
			gs[i].send(opCreditUpdate, 0, nil)
		}
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("connection %d: data differs", i)
		}
	}
}

func TestMaxConnections(t *testing.T) {
	vm := newTestVM(t, harnessOpts{devOpts: []Option{WithMaxConnections(2)}})
	vm.hostConnect(5000, 4096)
	vm.hostConnect(5001, 4096)
	c := vm.hostDial(5002)
	expectClosed(t, c)
	vm.guestSend(guestHdr(opRequest, 40000, 6000), nil)
	vm.expect(opRST)
}

// TestDriverReset: a guest reboot (or driver reload) stops the rings and
// starts them again from index 0; every connection must go.
func TestDriverReset(t *testing.T) {
	vm := newTestVM(t, harnessOpts{})
	hc, g := vm.hostConnect(5000, 256<<10)
	g.send(opRW, 0, []byte("x"))
	io.ReadFull(hc, make([]byte, 1))

	vm.stopRings()
	vm.startRings(1, [2]uint16{0, 0})
	vm.postRxBuffers()
	expectClosed(t, hc)

	hc2, g2 := vm.hostConnect(5000, 256<<10)
	if g2.hostPort == g.hostPort {
		t.Errorf("host port %d reused at once", g2.hostPort)
	}
	g2.send(opRW, 0, []byte("after reset"))
	buf := make([]byte, 11)
	if _, err := io.ReadFull(hc2, buf); err != nil || string(buf) != "after reset" {
		t.Fatalf("host read %q, %v", buf, err)
	}
}

// TestDriverResetSameAddresses: a reboot usually puts the rings where
// they were; base 0 after a non-zero base still means reset.
func TestDriverResetSameAddresses(t *testing.T) {
	vm := newTestVM(t, harnessOpts{})
	hc, _ := vm.hostConnect(5000, 256<<10)
	vm.stopRings()
	vm.startRings(0, [2]uint16{0, 0})
	vm.postRxBuffers()
	expectClosed(t, hc)
	vm.hostConnect(5000, 256<<10)
}

// TestStopCont: stopping and restarting the same rings at the returned
// bases (monitor stop/cont) keeps connections.
func TestStopCont(t *testing.T) {
	vm := newTestVM(t, harnessOpts{})
	hc, g := vm.hostConnect(5000, 256<<10)
	bases := vm.stopRings()
	if bases[rxQueue] != 1 || bases[txQueue] != 1 {
		t.Fatalf("GET_VRING_BASE = %v, want [1 1]", bases)
	}
	// Restart in place: rings keep their contents.
	for i := range 2 {
		q := vm.q[i]
		vm.sendAck(reqSetVringBase, vringStatePayload(uint32(i), uint32(bases[i])))
		var addr [vringAddrBytes]byte
		binary.LittleEndian.PutUint32(addr[:], uint32(i))
		binary.LittleEndian.PutUint64(addr[8:], testUVABase+q.layout.desc)
		binary.LittleEndian.PutUint64(addr[16:], testUVABase+q.layout.used)
		binary.LittleEndian.PutUint64(addr[24:], testUVABase+q.layout.avail)
		vm.sendAck(reqSetVringAddr, addr[:])
		vm.sendAck(reqSetVringKick, u64Payload(uint64(i)), q.kick)
		vm.sendAck(reqSetVringEnable, vringStatePayload(uint32(i), 1))
	}
	g.send(opRW, 0, []byte("still here"))
	buf := make([]byte, 10)
	if _, err := io.ReadFull(hc, buf); err != nil || string(buf) != "still here" {
		t.Fatalf("host read %q, %v", buf, err)
	}
	hc.Write([]byte("yes"))
	if got := g.recvData(3); string(got) != "yes" {
		t.Fatalf("guest got %q", got)
	}
}

// TestFrontendRestart: a new QEMU connecting replaces the old session.
func TestFrontendRestart(t *testing.T) {
	vm := newTestVM(t, harnessOpts{})
	hc, _ := vm.hostConnect(5000, 256<<10)
	old := vm.fe
	vm.connectFrontend()
	old.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := old.Read(make([]byte, 1)); err == nil {
		t.Error("old front-end connection still open")
	}
	old.Close()
	expectClosed(t, hc)
	vm.negotiate()
	vm.startRings(1, [2]uint16{0, 0})
	vm.postRxBuffers()
	vm.hostConnect(5000, 256<<10)
}

// TestFrontendDisconnect: QEMU exiting drops connections; the device
// waits for the next QEMU.
func TestFrontendDisconnect(t *testing.T) {
	vm := newTestVM(t, harnessOpts{})
	hc, _ := vm.hostConnect(5000, 256<<10)
	vm.fe.Close()
	expectClosed(t, hc)
	vm.connectFrontend()
	vm.negotiate()
	vm.startRings(0, [2]uint16{0, 0})
	vm.postRxBuffers()
	vm.hostConnect(5000, 256<<10)
}

// TestOneBytePacketsCostLittleHostMemory performs the buffering attack: a
// guest sends its whole credit as 1-byte packets to a host peer that does
// not read. The host memory this holds must stay a small multiple of the
// credit (it was about 36 times the credit, one queue entry per byte).
func TestOneBytePacketsCostLittleHostMemory(t *testing.T) {
	const buf = 64 << 10
	vm := newTestVM(t, harnessOpts{devOpts: []Option{WithBufferBytes(buf)}})
	_, g := vm.hostConnect(5000, 256<<10)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	// One byte a packet for as long as the device grants credit: the host
	// socket fills, then the device's queue holds the rest.
	for {
		if g.txCnt-g.devFwd < buf {
			g.send(opRW, 0, []byte{'x'})
			continue
		}
		p, ok := vm.guestRecv(500 * time.Millisecond)
		if !ok {
			break
		}
		if p.hdr.op == opRST {
			t.Fatalf("device reset the connection: %v", p.hdr)
		}
		g.devFwd = p.hdr.fwdCnt
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 8*buf {
		t.Errorf("one-byte packets up to a %d-byte credit grew the host heap by %d bytes, want at most %d", buf, grew, 8*buf)
	}
}
