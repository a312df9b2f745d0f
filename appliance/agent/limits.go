package agent

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// Bounds on what a peer can make the agent hold. The agent runs in PID 1
// and listens on the LAN (Pi) and on vsock, which every container can
// reach, so what an unauthenticated peer costs must be small and bounded:
// each connection is counted from Accept until it closes, and a request's
// headers are limited before the bearer token is even looked at.
const (
	// maxHeaderBytes bounds a request line and its headers. The largest
	// header of the protocol is the bearer token (under 100 bytes), so
	// 16 KiB is ample; net/http's default (1 MiB) let 200 peers make PID 1
	// hold 200 MiB. net/http answers 431 beyond it (it reads at most
	// 4 KiB more before deciding).
	maxHeaderBytes = 16 << 10

	// readHeaderTimeout bounds the TLS handshake and the request headers
	// (slowloris): a connection that has not sent its headers by then is
	// closed, which frees its unauthenticated slot.
	readHeaderTimeout = 10 * time.Second
	// idleTimeout closes keep-alive connections between requests. There
	// is no write timeout: log follows and update uploads legitimately
	// last long, and request contexts end when the client goes away.
	idleTimeout = 2 * time.Minute

	// maxPendingConns bounds the connections that have not yet carried
	// an authenticated request, over all listeners of one Agent. Each
	// costs at most about maxHeaderBytes plus buffers (TLS record, bufio,
	// goroutine): a few tens of KiB, so 64 of them stay within a few MiB
	// of PID 1's heap. A legitimate client needs one or two at a time; a
	// connection leaves this pool with its first authenticated request.
	maxPendingConns = 64
	// maxPendingConnsPerPeer bounds one peer's share of maxPendingConns,
	// so that one peer alone cannot fill the pool. When the pool is full
	// anyway (several peers), a peer holding fewer connections than the
	// heaviest one takes the heaviest one's oldest connection, so no
	// group of peers can starve a newcomer (see connLimiter.admit).
	maxPendingConnsPerPeer = 16
	// maxAuthorizedConns bounds connections that carried an authenticated
	// request (log followers, uploads, keep-alive clients). Only a token
	// holder can open them, so the bound is about file descriptors and
	// mistakes, not attacks: 256 leaves room for 100 log followers and
	// stays well below PID 1's descriptor limit. Beyond it a connection
	// stays counted as pending.
	maxAuthorizedConns = 256

	// ipv6PeerPrefixBits is how much of an IPv6 address names a peer: a
	// host on a LAN picks any address in its /64 at will.
	ipv6PeerPrefixBits = 64

	// peerLogLines lines of each kind per peerLogInterval is the most
	// that peers without a token can make the agent log (refused
	// connections, failed handshakes, requests without a token), so that
	// a flood does not flood init's log too; the next line of a kind that
	// passes counts the ones left out. A kind is a format string of the
	// code, so there are a handful.
	peerLogLines    = 5
	peerLogInterval = 10 * time.Second
)

// connLimiter counts an Agent's connections over all its listeners and
// refuses those over the bounds above. Its listener admits a connection
// at Accept; the HTTP server's ConnState hook releases it; authorize moves
// it from the pending to the authorized pool. A refused connection is
// closed at once, before any TLS handshake or read.
type connLimiter struct {
	maxPending, maxPendingPerPeer, maxAuthorized int
	// log is where lines that any peer can cause go.
	log *logThrottle

	mu         sync.Mutex
	conns      map[net.Conn]*trackedConn
	peers      map[string][]*trackedConn // pending connections per peer, oldest first
	pending    int
	authorized int
	seq        uint64
}

// trackedConn is one admitted connection.
type trackedConn struct {
	conn       net.Conn
	peer       string
	seq        uint64 // accept order, to find the oldest
	authorized bool
}

func newConnLimiter(logf func(format string, args ...any)) *connLimiter {
	return &connLimiter{
		maxPending: maxPendingConns, maxPendingPerPeer: maxPendingConnsPerPeer, maxAuthorized: maxAuthorizedConns,
		log:   &logThrottle{logf: logf},
		conns: map[net.Conn]*trackedConn{},
		peers: map[string][]*trackedConn{},
	}
}

// listener wraps l so that Accept returns only admitted connections.
func (cl *connLimiter) listener(l net.Listener) net.Listener {
	return limitedListener{Listener: l, limiter: cl}
}

// limitedListener closes connections over the limits as it accepts them.
type limitedListener struct {
	net.Listener
	limiter *connLimiter
}

// Accept returns the next admitted connection; refused ones are closed
// and never reach the HTTP server.
func (l limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.limiter.admit(c) {
			return c, nil
		}
	}
}

