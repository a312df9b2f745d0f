package agent_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ingotdev/ingot/appliance/agent"
	"github.com/ingotdev/ingot/appliance/logs"
	"github.com/ingotdev/ingot/mgmt"
)

// Sizes of the header flood (issue 12, attack 2).
const (
	floodConns           = 200
	floodPeers           = 8           // source addresses 127.0.0.10 and up
	floodHeaderBytes     = 1_000_000   // under net/http's default limit of 1 MiB
	floodChunkBytes      = 16 << 10    // written at a time, as a slow client would
	headerLimitBytes     = 16 << 10    // what the agent must answer 431 beyond
	perPeerLimit         = 16          // unauthenticated connections one peer may hold
	heapGrowthLimitBytes = 16 << 20    // what the whole attack may cost the agent
	followers            = 20          // authorized log followers from one peer: more than perPeerLimit
	attackWait           = time.Second // how long an attacker waits for an answer after its last byte
	stallHeaderBytes     = 15 << 10    // a header just under the limit, never finished
)

// attacker is one unauthenticated TLS connection from a chosen loopback
// address, made without the client package so that it can misbehave.
type attacker struct {
	conn *tls.Conn
}

// dialFrom completes a TLS handshake with the agent from source address
// src; an error means the agent closed the connection before answering.
// The certificate is not checked: these peers attack the agent, they do
// not trust it (pinning is TestTLS's subject).
func dialFrom(addr, src string) (*attacker, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return &attacker{conn: c}, nil
}

// startHeader sends a request line and the start of a header that never
// ends.
func (a *attacker) startHeader() error {
	_, err := io.WriteString(a.conn, "GET "+mgmt.PathStatus+" HTTP/1.1\r\nHost: agent\r\nX-Pad: ")
	return err
}

// flood sends a header of floodHeaderBytes that never ends, while reading
// what the agent answers. It returns the agent's status line, or "closed"
// when the agent closed the connection without one, or "held" when it
// stayed silent for attackWait after the last byte.
func (a *attacker) flood() string {
	answer := make(chan string, 1)
	go func() {
		b := make([]byte, 64)
		n, err := io.ReadAtLeast(a.conn, b, len("HTTP/1.1 431"))
		line, _, _ := strings.Cut(string(b[:n]), "\r\n")
		var ne net.Error
		switch {
		case n > 0:
			answer <- line
		case errors.As(err, &ne) && ne.Timeout():
			answer <- "held"
		default:
			answer <- "closed"
		}
	}()
	if a.startHeader() == nil {
		chunk := bytes.Repeat([]byte("a"), floodChunkBytes)
		for sent := 0; sent < floodHeaderBytes; sent += len(chunk) {
			if _, err := a.conn.Write(chunk); err != nil {
				break
			}
		}
	}
	a.conn.SetReadDeadline(time.Now().Add(attackWait))
	return <-answer
}

