package syslog

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ingotdev/ingot/appliance/logs"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// Defaults of a Forwarder.
const (
	// DefaultQueueLines is how many lines Forward holds in memory for the
	// writer; beyond that lines are dropped and counted.
	DefaultQueueLines = 8192
	// ConfirmDelay is how long a connection must outlive a line written
	// to it before the line counts as received.
	ConfirmDelay = 2 * time.Second
	// writeBatchLines bounds the lines the writer appends per fsync.
	writeBatchLines = 256
	// readBatchBytes bounds what the sender reads from the spool at once.
	readBatchBytes = 64 << 10
	dialTimeout    = 10 * time.Second
	writeTimeout   = 10 * time.Second
	retryMin       = 500 * time.Millisecond
	retryMax       = 10 * time.Second
	// poll is how often the sender looks at the spool and its
	// connection when nothing wakes it.
	poll = 250 * time.Millisecond
	// stateEvery is how often the acknowledged position is saved.
	stateEvery = time.Second
)

// Config describes a Forwarder.
type Config struct {
	Remote spec.Remote
	// RootCAs are the CAs a TLS receiver's certificate must chain to
	// (required for "tls"); the certificate must name Remote.Host.
	RootCAs *x509.CertPool
	// Hostname, BuildID and BootID go into every message.
	Hostname, BuildID, BootID string
	// Spool holds lines until they are received.
	Spool *Spool
	// Logf reports connection changes (to init's console; never through
	// the forwarder itself).
	Logf func(format string, args ...any)
}

// Forwarder sends log lines to a syslog receiver through a Spool.
type Forwarder struct {
	cfg   Config
	queue chan item
	// queueDropped counts lines Forward could not queue and the writer
	// has not reported yet.
	queueDropped atomic.Uint64
	wake         chan struct{}

	sent      atomic.Uint64
	connected atomic.Bool
	dropped   atomic.Uint64 // every line dropped from the queue
	// spoolDropped counts lines the spool dropped that the receiver has
	// not been told about; only the sender goroutine uses it.
	spoolDropped uint64
}

type item struct {
	source string
	line   logs.Line
}

// New returns a forwarder; Run starts it.
func New(cfg Config) (*Forwarder, error) {
	if cfg.Spool == nil {
		return nil, errors.New("syslog: no spool")
	}
	if cfg.Remote.Transport == "tls" && cfg.RootCAs == nil {
		return nil, fmt.Errorf("syslog: %s: TLS needs the receiver's CA (%s)", cfg.Remote.Addr, spec.LogsCAPath)
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	return &Forwarder{cfg: cfg, queue: make(chan item, DefaultQueueLines), wake: make(chan struct{}, 1)}, nil
}

// Forward queues a line of source; it never blocks. A nil Forwarder
// discards.
func (f *Forwarder) Forward(source string, l logs.Line) {
	if f == nil {
		return
	}
	select {
	case f.queue <- item{source, l}:
	default:
		f.queueDropped.Add(1)
		f.dropped.Add(1)
	}
}

// Stats is what the metrics report about the forwarder.
type Stats struct {
	SpoolBytes, SpoolMaxBytes int64
	// Dropped counts lines lost to a full queue or a full spool.
	Dropped uint64
	// Sent counts lines written to a receiver (some may be sent again).
	Sent      uint64
	Connected bool
}

// Stats returns the forwarder's counters now.
func (f *Forwarder) Stats() Stats {
	b, d := f.cfg.Spool.Stats()
	return Stats{SpoolBytes: b, SpoolMaxBytes: f.cfg.Spool.maxBytes, Dropped: d + f.dropped.Load(),
		Sent: f.sent.Load(), Connected: f.connected.Load()}
}

// Run writes queued lines to the spool and sends the spool until ctx
// ends; then it writes what is still queued, syncs and closes the spool.
func (f *Forwarder) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f.send(ctx)
	}()
	f.write(ctx)
	wg.Wait()
	return f.cfg.Spool.Close()
}

// write moves lines from the queue to the spool in batches, one fsync
// per batch, until ctx ends.
func (f *Forwarder) write(ctx context.Context) {
	var frames, msg []byte
	failing := false
	flush := func(lines int) {
		if lines == 0 {
			return
		}
		err := f.cfg.Spool.Append(frames, lines)
		if err == nil {
			err = f.cfg.Spool.Sync()
		}
		if err != nil && !failing {
			f.cfg.Logf("logs: remote: spool: %v (further errors not shown)", err)
		}
		failing = err != nil
		frames = frames[:0]
		select {
		case f.wake <- struct{}{}:
		default:
		}
	}
	add := func(it item) {
		if n := f.queueDropped.Swap(0); n > 0 {
			msg = f.message("init", logs.Line{Time: time.Now(), Stream: logs.System,
				Text: fmt.Sprintf("logs: %d lines dropped (the remote log queue was full)", n)}).Append(msg[:0])
			frames = AppendFrame(frames, msg)
		}
		msg = f.message(it.source, it.line).Append(msg[:0])
		frames = AppendFrame(frames, msg)
	}
	for {
		select {
		case it := <-f.queue:
			add(it)
			lines := 1
			for more := true; more && lines < writeBatchLines; {
				select {
				case it := <-f.queue:
					add(it)
					lines++
				default:
					more = false
				}
			}
			flush(lines)
		case <-ctx.Done():
			lines := 0
			for more := true; more; {
				select {
				case it := <-f.queue:
					add(it)
					lines++
					if lines == writeBatchLines {
						flush(lines)
						lines = 0
					}
				default:
					more = false
				}
			}
			flush(lines)
			return
		}
	}
}

