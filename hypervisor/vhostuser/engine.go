package vhostuser

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
)

// engine owns all device state. One goroutine (run) executes everything
// that touches guest memory, the rings or the connection table; vhost-user
// sessions, kick waiters and per-connection I/O goroutines hand it work as
// closures (post, call) or through the non-blocking kick flags. That keeps
// the virtqueue code free of locks and makes the order of ring operations
// the order of events.
type engine struct {
	cid     uint64
	udsPath string
	cfg     config
	log     *slog.Logger

	events chan func() // unbuffered: a received closure is run
	kickCh chan struct{}
	kicked [numQueues]atomic.Bool
	done   chan struct{} // closed when run has returned
	wg     sync.WaitGroup

	// Owned by the run goroutine.
	mem              *guestMemory
	rings            [numQueues]*vring
	features         uint64
	protocolFeatures uint64
	broken           bool
	conns            map[connKey]*vconn
	outq             []*vconn // connections with something to tell the guest
	rsts             []header // resets answering packets for no connection
	nextPort         uint32
	txChain, rxChain chain
	freeChunks       [][]byte // recycled read chunks (see getChunk)
	internalErrors   int      // panics recovered by safely
}

func newEngine(cid uint64, udsPath string, cfg config) *engine {
	e := &engine{
		cid:      cid,
		udsPath:  udsPath,
		cfg:      cfg,
		log:      cfg.log,
		events:   make(chan func()),
		kickCh:   make(chan struct{}, 1),
		done:     make(chan struct{}),
		conns:    make(map[connKey]*vconn),
		nextPort: firstHostPort,
	}
	for i := range e.rings {
		e.rings[i] = newVring(i)
	}
	return e
}

// post hands f to the engine goroutine. It reports false once the engine
// has stopped.
func (e *engine) post(f func()) bool {
	select {
	case e.events <- f:
		return true
	case <-e.done:
		return false
	}
}

// call runs f on the engine goroutine and waits for it.
func (e *engine) call(f func()) bool {
	ran := make(chan struct{})
	if !e.post(func() { defer close(ran); f() }) {
		return false
	}
	<-ran
	return true
}

// kick marks queue i as needing service; safe from any goroutine and never
// blocks (kick waiters must not, or stopping them from the engine would
// deadlock).
func (e *engine) kick(i int) {
	e.kicked[i].Store(true)
	select {
	case e.kickCh <- struct{}{}:
	default:
	}
}

func (e *engine) run(ctx context.Context) {
	// Guest memory is a shared mapping; if the front-end shrinks the file
	// under us, a fault becomes a recoverable panic instead of a crash.
	debug.SetPanicOnFault(true)
	defer close(e.done)
	defer e.shutdown()
	for {
		select {
		case <-ctx.Done():
			return
		case f := <-e.events:
			e.safely(f)
		case <-e.kickCh:
			e.safely(e.serviceKicks)
		}
		e.safely(e.flush)
	}
}

// safely runs f and turns a panic (a bug, or a fault on guest memory) into
// a broken device rather than a dead host process.
func (e *engine) safely(f func()) {
	defer func() {
		if r := recover(); r != nil {
			e.internalErrors++
			e.log.Error("vhostuser: internal error, device stopped", "panic", r, "stack", string(debug.Stack()))
			e.breakDevice(fmt.Errorf("internal error: %v", r))
		}
	}()
	f()
}

func (e *engine) shutdown() {
	e.resetConnections()
	e.releaseRings()
	e.mem.unmap()
	e.mem = nil
}

// releaseRings stops every ring and closes its fds.
func (e *engine) releaseRings() {
	for i, r := range e.rings {
		e.stopRing(r)
		closeFD(&r.kickFD)
		closeFD(&r.callFD)
		closeFD(&r.errFD)
		e.rings[i] = newVring(i)
	}
}

// endSession forgets everything a front-end set up: the next one starts
// from scratch (QEMU restarted, so the guest did too).
func (e *engine) endSession() {
	e.resetConnections()
	e.releaseRings()
	e.mem.unmap()
	e.mem = nil
	e.features, e.protocolFeatures = 0, 0
	e.broken = false
}

func (e *engine) running(r *vring) bool {
	return !e.broken && r.started && r.enabled && r.mapped()
}

