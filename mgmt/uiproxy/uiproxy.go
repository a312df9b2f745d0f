// Package uiproxy lets a browser on this machine open an appliance's web
// page when the agent is reachable only over vsock (or a pinned TLS port):
// it listens on a loopback address and forwards each connection it accepts
// over its own authenticated connection to the agent (mgmt.Client.Dial:
// the token-derived key or the pinned certificate is checked first),
// copying bytes both ways.
//
// The proxy adds no authority: it sends nothing of its own, so whoever
// connects to the local port (another user of this machine, too) still
// has to log in on the page with the management token. It listens only on
// loopback, since the browser's side is plain HTTP and the login carries
// the token.
package uiproxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// maxConns bounds the connections forwarded at once: a browser opens a
// handful (one per followed log, plus a few), and the agent bounds what it
// holds per peer anyway.
const maxConns = 32

// dialTimeout bounds connecting to the agent for one accepted connection.
const dialTimeout = 30 * time.Second

// CheckLoopback refuses a listen address that is not on a loopback
// interface: "127.0.0.1:0", "[::1]:8080" and "localhost:0" pass.
func CheckLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("listen address %q: want a loopback address such as 127.0.0.1:0 (the browser's side is plain HTTP, and the login sends the token)", addr)
	}
	return nil
}

// Serve accepts connections on l until ctx ends and forwards each over a
// connection from dial. It closes l and every forwarded connection when
// ctx ends and returns nil then, else the listener's error. logf gets one
// line per connection that could not be forwarded.
func Serve(ctx context.Context, l net.Listener, dial func(context.Context) (net.Conn, error), logf func(format string, args ...any)) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := map[net.Conn]struct{}{}
	track := func(c net.Conn, add bool) bool {
		mu.Lock()
		defer mu.Unlock()
		if !add {
			delete(open, c)
			return true
		}
		if ctx.Err() != nil || len(open) >= maxConns {
			return false
		}
		open[c] = struct{}{}
		return true
	}
	stop := context.AfterFunc(ctx, func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for c := range open {
			c.Close()
		}
	})
	defer stop()
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("uiproxy: accept on %s: %w", l.Addr(), err)
		}
		if !track(c, true) {
			logf("uiproxy: refused a connection from %s: %d connections forwarded already", c.RemoteAddr(), maxConns)
			c.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer track(c, false)
			defer c.Close()
			if err := forward(ctx, c, dial); err != nil {
				logf("uiproxy: %s: %v", c.RemoteAddr(), err)
			}
		}()
	}
}

// forward connects to the agent and copies between it and c until either
// side ends; then both are closed (HTTP/1.1 needs no half-close).
func forward(ctx context.Context, c net.Conn, dial func(context.Context) (net.Conn, error)) error {
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	agent, err := dial(dctx)
	cancel()
	if err != nil {
		return fmt.Errorf("connecting to the agent: %w", err)
	}
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			agent.Close()
			c.Close()
		})
	}
	defer closeBoth()
	stop := context.AfterFunc(ctx, closeBoth)
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(agent, c)
		closeBoth()
	}()
	_, _ = io.Copy(c, agent)
	closeBoth()
	<-done
	return nil
}
