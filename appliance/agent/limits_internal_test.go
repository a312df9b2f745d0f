package agent

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestPeerKey(t *testing.T) {
	for _, tt := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.168.1.20"), Port: 50123}, "tcp 192.168.1.20"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:10.0.0.1"), Port: 1}, "tcp 10.0.0.1"},
		// Any address of a /64 is the same peer.
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:aaaa::1"), Port: 1}, "tcp 2001:db8:1:2::/64"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:bbbb::7"), Port: 2}, "tcp 2001:db8:1:2::/64"},
		{fakeAddr{"vsock", "host(2):49152"}, "vsock host(2)"},
		{fakeAddr{"unix", "@"}, "unix @"},
		{nil, "unknown peer"},
	} {
		if got := peerKey(tt.addr); got != tt.want {
			t.Errorf("peerKey(%v) = %q, want %q", tt.addr, got, tt.want)
		}
	}
}

// fakeAddr is an address of any network.
type fakeAddr struct{ network, s string }

func (a fakeAddr) Network() string { return a.network }
func (a fakeAddr) String() string  { return a.s }

// fakeConn is a connection from a peer that records whether it was
// closed.
type fakeConn struct {
	net.Conn
	from   net.Addr
	closed bool
}

func (c *fakeConn) RemoteAddr() net.Addr { return c.from }
func (c *fakeConn) Close() error         { c.closed = true; return nil }

func TestConnLimiter(t *testing.T) {
	var logged []string
	cl := newConnLimiter(func(f string, args ...any) { logged = append(logged, fmt.Sprintf(f, args...)) })
	cl.maxPending, cl.maxPendingPerPeer, cl.maxAuthorized = 4, 3, 1
	from := func(ip string) *fakeConn {
		return &fakeConn{from: &net.TCPAddr{IP: net.ParseIP(ip), Port: 1}}
	}
	admit := func(c *fakeConn) bool {
		t.Helper()
		ok := cl.admit(c)
		if ok == c.closed {
			t.Fatalf("admit(%v) = %v, closed %v", c.from, ok, c.closed)
		}
		return ok
	}

	// Peer a: three pending, the fourth is over its share.
	var a []*fakeConn
	for range 3 {
		c := from("10.0.0.1")
		if !admit(c) {
			t.Fatalf("connection %d of a refused", len(a)+1)
		}
		a = append(a, c)
	}
	if admit(from("10.0.0.1")) {
		t.Error("a's fourth pending connection admitted, want refused (per peer 3)")
	}
	// Peer b fills the pool; peer c has fewer than a, so a's oldest goes.
	b := from("10.0.0.2")
	admit(b)
	c := from("10.0.0.3")
	if !admit(c) || !a[0].closed {
		t.Errorf("c admitted %v, a's oldest closed %v; want both (a holds the most)", !c.closed, a[0].closed)
	}
	// b now holds as many as anyone but a, which holds 2; another b
	// (holding 1 < 2) takes a's next oldest; then nobody holds more than
	// b, so a third b is refused.
	if b2 := from("10.0.0.2"); !admit(b2) || !a[1].closed {
		t.Errorf("second b admitted %v, a's second closed %v; want both", !b2.closed, a[1].closed)
	}
	if admit(from("10.0.0.2")) {
		t.Error("third b admitted with the pool full and nobody holding more, want refused")
	}
	// The evicted connection's close is not counted twice.
	cl.state(a[0], http.StateClosed)
	if cl.pending != 4 {
		t.Errorf("pending = %d after an evicted connection closed, want 4", cl.pending)
	}

	// An authenticated request moves its connection out of the pending
	// pool, while the authorized pool has room.
	cl.authorize(cl.context(t.Context(), c))
	cl.authorize(cl.context(t.Context(), b))
	if cl.pending != 3 || cl.authorized != 1 {
		t.Errorf("pending, authorized = %d, %d after two authorizations (room for 1), want 3, 1", cl.pending, cl.authorized)
	}
	if !admit(from("10.0.0.3")) {
		t.Error("c's second connection refused with a free pending slot")
	}
	cl.state(c, http.StateClosed)
	if cl.authorized != 0 || len(cl.conns) != 4 {
		t.Errorf("authorized = %d, tracked = %d after c's authorized connection closed, want 0, 4", cl.authorized, len(cl.conns))
	}

	if n := len(logged); n == 0 || !strings.Contains(strings.Join(logged, "\n"), "refused a connection from tcp 10.0.0.1") {
		t.Errorf("log = %q, want the refusals", logged)
	}
}

func TestLogThrottle(t *testing.T) {
	var logged []string
	lt := &logThrottle{logf: func(f string, args ...any) { logged = append(logged, fmt.Sprintf(f, args...)) }}
	for i := range peerLogLines + 3 {
		lt.printf("refused %d", i)
	}
	lt.printf("other %d", 1)
	if len(logged) != peerLogLines+1 || logged[peerLogLines] != "other 1" {
		t.Fatalf("logged %q, want %d lines of the first kind and one of the other", logged, peerLogLines)
	}
	// A new interval: the next line counts the ones left out.
	lt.kinds["refused %d"].since = time.Now().Add(-peerLogInterval)
	lt.printf("refused %d", 99)
	if got, want := logged[len(logged)-1], "refused 99 (and 3 like it left out before)"; got != want {
		t.Errorf("first line of the next interval = %q, want %q", got, want)
	}
}