// breakDevice stops all ring processing after the guest broke the ring
// protocol. It lasts until the guest resets the device.
func (e *engine) breakDevice(err error) {
	if e.broken {
		return
	}
	e.broken = true
	e.log.Error("vhostuser: virtqueue error, device stopped until the guest resets it", "err", err)
	e.resetConnections()
	for _, r := range e.rings {
		r.signalError()
	}
}

// serviceKicks handles the queues whose kick eventfd fired.
func (e *engine) serviceKicks() {
	if e.kicked[txQueue].Swap(false) {
		e.processTx()
	}
	// An rx kick only means new buffers; flush fills them.
	e.kicked[rxQueue].Store(false)
}

// ringBudgetRounds bounds how many ring-fulls of chains one pass takes from
// either queue, so a guest that keeps the tx ring full, or keeps posting rx
// buffers while the host has output, cannot starve other events: the rest
// waits for the next pass, which a self-kick schedules.
const ringBudgetRounds = 4

func (e *engine) processTx() {
	r := e.rings[txQueue]
	if !e.running(r) {
		return
	}
	budget := ringBudgetRounds * int(r.size)
	for {
		for ; budget > 0; budget-- {
			ok, err := r.pop(e.mem, &e.txChain)
			if err != nil {
				e.breakDevice(err)
				return
			}
			if !ok {
				break
			}
			e.handleTxChain(&e.txChain)
			if e.broken {
				return
			}
			r.push(e.txChain.head, 0)
		}
		if budget == 0 {
			e.kick(txQueue)
			return
		}
		if !r.armKick() {
			return
		}
	}
}

// flush fills rx buffers with whatever is waiting for the guest and sends
// the interrupts the guest asked for.
func (e *engine) flush() {
	e.fillRx()
	for _, r := range e.rings {
		if r.started && r.mapped() && r.needsCall() {
			r.call()
		}
	}
}

func (e *engine) fillRx() {
	r := e.rings[rxQueue]
	if !e.running(r) {
		return
	}
	for budget := ringBudgetRounds * int(r.size); e.hasOutput(); budget-- {
		if budget == 0 {
			e.kick(rxQueue)
			return
		}
		ok, err := r.pop(e.mem, &e.rxChain)
		if err != nil {
			e.breakDevice(err)
			return
		}
		if !ok {
			if r.armKick() {
				continue
			}
			return
		}
		n := e.emit(&e.rxChain)
		r.push(e.rxChain.head, n)
	}
}

// hasOutput reports whether a packet is waiting for an rx buffer, dropping
// queue entries whose connection has nothing to say any more.
func (e *engine) hasOutput() bool {
	if len(e.rsts) > 0 {
		return true
	}
	for len(e.outq) > 0 {
		c := e.outq[0]
		if e.connHasOutput(c) {
			return true
		}
		c.queued = false
		e.outq = e.outq[1:]
	}
	return false
}

// emit writes the next waiting packet into an rx chain and returns the
// bytes written. Each packet fits one chain, as the guest expects.
func (e *engine) emit(ch *chain) uint32 {
	if ch.readBytes > 0 || ch.writeBytes < hdrBytes {
		// Not a receive buffer we can use; hand it back empty and
		// the guest driver drops it.
		return 0
	}
	sc := scatter{segs: ch.writable}
	var hb [hdrBytes]byte
	if len(e.rsts) > 0 {
		h := e.rsts[0]
		e.rsts = e.rsts[1:]
		h.encode(hb[:])
		sc.write(hb[:])
		return hdrBytes
	}
	c := e.outq[0]
	e.outq = e.outq[1:]
	c.queued = false
	n := e.emitConn(c, &sc, ch.writeBytes-hdrBytes)
	if e.connHasOutput(c) {
		e.want(c)
	}
	return n
}