// admit counts c as pending, or closes it. When the pending pool is full,
// a peer with fewer pending connections than the heaviest peer takes the
// heaviest peer's oldest one: unauthenticated connections are worth the
// same from anyone, and this way holding many does not lock others out.
func (cl *connLimiter) admit(c net.Conn) bool {
	peer := peerKey(c.RemoteAddr())
	cl.mu.Lock()
	var victim *trackedConn
	refuse := ""
	switch n := len(cl.peers[peer]); {
	case n >= cl.maxPendingPerPeer:
		refuse = fmt.Sprintf("refused a connection from %s: it has %d unauthenticated connections, the most one peer may have", peer, n)
	case cl.pending >= cl.maxPending:
		victim = cl.heaviestOldest()
		if victim == nil || len(cl.peers[victim.peer]) <= n {
			victim = nil
			refuse = fmt.Sprintf("refused a connection from %s: %d unauthenticated connections, the most allowed, and no peer holds more than it", peer, cl.pending)
		} else {
			cl.removePending(victim)
		}
	}
	if refuse == "" {
		cl.seq++
		t := &trackedConn{conn: c, peer: peer, seq: cl.seq}
		cl.conns[c] = t
		cl.peers[peer] = append(cl.peers[peer], t)
		cl.pending++
	}
	var victimOf int
	if victim != nil {
		victimOf = len(cl.peers[victim.peer]) + 1
	}
	cl.mu.Unlock()

	if victim != nil {
		// Its server goroutine ends; state finds nothing left to count.
		// The bare connection is closed: a TLS close would first send an
		// alert, which could block this accept loop on a stalled peer.
		bareConn(victim.conn).Close()
		cl.log.printf("agent: closed the oldest of %d unauthenticated connections from %s to admit one from %s", victimOf, victim.peer, peer)
	}
	if refuse != "" {
		c.Close()
		cl.log.printf("agent: %s", refuse)
		return false
	}
	return true
}

// bareConn returns the connection under any TLS (or other wrapper that
// has a NetConn method).
func bareConn(c net.Conn) net.Conn {
	for {
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return c
		}
		c = w.NetConn()
	}
}

// heaviestOldest returns the oldest pending connection of the peer with
// the most pending connections (ties: the peer whose oldest is oldest).
func (cl *connLimiter) heaviestOldest() *trackedConn {
	var best *trackedConn
	bestN := 0
	for _, ts := range cl.peers {
		if len(ts) > bestN || (len(ts) == bestN && best != nil && ts[0].seq < best.seq) {
			best, bestN = ts[0], len(ts)
		}
	}
	return best
}

// removePending forgets a pending connection.
func (cl *connLimiter) removePending(t *trackedConn) {
	delete(cl.conns, t.conn)
	ts := cl.peers[t.peer]
	for i, x := range ts {
		if x == t {
			ts = append(ts[:i:i], ts[i+1:]...)
			break
		}
	}
	if len(ts) == 0 {
		delete(cl.peers, t.peer)
	} else {
		cl.peers[t.peer] = ts
	}
	cl.pending--
}

// logThrottle passes at most peerLogLines lines of each format per
// peerLogInterval to logf and counts the others; the next line of that
// format that passes says how many were left out.
type logThrottle struct {
	logf func(format string, args ...any)

	mu    sync.Mutex
	kinds map[string]*logBudget // by format string
}

// logBudget is what one kind of line has spent.
type logBudget struct {
	since   time.Time // start of the current interval
	lines   int       // lines passed in it
	dropped int       // lines left out since the last that passed
}

// printf logs like logf unless this format's budget of the interval is
// spent.
func (lt *logThrottle) printf(format string, args ...any) {
	lt.mu.Lock()
	if lt.kinds == nil {
		lt.kinds = map[string]*logBudget{}
	}
	b := lt.kinds[format]
	if b == nil {
		b = &logBudget{}
		lt.kinds[format] = b
	}
	now := time.Now()
	if now.Sub(b.since) >= peerLogInterval {
		b.since, b.lines = now, 0
	}
	if b.lines >= peerLogLines {
		b.dropped++
		lt.mu.Unlock()
		return
	}
	b.lines++
	dropped := b.dropped
	b.dropped = 0
	lt.mu.Unlock()
	if dropped > 0 {
		format += " (and %d like it left out before)"
		args = append(args, dropped)
	}
	lt.logf(format, args...)
}

// state is the HTTP server's ConnState hook: a closed (or hijacked)
// connection leaves the count.
func (cl *connLimiter) state(c net.Conn, s http.ConnState) {
	if s != http.StateClosed && s != http.StateHijacked {
		return
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	t, ok := cl.conns[c]
	if !ok {
		return // evicted, or not from a limited listener
	}
	if t.authorized {
		delete(cl.conns, c)
		cl.authorized--
		return
	}
	cl.removePending(t)
}

// connKey is the request context key of the connection (ConnContext).
type connKey struct{}

// context is the HTTP server's ConnContext hook: requests carry their
// connection so that authorize can find it.
func (cl *connLimiter) context(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// authorize moves the connection of an authenticated request from the
// pending to the authorized pool, so that log followers and uploads do
// not count against what unauthenticated peers may hold, unless the
// authorized pool is full.
func (cl *connLimiter) authorize(ctx context.Context) {
	c, ok := ctx.Value(connKey{}).(net.Conn)
	if !ok {
		return // the handler runs outside Serve
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	t, ok := cl.conns[c]
	if !ok || t.authorized || cl.authorized >= cl.maxAuthorized {
		return
	}
	cl.removePending(t)
	t.authorized = true
	cl.conns[c] = t
	cl.authorized++
}

// peerKey names the peer a connection comes from: the IP address for
// TCP (its /64 for IPv6), else the address without its port (vsock: the
// CID, e.g. "vsock host(2)"), prefixed by the network.
func peerKey(addr net.Addr) string {
	switch a := addr.(type) {
	case nil:
		return "unknown peer"
	case *net.TCPAddr:
		if ip4 := a.IP.To4(); ip4 != nil {
			return "tcp " + ip4.String()
		}
		return fmt.Sprintf("tcp %s/%d", a.IP.Mask(net.CIDRMask(ipv6PeerPrefixBits, 128)), ipv6PeerPrefixBits)
	}
	s := addr.String()
	if host, _, err := net.SplitHostPort(s); err == nil {
		s = host
	}
	return addr.Network() + " " + s
}
