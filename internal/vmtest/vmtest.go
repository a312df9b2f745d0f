// Package vmtest holds what the VM tests of several packages share: a
// console sink that a test can read while QEMU writes to it, and a free
// TCP port for a forwarded guest service.
package vmtest

import (
	"bytes"
	"net"
	"sync"
	"testing"
)

// Console collects a VM's serial console; safe for concurrent use.
type Console struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (c *Console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

// String returns everything written so far.
func (c *Console) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Tail returns the last n bytes written, for error messages.
func (c *Console) Tail(n int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.buf.String()
	return s[max(0, len(s)-n):]
}