// handleMessage executes one vhost-user message. It returns the reply
// payload for messages that have one.
func (e *engine) handleMessage(m *message) (reply []byte, hasReply bool, err error) {
	switch m.req {
	case reqGetFeatures:
		return u64Payload(offeredFeatures), true, nil
	case reqSetFeatures:
		v, err := parseU64(m.req, m.payload)
		if err != nil {
			return nil, false, err
		}
		if v&^offeredFeatures != 0 {
			return nil, false, fmt.Errorf("%v: features %#x not offered (offered %#x)", m.req, v, offeredFeatures)
		}
		e.features = v
		if v&featProtocolFeatures == 0 {
			// Without protocol features rings are enabled once started.
			for _, r := range e.rings {
				r.enabled = true
			}
		}
		return nil, false, nil
	case reqSetOwner:
		return nil, false, nil
	case reqResetOwner:
		e.resetConnections()
		for _, r := range e.rings {
			e.stopRing(r)
		}
		return nil, false, nil
	case reqSetMemTable:
		return nil, false, e.setMemTable(m)
	case reqSetVringNum:
		s, err := parseVringState(m.req, m.payload)
		if err != nil {
			return nil, false, err
		}
		r := e.rings[s.index]
		if r.started {
			return nil, false, fmt.Errorf("%v: queue %d is running", m.req, s.index)
		}
		if s.num == 0 || s.num > maxQueueSize || s.num&(s.num-1) != 0 {
			return nil, false, fmt.Errorf("%v: queue %d: size %d, want a power of two up to %d", m.req, s.index, s.num, maxQueueSize)
		}
		r.size = uint16(s.num)
		return nil, false, nil
	case reqSetVringAddr:
		a, err := parseVringAddr(m.payload)
		if err != nil {
			return nil, false, err
		}
		r := e.rings[a.index]
		r.addr, r.addrSet = a, true
		if r.started {
			if err := r.mapRings(e.mem); err != nil {
				e.breakDevice(err)
				return nil, false, err
			}
		}
		return nil, false, nil
	case reqSetVringBase:
		s, err := parseVringState(m.req, m.payload)
		if err != nil {
			return nil, false, err
		}
		r := e.rings[s.index]
		if r.started {
			return nil, false, fmt.Errorf("%v: queue %d is running", m.req, s.index)
		}
		if s.num > 0xffff {
			return nil, false, fmt.Errorf("%v: queue %d: base %d over 16 bits (packed rings are not offered)", m.req, s.index, s.num)
		}
		r.base = uint16(s.num)
		return nil, false, nil
	case reqGetVringBase:
		s, err := parseVringState(m.req, m.payload)
		if err != nil {
			return nil, false, err
		}
		r := e.rings[s.index]
		base := e.stopRing(r)
		r.stopped, r.stoppedBase, r.stoppedAddr = true, base, r.addr
		return vringState{s.index, uint32(base)}.bytes(), true, nil
	case reqSetVringKick:
		return nil, false, e.setVringKick(m)
	case reqSetVringCall, reqSetVringErr:
		v, err := parseU64(m.req, m.payload)
		if err != nil {
			return nil, false, err
		}
		idx := v & vringIndexMask
		if idx >= numQueues {
			return nil, false, fmt.Errorf("%v: queue %d, have %d", m.req, idx, numQueues)
		}
		fd := -1
		if v&vringNoFD == 0 {
			if fd, err = m.takeFD(); err != nil {
				return nil, false, err
			}
		}
		r := e.rings[idx]
		if m.req == reqSetVringCall {
			closeFD(&r.callFD)
			r.callFD = fd
			r.signalledValid = false
		} else {
			closeFD(&r.errFD)
			r.errFD = fd
		}
		return nil, false, nil
	case reqGetProtocolFeatures:
		return u64Payload(offeredProtocolFeatures), true, nil
	case reqSetProtocolFeatures:
		v, err := parseU64(m.req, m.payload)
		if err != nil {
			return nil, false, err
		}
		if v&^offeredProtocolFeatures != 0 {
			return nil, false, fmt.Errorf("%v: protocol features %#x not offered (offered %#x)", m.req, v, offeredProtocolFeatures)
		}
		e.protocolFeatures = v
		return nil, false, nil
	case reqGetQueueNum:
		return u64Payload(numQueues), true, nil
	case reqSetVringEnable:
		s, err := parseVringState(m.req, m.payload)
		if err != nil {
			return nil, false, err
		}
		if s.num > 1 {
			return nil, false, fmt.Errorf("%v: queue %d: state %d, want 0 or 1", m.req, s.index, s.num)
		}
		e.rings[s.index].enabled = s.num == 1
		if s.num == 1 {
			e.kick(int(s.index))
		}
		return nil, false, nil
	case reqGetConfig:
		h, _, err := parseConfig(m.req, m.payload)
		if err != nil {
			// An empty config answer makes QEMU fail the read cleanly.
			return make([]byte, configHeaderBytes), true, err
		}
		reply := make([]byte, configHeaderBytes+int(h.size))
		copy(reply, m.payload[:configHeaderBytes])
		var space [8]byte // struct virtio_vsock_config
		binary.LittleEndian.PutUint64(space[:], e.cid)
		if uint64(h.offset) < uint64(len(space)) {
			copy(reply[configHeaderBytes:], space[h.offset:])
		}
		return reply, true, nil
	case reqSetConfig:
		return nil, false, fmt.Errorf("%v: the vsock config space is read-only", m.req)
	}
	return nil, false, fmt.Errorf("%v: not supported", m.req)
}

