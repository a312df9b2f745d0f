package vhostuser

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

type connState int

const (
	// stateConnecting: host-initiated, REQUEST queued or sent, waiting for
	// the guest's RESPONSE.
	stateConnecting connState = iota
	// stateDialing: guest-initiated, dialing <uds>_<port> on the host.
	stateDialing
	stateEstablished
	stateClosed
)

// Host-side ports for host-initiated connections come from [1<<30, 1<<31),
// as in Firecracker, so they do not collide with ports guests listen on.
const (
	firstHostPort = 1 << 30
	endHostPort   = 1 << 31
)

// maxPendingRSTs bounds the resets queued for packets that name no
// connection; a guest flooding such packets loses some answers, not memory.
const maxPendingRSTs = 1024

// Host bytes bound for the guest are read into chunks of readChunkBytes
// that the engine recycles (at most maxFreeChunks kept): at hundreds of MB/s
// a fresh buffer per read costs zeroing and garbage collection that the
// host CPU, shared with the VM's own threads, is better spent on.
const (
	readChunkBytes = 64 << 10
	maxFreeChunks  = 32
)

// chunk is one read from a host socket, waiting to be sent to the guest.
type chunk struct {
	buf  []byte // the whole chunk, for recycling
	data []byte // the bytes not sent yet, a part of buf
}

type connKey struct {
	hostPort, guestPort uint32
}

// vconn is one vsock stream between a guest port and a host Unix socket.
// Fields are owned by the engine goroutine, except uds, grant, done and wq,
// which the connection's reader and writer goroutines use.
type vconn struct {
	key   connKey
	state connState
	uds   net.Conn
	r     io.Reader // reads uds, through the handshake buffer if any
	done  chan struct{}
	timer *time.Timer

	// What the guest still has to be told.
	queued       bool
	sendRequest  bool
	sendResponse bool
	sendCredit   bool

	// Host to guest: bytes read from uds, waiting for the guest's credit.
	peerBufAlloc uint32
	peerFwdCnt   uint32
	txCnt        uint32 // bytes sent to the guest
	pend         []chunk
	pendBytes    int
	readerIdle   bool // the reader waits for a grant
	hostEOF      bool
	shutdownSent bool

	// Guest to host: bytes the guest sent, queued for uds.
	rxCnt            uint32 // bytes received from the guest
	fwdCnt           uint32 // bytes written to uds
	lastSentFwd      uint32 // fwdCnt as last told to the guest
	guestShut        uint32 // SHUTDOWN flags received
	closeWriteQueued bool
	writeClosed      bool
	grant            chan []byte // a chunk to read into
	wq               writeQueue
}

func newConn(key connKey) *vconn {
	return &vconn{
		key:   key,
		done:  make(chan struct{}),
		grant: make(chan []byte, 1),
		wq:    writeQueue{wake: make(chan struct{}, 1)},
	}
}

// coalesceBytes is the most guest data one write-queue item gathers from
// consecutive packets: large enough that queued bytes dominate per-item
// overhead, small enough to stay one modest allocation.
const coalesceBytes = 64 << 10

// writeQueue carries guest data to the connection's writer goroutine.
type writeQueue struct {
	mu    sync.Mutex
	items []writeItem
	wake  chan struct{}
}

type writeItem struct {
	data       []byte
	counted    bool // guest payload, counted in fwd_cnt once written
	closeWrite bool // half-close uds after everything before it
}

