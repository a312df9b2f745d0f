// Package vmtest is the harness of the VM tests (TestVM… in *_vm_test.go):
// Kernel finds the Debian kernel package the environment names, Guest
// builds an initramfs around the one test PID 1 (testinit) or another init
// with our own writers, Boot starts QEMU from hypervisor/qemu's command
// line and collects its console, and Console is the concurrent buffer the
// tests read consoles and logs from while something writes them.
package vmtest

import (
	"bytes"
	"fmt"
	"net"
	"sync"
	"testing"
)

// Console collects a VM's serial console, or any output a test reads
// while another goroutine writes it; safe for concurrent use.
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

// Tail returns the last n bytes written, for error messages.
func (c *Console) Tail(n int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.buf.String()
	return s[max(0, len(s)-n):]
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := FreeTCPPort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// FreeTCPPort is FreePort for programs (the benches, internal/powercut).
func FreeTCPPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
