package vhostuser

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"
)

// connectLineBytes bounds the "CONNECT <port>\n" line; it also sizes the
// buffer that carries bytes a client sent right after it.
const connectLineBytes = 64

// acceptHybrid accepts host clients on the hybrid vsock socket.
func (e *engine) acceptHybrid(ctx context.Context, l *net.UnixListener) {
	defer e.wg.Done()
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			e.log.Warn("vhostuser: accept on hybrid socket", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		e.wg.Add(1)
		go e.handshake(ctx, c)
	}
}

// handshake reads "CONNECT <port>\n" and hands the socket to the engine.
func (e *engine) handshake(ctx context.Context, c *net.UnixConn) {
	defer e.wg.Done()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	c.SetReadDeadline(time.Now().Add(e.cfg.connectTimeout))
	br := bufio.NewReaderSize(c, connectLineBytes)
	port, err := readConnect(br)
	if err != nil {
		e.log.Info("vhostuser: bad hybrid vsock handshake", "err", err)
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	if !stop() {
		return // ctx ended; c is closed
	}
	if !e.post(func() { e.hostConnect(c, br, port) }) {
		c.Close()
	}
}

// readConnect parses the hybrid vsock command line "CONNECT <port>\n".
func readConnect(r *bufio.Reader) (uint32, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return 0, fmt.Errorf("command line longer than %d bytes", connectLineBytes)
		}
		return 0, fmt.Errorf("reading command: %w", err)
	}
	return parseConnect(line)
}

func parseConnect(line []byte) (uint32, error) {
	s := bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	arg, ok := bytes.CutPrefix(s, []byte("CONNECT "))
	if !ok {
		return 0, fmt.Errorf("command %q, want \"CONNECT <port>\"", s)
	}
	port, err := strconv.ParseUint(string(arg), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("command %q: port: %w", s, err)
	}
	return uint32(port), nil
}
