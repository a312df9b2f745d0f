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
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
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

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago,
// below the kernel's range of ephemeral ports (FreeTCPPort).
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := FreeTCPPort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// FreeTCPPort is FreePort for programs (the benches, internal/powercut).
// The port is below the range the kernel draws the local ports of
// outgoing connections from: a VM keeps its forwarded port across the
// restarts of its QEMU, and a port from that range could be taken in
// between by any connection on the machine (TestVMUpdatePowerLoss once
// failed so: "Could not set up host forwarding rule"). It falls back to a
// port the kernel picks.
func FreeTCPPort() (int, error) {
	low := ephemeralLow()
	for range 64 {
		port := freePortFloor + rand.IntN(low-freePortFloor)
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			l.Close()
			return port, nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// freePortFloor is the lowest port FreeTCPPort hands out, above the
// ports services commonly listen on.
const freePortFloor = 10000

// ephemeralLow returns the lowest port of the kernel's ephemeral range
// (/proc/sys/net/ipv4/ip_local_port_range), or Linux's default.
func ephemeralLow() int {
	const linuxDefault = 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return linuxDefault
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return linuxDefault
	}
	low, err := strconv.Atoi(f[0])
	if err != nil || low <= freePortFloor+1000 || low > 65535 {
		return linuxDefault
	}
	return low
}
