// Package transport opens the byte streams the management protocol runs
// over: AF_VSOCK to a VM whose host has vhost-vsock, hybrid vsock over a Unix
// socket (Firecracker, Cloud Hypervisor and ingot's own vhost-user back-end)
// and plain TCP (a Raspberry Pi on the LAN; TLS is layered on top by the
// client). Inside the guest, Listen accepts AF_VSOCK connections.
//
// Targets are URLs:
//
//	vsock://CID:PORT                 AF_VSOCK, e.g. vsock://3:1024
//	unix:///path/to/vm.sock?port=N   hybrid vsock: connect to the socket,
//	                                 send "CONNECT N\n", expect "OK <n>\n"
//	tcp://HOST:PORT                  TCP, e.g. tcp://192.168.1.20:7443
//
// The hybrid form keeps the socket path in the URL path and the guest port
// in a query parameter, so paths may contain any character a URL path can
// carry and the port is never confused with part of the path.
package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mdlayher/vsock"
)

// Scheme names a transport.
type Scheme string

// The transports Dial knows.
const (
	SchemeVsock Scheme = "vsock"
	SchemeUnix  Scheme = "unix"
	SchemeTCP   Scheme = "tcp"
)

// Target is a parsed dial target.
type Target struct {
	Scheme Scheme
	CID    uint32 // vsock: the guest's context ID
	Port   uint32 // vsock and unix: the guest's vsock port
	Path   string // unix: the hybrid vsock socket
	Addr   string // tcp: host:port
}

// ParseTarget parses a target URL (see the package documentation).
func ParseTarget(s string) (Target, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Target{}, fmt.Errorf("transport: target %q: %w", s, err)
	}
	switch Scheme(u.Scheme) {
	case SchemeVsock:
		if u.Path != "" || u.RawQuery != "" || u.User != nil || u.Opaque != "" {
			return Target{}, fmt.Errorf("transport: target %q: want vsock://CID:PORT", s)
		}
		cid, err := parseUint32(u.Hostname())
		if err != nil {
			return Target{}, fmt.Errorf("transport: target %q: CID: %w", s, err)
		}
		port, err := parseUint32(u.Port())
		if err != nil {
			return Target{}, fmt.Errorf("transport: target %q: port: %w", s, err)
		}
		return Target{Scheme: SchemeVsock, CID: cid, Port: port}, nil
	case SchemeUnix:
		if u.Host != "" || u.User != nil {
			return Target{}, fmt.Errorf("transport: target %q: want unix:///path?port=N (three slashes: no host)", s)
		}
		path := u.Path
		if u.Opaque != "" {
			path = u.Opaque // unix:relative/path?port=N
		}
		if path == "" {
			return Target{}, fmt.Errorf("transport: target %q: no socket path", s)
		}
		q := u.Query()
		for k := range q {
			if k != "port" {
				return Target{}, fmt.Errorf("transport: target %q: unknown parameter %q", s, k)
			}
		}
		if !q.Has("port") {
			return Target{}, fmt.Errorf("transport: target %q: no guest port, want unix://%s?port=N", s, path)
		}
		port, err := parseUint32(q.Get("port"))
		if err != nil {
			return Target{}, fmt.Errorf("transport: target %q: port: %w", s, err)
		}
		return Target{Scheme: SchemeUnix, Path: path, Port: port}, nil
	case SchemeTCP:
		if u.Path != "" || u.RawQuery != "" || u.User != nil || u.Opaque != "" || u.Port() == "" || u.Hostname() == "" {
			return Target{}, fmt.Errorf("transport: target %q: want tcp://HOST:PORT", s)
		}
		if _, err := strconv.ParseUint(u.Port(), 10, 16); err != nil {
			return Target{}, fmt.Errorf("transport: target %q: port: %w", s, err)
		}
		return Target{Scheme: SchemeTCP, Addr: u.Host}, nil
	case "":
		return Target{}, fmt.Errorf("transport: target %q: no scheme, want vsock://, unix:// or tcp://", s)
	}
	return Target{}, fmt.Errorf("transport: target %q: unknown scheme %q, want vsock, unix or tcp", s, u.Scheme)
}

func parseUint32(s string) (uint32, error) {
	if s == "" {
		return 0, errors.New("missing")
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not a decimal 32-bit number", s)
	}
	return uint32(v), nil
}

// String formats t as a target URL that ParseTarget accepts.
func (t Target) String() string {
	switch t.Scheme {
	case SchemeVsock:
		return fmt.Sprintf("vsock://%d:%d", t.CID, t.Port)
	case SchemeUnix:
		u := url.URL{Scheme: "unix", Path: t.Path, RawQuery: "port=" + strconv.FormatUint(uint64(t.Port), 10)}
		if !strings.HasPrefix(t.Path, "/") {
			u = url.URL{Scheme: "unix", Opaque: t.Path, RawQuery: u.RawQuery}
		}
		return u.String()
	case SchemeTCP:
		return "tcp://" + t.Addr
	}
	return fmt.Sprintf("invalid target (scheme %q)", t.Scheme)
}

