package transport

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in   string
		want Target
	}{
		{"vsock://3:1024", Target{Scheme: SchemeVsock, CID: 3, Port: 1024}},
		{"vsock://4294967295:0", Target{Scheme: SchemeVsock, CID: 4294967295, Port: 0}},
		{"unix:///run/ingot/vm.sock?port=1024", Target{Scheme: SchemeUnix, Path: "/run/ingot/vm.sock", Port: 1024}},
		{"unix:vm.sock?port=5", Target{Scheme: SchemeUnix, Path: "vm.sock", Port: 5}},
		{"unix:///tmp/a%20b.sock?port=7", Target{Scheme: SchemeUnix, Path: "/tmp/a b.sock", Port: 7}},
		{"tcp://192.168.1.20:7443", Target{Scheme: SchemeTCP, Addr: "192.168.1.20:7443"}},
		{"tcp://[::1]:7443", Target{Scheme: SchemeTCP, Addr: "[::1]:7443"}},
		{"tcp://pi.local:7443", Target{Scheme: SchemeTCP, Addr: "pi.local:7443"}},
	}
	for _, tt := range tests {
		got, err := ParseTarget(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseTarget(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			continue
		}
		// String round-trips.
		if again, err := ParseTarget(got.String()); err != nil || again != got {
			t.Errorf("ParseTarget(%q.String() = %q) = %+v, %v; want %+v", tt.in, got.String(), again, err, got)
		}
	}
}

func TestParseTargetErrors(t *testing.T) {
	for _, in := range []string{
		"",
		"/run/vm.sock",
		"http://host:80",
		"vsock://3",
		"vsock://x:1024",
		"vsock://3:99999999999",
		"vsock://3:1024/path",
		"unix:///run/vm.sock",
		"unix:///run/vm.sock?port=x",
		"unix:///run/vm.sock?port=1&cid=3",
		"unix://host/run/vm.sock?port=1",
		"unix://?port=1",
		"tcp://host",
		"tcp://host:99999",
		"tcp://:80",
		"tcp://host:80/path",
	} {
		if got, err := ParseTarget(in); err == nil {
			t.Errorf("ParseTarget(%q) = %+v, want an error", in, got)
		}
	}
}

// fakeHybrid serves the hybrid vsock handshake: "CONNECT n\n" → reply(n),
// then echoes.
func fakeHybrid(t *testing.T, reply func(port string) string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "v.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				port, _ := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "CONNECT ")
				r := reply(port)
				if r == "" {
					return
				}
				c.Write([]byte(r))
				io.Copy(c, br)
			}()
		}
	}()
	return path
}

func TestDialHybrid(t *testing.T) {
	path := fakeHybrid(t, func(port string) string {
		if port == "1024" {
			return "OK 1073741824\nwelcome"
		}
		return ""
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, "unix://"+path+"?port=1024")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if hc := c.(*HybridConn); hc.HostPort != 1<<30 {
		t.Errorf("HostPort = %d, want %d", hc.HostPort, 1<<30)
	}
	// Bytes right behind the reply line belong to the stream.
	buf := make([]byte, 7)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "welcome" {
		t.Fatalf("read %q, %v; want welcome", buf, err)
	}
	c.Write([]byte("echo"))
	buf = buf[:4]
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "echo" {
		t.Fatalf("read %q, %v; want echo", buf, err)
	}

	// Nothing listens on the guest port: the VMM closes the socket.
	if _, err := Dial(ctx, "unix://"+path+"?port=9"); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("Dial to a closed port = %v, want connection refused", err)
	}
}

func TestDialHybridBadReplies(t *testing.T) {
	for _, reply := range []string{"NO\n", "OK x\n", strings.Repeat("O", 100)} {
		path := fakeHybrid(t, func(string) string { return reply })
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if c, err := DialHybrid(ctx, path, 1); err == nil {
			c.Close()
			t.Errorf("DialHybrid with reply %q = nil error, want an error", reply)
		}
		cancel()
	}
}

func TestDialHybridHonoursContext(t *testing.T) {
	// A VMM that never answers.
	path := fakeHybrid(t, func(string) string { time.Sleep(time.Hour); return "" })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := DialHybrid(ctx, path, 1)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("DialHybrid = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("DialHybrid took %v after a 200ms deadline", d)
	}
}

func TestDialTCP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	c, err := Dial(context.Background(), "tcp://"+l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if b, _ := io.ReadAll(c); string(b) != "hi" {
		t.Errorf("read %q, want hi", b)
	}
}

func TestDialVsockFailsCleanly(t *testing.T) {
	// This host has no vsock transport for CID 4294967294 (or no vsock
	// at all); either way Dial returns an error naming the target.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := Dial(ctx, "vsock://4294967294:1")
	if err == nil || !strings.Contains(err.Error(), "vsock://4294967294:1") {
		t.Errorf("Dial(vsock) = %v, want an error naming the target", err)
	}
}
