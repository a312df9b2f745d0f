package vhostuser

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"time"
)

// Defaults for the options.
const (
	defaultBufBytes       = 256 << 10 // as Linux's VIRTIO_VSOCK_DEFAULT_BUF_SIZE
	defaultMaxConns       = 256
	defaultConnectTimeout = 5 * time.Second

	// maxSunPathBytes is the usable length of sockaddr_un.sun_path; udsPath
	// leaves room for the "_<port>" suffix of guest-initiated connections.
	maxSunPathBytes    = 107
	maxPortSuffixBytes = len("_4294967295")
)

type config struct {
	log            *slog.Logger
	bufBytes       uint32
	maxConns       int
	connectTimeout time.Duration
}

// Option configures a Device.
type Option func(*config)

// WithLogger sends the device's log to l. By default it logs nothing.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.log = l }
}

// WithBufferBytes sets the per-connection receive buffer advertised to the
// guest (buf_alloc) and the most host bytes read ahead for one connection.
// It bounds the memory one connection can hold in each direction.
// Default 256 KiB.
func WithBufferBytes(n uint32) Option {
	return func(c *config) { c.bufBytes = n }
}

// WithMaxConnections bounds simultaneous connections, both directions
// together. Default 256.
func WithMaxConnections(n int) Option {
	return func(c *config) { c.maxConns = n }
}

// WithConnectTimeout bounds how long a host-initiated connection waits for
// the guest to answer, how long a host client may take to send its CONNECT
// line, and how long dialing <uds>_<port> may take. Default 5 s.
func WithConnectTimeout(d time.Duration) Option {
	return func(c *config) { c.connectTimeout = d }
}

// Device is a vhost-user vsock back-end for one VM.
type Device struct {
	cid     uint64
	udsPath string
	cfg     config
}

// NewDevice returns a back-end that gives the guest context ID guestCID
// and exposes it on the hybrid vsock socket udsPath.
func NewDevice(guestCID uint64, udsPath string, opts ...Option) (*Device, error) {
	cfg := config{
		log:            slog.New(slog.DiscardHandler),
		bufBytes:       defaultBufBytes,
		maxConns:       defaultMaxConns,
		connectTimeout: defaultConnectTimeout,
	}
	for _, o := range opts {
		o(&cfg)
	}
	switch {
	case guestCID < 3 || guestCID >= 0xffffffff:
		return nil, fmt.Errorf("vhostuser: guest CID %d, want 3..%d", guestCID, uint32(0xfffffffe))
	case udsPath == "":
		return nil, errors.New("vhostuser: empty hybrid vsock socket path")
	case len(udsPath)+maxPortSuffixBytes > maxSunPathBytes:
		return nil, fmt.Errorf("vhostuser: hybrid vsock socket path %q: longer than %d bytes", udsPath, maxSunPathBytes-maxPortSuffixBytes)
	case cfg.bufBytes < 4096:
		return nil, fmt.Errorf("vhostuser: buffer of %d bytes, want at least 4096", cfg.bufBytes)
	case cfg.maxConns < 1:
		return nil, fmt.Errorf("vhostuser: at most %d connections, want at least 1", cfg.maxConns)
	case cfg.connectTimeout <= 0:
		return nil, fmt.Errorf("vhostuser: connect timeout %v, want > 0", cfg.connectTimeout)
	case cfg.log == nil:
		return nil, errors.New("vhostuser: nil logger")
	}
	return &Device{cid: guestCID, udsPath: udsPath, cfg: cfg}, nil
}

// ServeListener serves the device on an already listening vhost-user
// socket (so a caller can start QEMU as soon as the socket exists) and
// listens on the hybrid vsock socket. It serves one front-end at a time:
// when QEMU restarts (e.g. after a guest reboot with -no-reboot) the new
// QEMU connects to the same socket; a new connection replaces the current
// one. It returns nil once ctx ends and everything is torn down, or an
// error if a listener fails. It closes l.
func (d *Device) ServeListener(ctx context.Context, l *net.UnixListener) error {
	defer l.Close()
	hl, err := listenUnix(d.udsPath)
	if err != nil {
		return err
	}
	defer hl.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	e := newEngine(d.cid, d.udsPath, d.cfg)
	go e.run(ctx)
	stop := context.AfterFunc(ctx, func() {
		l.Close()
		hl.Close()
	})
	defer stop()
	e.wg.Add(1)
	go e.acceptHybrid(ctx, hl)

	var cur *session
	var serveErr error
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			if ctx.Err() == nil {
				serveErr = fmt.Errorf("vhostuser: accept on %s: %w", l.Addr(), err)
			}
			break
		}
		if cur != nil {
			select {
			case <-cur.done:
			default:
				d.cfg.log.Info("vhostuser: new front-end replaces the current one")
			}
			cur.close()
		}
		cur = startSession(e, c)
	}
	cancel()
	if cur != nil {
		cur.close()
	}
	<-e.done
	e.wg.Wait()
	return serveErr
}

// listenUnix listens on path, replacing a stale socket left by an earlier
// run, and makes the socket private to its owner: whoever can connect can
// reach the guest's ports.
func listenUnix(path string) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("vhostuser: %s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("vhostuser: removing stale socket: %w", err)
		}
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("vhostuser: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("vhostuser: %w", err)
	}
	return l, nil
}