// Dial parses target and connects to it.
func Dial(ctx context.Context, target string) (net.Conn, error) {
	t, err := ParseTarget(target)
	if err != nil {
		return nil, err
	}
	return DialTarget(ctx, t)
}

// DialTarget connects to t.
func DialTarget(ctx context.Context, t Target) (net.Conn, error) {
	switch t.Scheme {
	case SchemeVsock:
		c, err := vsock.DialContext(ctx, t.CID, t.Port, nil)
		if err != nil {
			return nil, fmt.Errorf("transport: %v: %w", t, err)
		}
		return c, nil
	case SchemeUnix:
		return DialHybrid(ctx, t.Path, t.Port)
	case SchemeTCP:
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", t.Addr)
		if err != nil {
			return nil, fmt.Errorf("transport: %v: %w", t, err)
		}
		return c, nil
	}
	return nil, fmt.Errorf("transport: %v: unknown scheme", t)
}

// HybridConn is a connection through a hybrid vsock socket.
type HybridConn struct {
	*net.UnixConn
	// HostPort is the host-side vsock port the VMM assigned ("OK <n>").
	HostPort uint32
}

// hybridReplyBytes bounds the "OK <n>\n" line.
const hybridReplyBytes = 32

// DialHybrid connects to guest vsock port port through the hybrid vsock
// socket at path. The handshake honours ctx's deadline and cancellation.
func DialHybrid(ctx context.Context, path string, port uint32) (*HybridConn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("transport: hybrid vsock %s: %w", path, err)
	}
	c := nc.(*net.UnixConn)
	// Cancellation and deadline both arrive through ctx.Done.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	hostPort, err := hybridHandshake(c, port)
	if !stop() || ctx.Err() != nil {
		c.Close()
		return nil, fmt.Errorf("transport: hybrid vsock %s port %d: %w", path, port, ctx.Err())
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("transport: hybrid vsock %s port %d: %w", path, port, err)
	}
	c.SetDeadline(time.Time{})
	return &HybridConn{UnixConn: c, HostPort: hostPort}, nil
}

func hybridHandshake(c *net.UnixConn, port uint32) (uint32, error) {
	if _, err := fmt.Fprintf(c, "CONNECT %d\n", port); err != nil {
		return 0, err
	}
	// Read byte by byte: whatever follows the line is the guest's data.
	var line []byte
	var b [1]byte
	for len(line) < hybridReplyBytes {
		if _, err := c.Read(b[:]); err != nil {
			if len(line) == 0 && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
				return 0, fmt.Errorf("connection refused (closed without a reply: nothing listening on the guest port?): %w", err)
			}
			return 0, fmt.Errorf("reading reply %q: %w", line, err)
		}
		if b[0] == '\n' {
			arg, ok := strings.CutPrefix(string(line), "OK ")
			if !ok {
				return 0, fmt.Errorf("reply %q, want \"OK <port>\"", line)
			}
			hp, err := parseUint32(strings.TrimSuffix(arg, "\r"))
			if err != nil {
				return 0, fmt.Errorf("reply %q: %w", line, err)
			}
			return hp, nil
		}
		line = append(line, b[0])
	}
	return 0, fmt.Errorf("reply %q... longer than %d bytes", line, hybridReplyBytes)
}

// Listen accepts AF_VSOCK connections on port inside a guest. Accepted
// connections get a receive buffer of ReceiveBufferBytes.
func Listen(port uint32) (net.Listener, error) {
	l, err := vsock.Listen(port, nil)
	if err != nil {
		return nil, fmt.Errorf("transport: vsock listen on port %d: %w", port, err)
	}
	return bufferedListener{l}, nil
}

// ReceiveBufferBytes is the vsock receive buffer of accepted connections.
// The kernel's default, 256 KiB, is the credit the peer may have in
// flight; a bulk receiver (an update upload) then stalls the sender every
// 64 packets of 4 KiB until it has read and returned credit. Four MiB
// keeps the receive ring full while the reader catches up.
const ReceiveBufferBytes = 4 << 20

// bufferedListener raises the receive buffer of each connection it
// accepts.
type bufferedListener struct{ *vsock.Listener }

func (l bufferedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if vc, ok := c.(*vsock.Conn); ok {
		// Best effort: a kernel that refuses keeps its default, which
		// works, only slower.
		_ = setReceiveBuffer(vc, ReceiveBufferBytes)
	}
	return c, nil
}