func (e *engine) setMemTable(m *message) error {
	regions, err := parseMemTable(m.payload)
	if err != nil {
		return err
	}
	mem, err := mapGuestMemory(regions, m.fds)
	if err != nil {
		return err
	}
	old := e.mem
	e.mem = mem
	for _, r := range e.rings {
		if r.started {
			if err := r.mapRings(mem); err != nil {
				r.unmapRings()
				e.breakDevice(err)
			}
		}
	}
	old.unmap()
	return nil
}

var errPollingMode = errors.New("kick without an fd (polling mode) is not supported")

func (e *engine) setVringKick(m *message) error {
	v, err := parseU64(m.req, m.payload)
	if err != nil {
		return err
	}
	idx := int(v & vringIndexMask)
	if idx >= numQueues {
		return fmt.Errorf("%v: queue %d, have %d", m.req, idx, numQueues)
	}
	if v&vringNoFD != 0 {
		return fmt.Errorf("%v: queue %d: %w", m.req, idx, errPollingMode)
	}
	fd, err := m.takeFD()
	if err != nil {
		return err
	}
	r := e.rings[idx]
	if r.waiter != nil {
		r.waiter.stop()
		r.waiter = nil
	}
	closeFD(&r.kickFD)
	r.kickFD = fd
	if !r.started {
		if err := e.startRing(r); err != nil {
			return fmt.Errorf("%v: %w", m.req, err)
		}
	}
	w, err := startKickWaiter(r.kickFD, func() { e.kick(idx) })
	if err != nil {
		return fmt.Errorf("%v: queue %d: %w", m.req, idx, err)
	}
	r.waiter = w
	e.kick(idx) // buffers may have been added before we watched
	return nil
}

// startRing starts processing a ring. There is no reset message in
// vhost-user: a guest driver reset shows up as rings stopped with
// GET_VRING_BASE and started again from a different base or at different
// addresses, and then every connection the old driver knew is gone.
func (e *engine) startRing(r *vring) error {
	if e.mem == nil {
		return fmt.Errorf("queue %d: %w", r.index, errNoMemory)
	}
	if e.broken || (r.stopped && (r.base != r.stoppedBase || r.addr != r.stoppedAddr)) {
		e.log.Info("vhostuser: guest reset the device", "queue", r.index)
		e.resetConnections()
		e.broken = false
		for _, o := range e.rings {
			o.stopped = false
		}
	}
	r.stopped = false
	if err := r.mapRings(e.mem); err != nil {
		e.breakDevice(err)
		return err
	}
	r.eventIdx = e.features&featEventIdx != 0
	r.indirect = e.features&featIndirectDesc != 0
	r.lastAvail = r.base
	r.usedIdx = load16(r.used, 2)
	r.pushed, r.signalledValid = false, false
	r.started = true
	if e.features&featProtocolFeatures == 0 {
		r.enabled = true
	}
	return nil
}

// stopRing stops processing and returns the next avail index. Every chain
// taken from the ring has been returned by then: the engine never holds a
// chain across events.
func (e *engine) stopRing(r *vring) uint16 {
	if r.waiter != nil {
		r.waiter.stop()
		r.waiter = nil
	}
	if !r.started {
		return r.base
	}
	r.started = false
	r.base = r.lastAvail
	r.unmapRings()
	return r.base
}
