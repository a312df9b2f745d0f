package uiproxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestCheckLoopback(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:0", "127.0.0.2:8080", "[::1]:9000", "localhost:0"} {
		if err := CheckLoopback(ok); err != nil {
			t.Errorf("CheckLoopback(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{":0", "0.0.0.0:8080", "192.168.1.5:80", "[::]:80", "example.com:80", "127.0.0.1"} {
		if err := CheckLoopback(bad); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("CheckLoopback(%q) = %v, want an error naming it", bad, err)
		}
	}
}

// startProxy serves a proxy to backend and returns its address and the
// number of dials so far.
func startProxy(t *testing.T, backend string) (string, *atomic.Int64, *lines) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var dials atomic.Int64
	logged := &lines{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, l, func(ctx context.Context) (net.Conn, error) {
			dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, "tcp", backend)
		}, logged.add)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve after cancel = %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
	return l.Addr().String(), &dials, logged
}

// lines collects log lines from several goroutines.
type lines struct {
	mu sync.Mutex
	l  []string
}

func (l *lines) add(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.l = append(l.l, fmt.Sprintf(format, args...))
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.l, "\n")
}

func TestForwards(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The proxy adds nothing: no credentials of its own.
		fmt.Fprintf(w, "path %s auth %q cookie %q", r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Cookie"))
	}))
	defer srv.Close()
	addr, dials, _ := startProxy(t, srv.Listener.Addr().String())
	resp, err := http.Get("http://" + addr + "/ui/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != `path /ui/ auth "" cookie ""` {
		t.Errorf("through the proxy: %q", b)
	}
	if dials.Load() != 1 {
		t.Errorf("%d dials for one connection, want 1", dials.Load())
	}
}

func TestBoundsConnections(t *testing.T) {
	// A backend that holds every connection open.
	bl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer bl.Close()
	go func() {
		for {
			c, err := bl.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	addr, _, logged := startProxy(t, bl.Addr().String())
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range maxConns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	// The proxy counts a connection at Accept; give it the time to accept
	// all of them, then one more must be closed at once.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
		if err == io.EOF {
			if !strings.Contains(logged.String(), "refused a connection") {
				t.Errorf("log = %q, want the refusal", logged)
			}
			return
		}
	}
	t.Fatalf("connection %d was not refused", maxConns+1)
}