// heapBytes is the live heap after a collection.
func heapBytes() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestConnectionFlood performs attack 2 of issue 12 on the TLS listener
// the agent has on a Pi: unauthenticated peers open many connections and
// send headers of about 1 MB that never end. The agent must answer 431
// beyond its header limit, refuse a peer's connections beyond its share,
// keep its heap growth small, and keep serving authorized clients (log
// followers that outnumber the per-peer share, and a new status request).
func TestConnectionFlood(t *testing.T) {
	certPEM, keyPEM, pin, err := mgmt.GenerateCertificate("hello", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := agent.ListenTLS(tl, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ring := logs.NewRing(1 << 20)
	var logMu sync.Mutex
	var logged bytes.Buffer
	a, err := agent.New(agent.Deps{Info: &fakeInfo{}, Logs: ringLogs{"web": ring}}, hashHex([]byte(token)),
		agent.WithLogf(func(format string, args ...any) {
			logMu.Lock()
			defer logMu.Unlock()
			fmt.Fprintf(&logged, format+"\n", args...)
		}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, l) }()
	defer func() {
		cancel()
		<-done
	}()
	addr := tl.Addr().String()
	client := func() *mgmt.Client {
		c, err := mgmt.NewClient("https://"+addr, token, mgmt.WithCertSHA256(pin))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	heapBefore := heapBytes()

	// Authorized log followers from 127.0.0.1, more than one peer may
	// hold unauthenticated: they are long-lived and must all work.
	fc := client()
	var streams []*mgmt.LogStream
	for i := range followers {
		s, err := fc.Logs(ctx, "web", 0, true)
		if err != nil {
			t.Fatalf("follower %d: %v", i, err)
		}
		defer s.Close()
		streams = append(streams, s)
	}

	// (b) A slowloris peer holds its share of unauthenticated
	// connections; one more from it is closed before the handshake.
	const slowPeer = "127.0.0.2"
	for i := range perPeerLimit {
		c, err := dialFrom(addr, slowPeer)
		if err != nil {
			t.Fatalf("slow connection %d of %d: %v", i+1, perPeerLimit, err)
		}
		defer c.conn.Close()
		if err := c.startHeader(); err != nil {
			t.Fatalf("slow connection %d: %v", i+1, err)
		}
	}
	if c, err := dialFrom(addr, slowPeer); err == nil {
		c.conn.Close()
		t.Errorf("connection %d from %s completed its handshake, want it refused (at most %d unauthenticated per peer)", perPeerLimit+1, slowPeer, perPeerLimit)
	}

	// (a) A header over the limit gets 431 (or the connection closed).
	if c, err := dialFrom(addr, "127.0.0.3"); err != nil {
		t.Errorf("big header: %v", err)
	} else {
		got := c.flood()
		c.conn.Close()
		if !strings.Contains(got, "431") {
			t.Errorf("a %d-byte header got %q, want 431 (limit %d bytes)", floodHeaderBytes, got, headerLimitBytes)
		}
	}

	// (c) The flood: floodConns connections from floodPeers addresses,
	// each sending a header of about 1 MB that never ends.
	var wg sync.WaitGroup
	var mu sync.Mutex
	outcomes := map[string]int{}
	var held []*attacker
	dialed := make(chan struct{}, floodConns)
	for i := range floodConns {
		src := fmt.Sprintf("127.0.0.%d", 10+i%floodPeers)
		wg.Go(func() {
			c, err := dialFrom(addr, src)
			dialed <- struct{}{}
			outcome := "refused"
			if err == nil {
				outcome = c.flood()
				if strings.Contains(outcome, " 431 ") {
					outcome = "431"
				}
			}
			mu.Lock()
			defer mu.Unlock()
			outcomes[outcome]++
			if outcome == "held" {
				held = append(held, c) // kept open, as an attacker would
			} else if c != nil {
				c.conn.Close()
			}
		})
	}
	// (d) While the flood runs, a new connection of an authorized client
	// gets its answer.
	for range floodConns {
		<-dialed
	}
	if s, err := client().Status(ctx); err != nil || s.Name != "hello" {
		t.Errorf("Status during the flood = %+v, %v, want an answer", s, err)
	}
	wg.Wait()
	heapDuring := heapBytes()
	defer func() {
		for _, c := range held {
			c.conn.Close()
		}
	}()
	t.Logf("flood of %d connections with %d-byte headers: %v; heap %d → %d bytes", floodConns, floodHeaderBytes, outcomes, heapBefore, heapDuring)
	if growth := int64(heapDuring) - int64(heapBefore); growth > heapGrowthLimitBytes {
		t.Errorf("the agent's heap grew by %d MiB under the flood, want at most %d MiB", growth>>20, heapGrowthLimitBytes>>20)
	}
	if n := outcomes["held"]; n > 0 {
		t.Errorf("%d flood connections were held without an answer, want each refused, closed or answered 431", n)
	}

	// (c) The worst an unauthenticated peer can make the agent hold:
	// every connection it admits stalls with a header just under the
	// limit, until the read header timeout.
	var stalled []*attacker
	defer func() {
		for _, c := range stalled {
			c.conn.Close()
		}
	}()
	pad := bytes.Repeat([]byte("a"), stallHeaderBytes)
	for i := range floodConns {
		c, err := dialFrom(addr, fmt.Sprintf("127.0.0.%d", 10+i%floodPeers))
		if err != nil {
			continue
		}
		stalled = append(stalled, c)
		if c.startHeader() == nil {
			c.conn.Write(pad)
		}
	}
	time.Sleep(100 * time.Millisecond) // for the agent to read what was sent
	heapStalled := heapBytes()
	t.Logf("%d connections stalled with %d-byte headers: heap %d → %d bytes", floodConns, stallHeaderBytes, heapBefore, heapStalled)
	if growth := int64(heapStalled) - int64(heapBefore); growth > heapGrowthLimitBytes {
		t.Errorf("the agent's heap grew by %d MiB with stalled headers, want at most %d MiB", growth>>20, heapGrowthLimitBytes>>20)
	}

	// The followers still follow.
	ring.Append(time.Now(), logs.Stdout, "after the flood")
	for i, s := range streams {
		if l, err := s.Next(); err != nil || l.Text != "after the flood" {
			t.Errorf("follower %d after the flood = %+v, %v, want the new line", i, l, err)
		}
	}

	// Refusals are logged, but not once per connection: at most 5 lines
	// per kind (per peer, in total) in 10 s.
	logMu.Lock()
	lines := strings.Count(logged.String(), "refused a connection")
	logMu.Unlock()
	if lines == 0 || lines > 2*5 {
		t.Errorf("%d log lines about refused connections, want 1 to 10:\n%s", lines, logged.String())
	}
}