func (q *writeQueue) push(it writeItem) {
	q.mu.Lock()
	// Guest payloads are private copies, so a small one joins the data
	// item before it: a guest sending 1-byte packets to a host peer that
	// does not read would otherwise cost a queue entry and an allocation
	// per byte of its credit (36 times the credit in host memory).
	if n := len(q.items); n > 0 && it.counted && q.items[n-1].counted && len(q.items[n-1].data)+len(it.data) <= coalesceBytes {
		q.items[n-1].data = append(q.items[n-1].data, it.data...)
	} else {
		q.items = append(q.items, it)
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *writeQueue) take() []writeItem {
	q.mu.Lock()
	items := q.items
	q.items = nil
	q.mu.Unlock()
	return items
}

func (e *engine) want(c *vconn) {
	if !c.queued && c.state != stateClosed {
		c.queued = true
		e.outq = append(e.outq, c)
	}
}

// credit is how many more bytes the guest can take on c.
func credit(c *vconn) int64 {
	inFlight := int64(c.txCnt - c.peerFwdCnt)
	return max(int64(c.peerBufAlloc)-inFlight, 0)
}

func (e *engine) shutdownDue(c *vconn) bool {
	return c.state == stateEstablished && c.hostEOF && c.pendBytes == 0 && !c.shutdownSent
}

func (e *engine) connHasOutput(c *vconn) bool {
	switch c.state {
	case stateConnecting:
		return c.sendRequest
	case stateEstablished:
		return c.sendResponse || c.sendCredit || (c.pendBytes > 0 && credit(c) > 0) || e.shutdownDue(c)
	}
	return false
}

// emitConn writes c's next packet into sc, which has room for a header and
// up to room payload bytes. It returns the bytes written.
func (e *engine) emitConn(c *vconn, sc *scatter, room uint64) uint32 {
	h := header{
		srcCID: hostCID, dstCID: e.cid,
		srcPort: c.key.hostPort, dstPort: c.key.guestPort,
		typ: typeStream, bufAlloc: e.cfg.bufBytes, fwdCnt: c.fwdCnt,
	}
	data := int64(min(uint64(c.pendBytes), room, maxPacketPayloadBytes))
	data = min(data, credit(c))
	switch {
	case c.state == stateConnecting && c.sendRequest:
		h.op, c.sendRequest = opRequest, false
	case c.state != stateEstablished:
		return 0
	case c.sendResponse:
		h.op, c.sendResponse = opResponse, false
	case data > 0:
		h.op, h.len = opRW, uint32(data)
	case e.shutdownDue(c):
		h.op, h.flags, c.shutdownSent = opShutdown, shutdownSend, true
	case c.sendCredit:
		h.op = opCreditUpdate
	default:
		return 0
	}
	c.sendCredit = false // every packet carries our credit
	c.lastSentFwd = c.fwdCnt
	var hb [hdrBytes]byte
	h.encode(hb[:])
	sc.write(hb[:])
	if h.op == opRW {
		left := int(h.len)
		for left > 0 {
			ch := &c.pend[0]
			n := sc.write(ch.data[:min(left, len(ch.data))])
			if n == 0 {
				break // cannot happen: room was checked
			}
			left -= n
			c.pendBytes -= n
			ch.data = ch.data[n:]
			if len(ch.data) == 0 {
				e.putChunk(ch.buf)
				c.pend[0] = chunk{}
				c.pend = c.pend[1:]
			}
		}
		c.txCnt += h.len
		e.pump(c)
	}
	return hdrBytes + h.len
}

// pump lets the reader take more host bytes while less than our buffer
// size waits. It reads ahead of the guest's credit on purpose: when a
// credit update arrives the bytes are already here and go into rx buffers
// at once, instead of after a round trip through the reader (the guest,
// meanwhile, would sit idle with an empty socket).
//
// Unless nothing waits, it lets the room grow to a good part of a chunk
// first: every read is two goroutine hand-offs, so a few bytes per read
// would cost more than they move.
func (e *engine) pump(c *vconn) {
	if c.state != stateEstablished || !c.readerIdle || c.hostEOF || c.guestShut&shutdownRcv != 0 {
		return
	}
	room := int(e.cfg.bufBytes) - c.pendBytes
	if room <= 0 || (c.pendBytes > 0 && room < min(readChunkBytes, int(e.cfg.bufBytes)/2)) {
		return
	}
	c.readerIdle = false
	c.grant <- e.getChunk()[:min(room, readChunkBytes)] // never blocks: one grant outstanding at most
}

// getChunk returns a buffer of readChunkBytes for a host read.
func (e *engine) getChunk() []byte {
	if n := len(e.freeChunks); n > 0 {
		b := e.freeChunks[n-1]
		e.freeChunks[n-1] = nil
		e.freeChunks = e.freeChunks[:n-1]
		return b
	}
	return make([]byte, readChunkBytes)
}

// putChunk recycles a chunk nobody uses any more.
func (e *engine) putChunk(b []byte) {
	if cap(b) == readChunkBytes && len(e.freeChunks) < maxFreeChunks {
		e.freeChunks = append(e.freeChunks, b[:readChunkBytes])
	}
}

// dropPending forgets the host bytes c has not sent.
func (e *engine) dropPending(c *vconn) {
	for _, ch := range c.pend {
		e.putChunk(ch.buf)
	}
	c.pend, c.pendBytes = nil, 0
}

// dropConn forgets c and closes its host socket; with rst the guest is
// told (unless it never heard of the connection).
func (e *engine) dropConn(c *vconn, rst bool) {
	if c.state == stateClosed {
		return
	}
	if rst && !(c.state == stateConnecting && c.sendRequest) {
		e.queueRST(c.key)
	}
	c.state = stateClosed
	e.dropPending(c)
	delete(e.conns, c.key)
	close(c.done)
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.uds != nil {
		c.uds.Close()
	}
}

func (e *engine) queueRST(k connKey) {
	if len(e.rsts) >= maxPendingRSTs {
		return
	}
	e.rsts = append(e.rsts, header{
		srcCID: hostCID, dstCID: e.cid,
		srcPort: k.hostPort, dstPort: k.guestPort,
		typ: typeStream, op: opRST,
	})
}

// rstReply answers a packet that names no connection (or no valid one).
func (e *engine) rstReply(h header) {
	if h.op == opRST || len(e.rsts) >= maxPendingRSTs {
		return
	}
	e.rsts = append(e.rsts, header{
		srcCID: h.dstCID, dstCID: e.cid,
		srcPort: h.dstPort, dstPort: h.srcPort,
		typ: h.typ, op: opRST,
	})
}

// resetConnections drops every connection without telling the guest (its
// driver is gone or being replaced).
func (e *engine) resetConnections() {
	for _, c := range e.conns {
		e.dropConn(c, false)
	}
	e.outq = nil
	e.rsts = nil
}

func (e *engine) handleTxChain(ch *chain) {
	p, err := parseTxPacket(ch.readable, ch.readBytes)
	if err == nil {
		e.handlePacket(p)
		return
	}
	var pe *packetError
	if !errors.As(err, &pe) || pe.hdr.srcCID != e.cid {
		e.log.Debug("vhostuser: dropping tx packet", "err", err)
		return
	}
	e.log.Info("vhostuser: bad packet from guest, resetting", "err", err)
	if c := e.conns[connKey{pe.hdr.dstPort, pe.hdr.srcPort}]; c != nil {
		e.dropConn(c, true)
		return
	}
	e.rstReply(pe.hdr)
}

// handlePacket runs the connection state machine for one guest packet.
func (e *engine) handlePacket(p txPacket) {
	h := p.hdr
	if h.srcCID != e.cid {
		// A spoofed source has no one to answer to.
		e.log.Debug("vhostuser: dropping packet with foreign source", "hdr", h.String())
		return
	}
	if h.dstCID != hostCID || h.typ != typeStream {
		e.rstReply(h)
		return
	}
	key := connKey{hostPort: h.dstPort, guestPort: h.srcPort}
	c := e.conns[key]
	if c == nil {
		switch h.op {
		case opRequest:
			e.guestConnect(h)
		case opRST:
		default:
			e.rstReply(h)
		}
		return
	}
	switch c.state {
	case stateConnecting:
		switch h.op {
		case opResponse:
			c.peerBufAlloc, c.peerFwdCnt, c.txCnt = h.bufAlloc, h.fwdCnt, h.fwdCnt
			c.state = stateEstablished
			c.timer.Stop()
			c.wq.push(writeItem{data: fmt.Appendf(nil, "OK %d\n", c.key.hostPort)})
			e.startIO(c)
		case opRST:
			e.dropConn(c, false)
		default:
			e.log.Info("vhostuser: unexpected packet while connecting", "hdr", h.String())
			e.dropConn(c, true)
		}
	case stateDialing:
		// The guest may give up (RST) while we dial; anything else
		// before our RESPONSE breaks the protocol.
		e.dropConn(c, h.op != opRST)
	case stateEstablished:
		if h.op == opRST {
			e.dropConn(c, false)
			return
		}
		if !e.updateCredit(c, h) {
			return
		}
		switch h.op {
		case opRW:
			e.guestData(c, p.payload)
		case opCreditUpdate:
		case opCreditRequest:
			c.sendCredit = true
			e.want(c)
		case opShutdown:
			e.guestShutdown(c, h.flags&shutdownBoth)
		default:
			e.log.Info("vhostuser: unexpected packet on an open connection", "hdr", h.String())
			e.dropConn(c, true)
		}
	}
}

// updateCredit takes the guest's buf_alloc and fwd_cnt. A fwd_cnt that
// claims more bytes consumed than were ever sent is a lie: reset.
func (e *engine) updateCredit(c *vconn, h header) bool {
	if h.fwdCnt-c.peerFwdCnt > c.txCnt-c.peerFwdCnt {
		e.log.Info("vhostuser: guest fwd_cnt ahead of data sent, resetting", "hdr", h.String(), "tx_cnt", c.txCnt)
		e.dropConn(c, true)
		return false
	}
	c.peerBufAlloc, c.peerFwdCnt = h.bufAlloc, h.fwdCnt
	if c.pendBytes > 0 && credit(c) > 0 {
		e.want(c)
	}
	e.pump(c)
	return true
}

func (e *engine) guestData(c *vconn, payload []byte) {
	if len(payload) == 0 {
		return
	}
	if c.guestShut&shutdownSend != 0 {
		e.log.Info("vhostuser: guest sent data after SHUTDOWN, resetting", "port", c.key.guestPort)
		e.dropConn(c, true)
		return
	}
	if uint64(c.rxCnt-c.fwdCnt)+uint64(len(payload)) > uint64(e.cfg.bufBytes) {
		e.log.Info("vhostuser: guest overran its credit, resetting", "port", c.key.guestPort, "buffered", c.rxCnt-c.fwdCnt, "len", len(payload))
		e.dropConn(c, true)
		return
	}
	c.rxCnt += uint32(len(payload))
	c.wq.push(writeItem{data: payload, counted: true})
	// Bytes written since our last word may be all the guest can use
	// now that its view of our free space shrank.
	e.maybeCreditUpdate(c)
}

func (e *engine) guestShutdown(c *vconn, flags uint32) {
	c.guestShut |= flags
	if flags&shutdownRcv != 0 {
		e.dropPending(c)
		if cr, ok := c.uds.(interface{ CloseRead() error }); ok {
			cr.CloseRead() // host writers get EPIPE, as on a socket
		}
	}
	if flags&shutdownSend != 0 && !c.closeWriteQueued {
		c.closeWriteQueued = true
		c.wq.push(writeItem{closeWrite: true})
	}
	e.maybeFinish(c)
}

// maybeFinish ends a connection the guest closed both ways once its data
// reached the host: the guest waits for our RST to complete its close.
func (e *engine) maybeFinish(c *vconn) {
	if c.state == stateEstablished && c.guestShut == shutdownBoth && c.writeClosed {
		e.dropConn(c, true)
	}
}

// maybeCreditUpdate tells the guest about consumed bytes once its view of
// our free space drops below half, so it never stalls on stale credit.
func (e *engine) maybeCreditUpdate(c *vconn) {
	if c.fwdCnt == c.lastSentFwd {
		return
	}
	if free := int64(e.cfg.bufBytes) - int64(c.rxCnt-c.lastSentFwd); free < int64(e.cfg.bufBytes/2) {
		c.sendCredit = true
		e.want(c)
	}
}

func (e *engine) onWritten(c *vconn, n int, err error) {
	if c.state != stateEstablished {
		return
	}
	if err != nil {
		e.log.Debug("vhostuser: host socket write failed, resetting", "port", c.key.guestPort, "err", err)
		e.dropConn(c, true)
		return
	}
	c.fwdCnt += uint32(n)
	e.maybeCreditUpdate(c)
}

func (e *engine) onCloseWrite(c *vconn, err error) {
	if c.state != stateEstablished {
		return
	}
	if err != nil {
		e.dropConn(c, true)
		return
	}
	c.writeClosed = true
	e.maybeFinish(c)
}

// onHostData takes what the reader read into the granted chunk b.
func (e *engine) onHostData(c *vconn, b []byte, n int, err error) {
	if c.state != stateEstablished || n == 0 || c.guestShut&shutdownRcv != 0 {
		e.putChunk(b)
	} else {
		c.pend = append(c.pend, chunk{buf: b, data: b[:n]})
		c.pendBytes += n
		e.want(c)
	}
	if c.state != stateEstablished {
		return
	}
	switch {
	case err == nil:
		c.readerIdle = true
		e.pump(c)
	case errors.Is(err, io.EOF):
		c.hostEOF = true
		e.want(c)
	default:
		e.log.Debug("vhostuser: host socket read failed, resetting", "port", c.key.guestPort, "err", err)
		e.dropConn(c, true)
	}
}

// startIO starts the goroutines that move bytes between c's host socket
// and the engine.
func (e *engine) startIO(c *vconn) {
	c.readerIdle = true
	e.wg.Add(2)
	go e.writer(c)
	go e.reader(c)
	e.pump(c)
}

func (e *engine) reader(c *vconn) {
	defer e.wg.Done()
	for {
		var buf []byte
		select {
		case buf = <-c.grant:
		case <-c.done:
			return
		}
		n, err := c.r.Read(buf)
		if !e.post(func() { e.onHostData(c, buf, n, err) }) || err != nil {
			return
		}
	}
}

func (e *engine) writer(c *vconn) {
	defer e.wg.Done()
	for {
		items := c.wq.take()
		if len(items) == 0 {
			select {
			case <-c.wq.wake:
				continue
			case <-c.done:
				return
			}
		}
		for len(items) > 0 {
			if items[0].closeWrite {
				var err error
				if cw, ok := c.uds.(interface{ CloseWrite() error }); ok {
					err = cw.CloseWrite()
				}
				items = items[1:]
				if !e.post(func() { e.onCloseWrite(c, err) }) {
					return
				}
				continue
			}
			// Write a run of data items with one writev.
			var bufs net.Buffers
			counted := 0
			for len(items) > 0 && !items[0].closeWrite {
				bufs = append(bufs, items[0].data)
				if items[0].counted {
					counted += len(items[0].data)
				}
				items = items[1:]
			}
			_, err := bufs.WriteTo(c.uds)
			if !e.post(func() { e.onWritten(c, counted, err) }) || err != nil {
				return
			}
		}
	}
}

// hostConnect starts a host-initiated connection to guest port port; uds
// has sent its CONNECT line and r holds whatever followed it.
func (e *engine) hostConnect(uds net.Conn, r io.Reader, port uint32) {
	if e.broken || len(e.conns) >= e.cfg.maxConns {
		e.log.Info("vhostuser: refusing host connection", "port", port, "broken", e.broken, "connections", len(e.conns))
		uds.Close()
		return
	}
	key, ok := e.allocHostPort(port)
	if !ok {
		uds.Close()
		return
	}
	c := newConn(key)
	c.uds, c.r = uds, r
	c.state = stateConnecting
	c.sendRequest = true
	e.conns[key] = c
	e.want(c)
	c.timer = time.AfterFunc(e.cfg.connectTimeout, func() {
		e.post(func() {
			if c.state == stateConnecting {
				e.log.Info("vhostuser: guest did not answer a connection request", "port", port, "timeout", e.cfg.connectTimeout)
				e.dropConn(c, true)
			}
		})
	})
}

func (e *engine) allocHostPort(guestPort uint32) (connKey, bool) {
	for range e.cfg.maxConns + 1 {
		p := e.nextPort
		e.nextPort++
		if e.nextPort >= endHostPort {
			e.nextPort = firstHostPort
		}
		k := connKey{hostPort: p, guestPort: guestPort}
		if _, used := e.conns[k]; !used {
			return k, true
		}
	}
	return connKey{}, false
}

// guestConnect handles a guest REQUEST for host port h.dstPort: it dials
// <uds>_<port> and answers RESPONSE, or RST when nobody listens.
func (e *engine) guestConnect(h header) {
	if len(e.conns) >= e.cfg.maxConns {
		e.log.Info("vhostuser: refusing guest connection: too many connections", "port", h.dstPort)
		e.rstReply(h)
		return
	}
	key := connKey{hostPort: h.dstPort, guestPort: h.srcPort}
	c := newConn(key)
	c.state = stateDialing
	c.peerBufAlloc, c.peerFwdCnt, c.txCnt = h.bufAlloc, h.fwdCnt, h.fwdCnt
	e.conns[key] = c
	path := fmt.Sprintf("%s_%d", e.udsPath, h.dstPort)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		d := net.Dialer{Timeout: e.cfg.connectTimeout}
		uds, err := d.Dial("unix", path)
		if !e.post(func() { e.dialed(c, uds, err) }) && uds != nil {
			uds.Close()
		}
	}()
}

func (e *engine) dialed(c *vconn, uds net.Conn, err error) {
	if c.state != stateDialing {
		if uds != nil {
			uds.Close()
		}
		return
	}
	if err != nil {
		e.log.Debug("vhostuser: guest connection refused on the host", "port", c.key.hostPort, "err", err)
		e.dropConn(c, true)
		return
	}
	c.uds, c.r = uds, uds
	c.state = stateEstablished
	c.sendResponse = true
	e.want(c)
	e.startIO(c)
}