func (f *Forwarder) message(source string, l logs.Line) Message {
	sev := SeverityInfo
	if l.Stream == logs.System {
		sev = SeverityNotice
	}
	return Message{Time: l.Time, Severity: sev, Hostname: f.cfg.Hostname, AppName: source, MsgID: l.Stream.String(),
		BuildID: f.cfg.BuildID, BootID: f.cfg.BootID, Text: l.Text}
}

// send connects to the receiver and sends the spool from its
// acknowledged position, again and again, until ctx ends.
func (f *Forwarder) send(ctx context.Context) {
	wait := retryMin
	lastErr := ""
	for ctx.Err() == nil {
		conn, err := f.dial(ctx)
		if err == nil {
			f.connected.Store(true)
			f.cfg.Logf("logs: remote: connected to %s (%s)", f.cfg.Remote.Addr, f.cfg.Remote.Transport)
			lastErr = ""
			start := time.Now()
			err = f.stream(ctx, conn)
			conn.Close()
			f.connected.Store(false)
			if time.Since(start) > retryMax {
				wait = retryMin
			}
		}
		if ctx.Err() != nil {
			break
		}
		if msg := err.Error(); msg != lastErr {
			f.cfg.Logf("logs: remote: %s: %v (lines are kept on the spool; trying again)", f.cfg.Remote.Addr, err)
			lastErr = msg
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		wait = min(2*wait, retryMax)
	}
	if err := f.cfg.Spool.SaveState(); err != nil {
		f.cfg.Logf("logs: remote: %v", err)
	}
}

func (f *Forwarder) dial(ctx context.Context) (net.Conn, error) {
	r := f.cfg.Remote
	d := net.Dialer{Timeout: dialTimeout, KeepAlive: 15 * time.Second}
	switch r.Transport {
	case "udp":
		return d.DialContext(ctx, "udp", r.Addr)
	case "tcp":
		return d.DialContext(ctx, "tcp", r.Addr)
	}
	td := tls.Dialer{NetDialer: &d, Config: &tls.Config{RootCAs: f.cfg.RootCAs, ServerName: r.Host, MinVersion: tls.VersionTLS12}}
	return td.DialContext(ctx, "tcp", r.Addr)
}

// inflight is a position written to the connection at a time.
type inflight struct {
	at  time.Time
	pos Pos
}

// stream sends the spool on conn until the connection fails or ctx ends.
// What was written counts as received once the connection outlived it by
// ConfirmDelay (a receiver never writes, so a read that ends means the
// receiver closed); at the end, what is not confirmed is sent again on
// the next connection.
func (f *Forwarder) stream(ctx context.Context, conn net.Conn) error {
	stream := f.cfg.Remote.Transport != "udp"
	closed := make(chan error, 1)
	if stream {
		go func() {
			_, err := io.Copy(io.Discard, conn)
			if err == nil {
				err = io.EOF
			}
			closed <- fmt.Errorf("the receiver closed the connection: %w", err)
		}()
	}
	sp := f.cfg.Spool
	pos := sp.Acked()
	var pending []inflight
	var out []byte
	tick := time.NewTicker(poll)
	defer tick.Stop()
	lastSave := time.Now()
	for {
		select {
		case err := <-closed:
			return err
		default:
		}
		b, err := sp.Read(pos, readBatchBytes)
		if err != nil {
			return err
		}
		f.spoolDropped += b.Dropped
		if f.spoolDropped > 0 || b.Lines > 0 {
			out = out[:0]
			if f.spoolDropped > 0 {
				m := f.message("init", logs.Line{Time: time.Now(), Stream: logs.System,
					Text: fmt.Sprintf("logs: %d lines dropped (the spool on perm was full)", f.spoolDropped)}).Append(nil)
				out = AppendFrame(out, m)
			}
			out = append(out, b.Frames...)
			if err := f.writeOut(conn, out, stream); err != nil {
				return err
			}
			f.spoolDropped = 0
			f.sent.Add(uint64(b.Lines))
		}
		if b.Next != pos {
			pos = b.Next
			pending = append(pending, inflight{time.Now(), pos})
		}
		// Confirm what the connection outlived.
		confirm := ConfirmDelay
		if !stream {
			confirm = 0
		}
		select {
		case err := <-closed:
			return err
		default:
		}
		i := 0
		for i < len(pending) && time.Since(pending[i].at) >= confirm {
			i++
		}
		if i > 0 {
			if err := sp.Ack(pending[i-1].pos); err != nil {
				return err
			}
			pending = pending[i:]
		}
		if time.Since(lastSave) >= stateEvery {
			lastSave = time.Now()
			if err := sp.SaveState(); err != nil {
				f.cfg.Logf("logs: remote: %v", err)
			}
		}
		if b.Lines > 0 && len(b.Frames) >= readBatchBytes/2 {
			continue // more is waiting
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-closed:
			return err
		case <-f.wake:
		case <-tick.C:
		}
	}
}

// writeOut writes frames: as they are on a stream, one message per
// datagram on UDP.
func (f *Forwarder) writeOut(conn net.Conn, frames []byte, stream bool) error {
	if err := conn.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	if stream {
		_, err := conn.Write(frames)
		return err
	}
	for len(frames) > 0 {
		msg, n, err := ParseFrame(frames)
		if err != nil || n == 0 {
			return fmt.Errorf("syslog: spool holds a bad frame: %v", err)
		}
		if _, err := conn.Write(msg); err != nil {
			return err
		}
		frames = frames[n:]
	}
	return nil
}
