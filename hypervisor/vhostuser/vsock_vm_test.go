package vhostuser

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ingotdev/ingot/internal/vmtest"

	"github.com/ingotdev/ingot/mgmt/transport"
)

// The VM test boots the Debian cloud kernel with the test init
// (vmtest.TestInit, testinit=serve) under QEMU's vhost-user-vsock-pci
// backed by this package, and drives vsock traffic through the hybrid
// socket.

// vsockModules are the modules the guest needs besides their dependencies.
var vsockModules = []string{"virtio_pci", "vmw_vsock_virtio_transport"}

const (
	vmGuestCID    = 3
	vmEchoPort    = 5000
	vmControlPort = 5001
	vmSinkPort    = 5002
	vmSourcePort  = 5003
	vmHostPort    = 6000
)

func TestVMHybridVsock(t *testing.T) {
	guest := vmtest.NewGuest(t, "amd64", vmtest.WithModules(vsockModules...))
	work, err := os.MkdirTemp("", "vuvm")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(work)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	uds := filepath.Join(work, "v.sock")
	vhost := filepath.Join(work, "vhost.sock")
	dev, err := NewDevice(vmGuestCID, uds, WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: vhost, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- dev.ServeListener(ctx, l) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("ServeListener = %v", err)
		}
	}()

	// Guest-initiated connections to host port 6000 land here.
	boots := make(chan string, 8)
	hl, err := net.Listen("unix", fmt.Sprintf("%s_%d", uds, vmHostPort))
	if err != nil {
		t.Fatal(err)
	}
	defer hl.Close()
	go func() {
		for {
			c, err := hl.Accept()
			if err != nil {
				return
			}
			b, _ := io.ReadAll(c)
			c.Close()
			boots <- strings.TrimSpace(string(b))
		}
	}()

	// resetOnReboot keeps QEMU running across a guest reboot; without it
	// QEMU exits and the launcher starts a new one.
	boot := func(resetOnReboot bool) *vmtest.VM {
		m := guest.Machine("quiet", "testinit=serve")
		m.MemoryMiB, m.VhostUserVsock, m.ResetOnReboot = 512, vhost, resetOnReboot
		return vmtest.Boot(t, m)
	}
	qemu := boot(true)
	defer func() { qemu.Kill() }()

	start := time.Now()
	first := waitBoot(t, boots, 120*time.Second)
	t.Logf("guest up in %v (%s); guest-initiated connection reached %s_%d", time.Since(start).Round(time.Millisecond), first, uds, vmHostPort)

	t.Run("RoundTrip1KiB", func(t *testing.T) { echoCheck(t, ctx, uds, 1<<10, 1) })
	t.Run("Echo256MiB", func(t *testing.T) {
		start := time.Now()
		echoCheck(t, ctx, uds, 256<<20, 2)
		d := time.Since(start)
		t.Logf("echo 256 MiB each way in %v: %.1f MB/s per direction", d.Round(time.Millisecond), 256*1.048576/d.Seconds())
	})
	t.Run("Throughput", func(t *testing.T) { throughput(t, ctx, uds, 128<<20) })
	t.Run("Concurrent64x4MiB", func(t *testing.T) {
		start := time.Now()
		var wg sync.WaitGroup
		for i := range 64 {
			wg.Go(func() { echoCheck(t, ctx, uds, 4<<20, uint64(100+i)) })
		}
		wg.Wait()
		d := time.Since(start)
		t.Logf("64 connections x 4 MiB echoed in %v: %.1f MB/s per direction", d.Round(time.Millisecond), 256*1.048576/d.Seconds())
	})
	t.Run("Reboot", func(t *testing.T) {
		c, err := dialRetry(ctx, uds, vmControlPort)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("reboot\n"))
		c.Close()
		start := time.Now()
		again := waitBoot(t, boots, 120*time.Second)
		if again == first {
			t.Fatalf("boot message %q repeated, want a new boot id", again)
		}
		t.Logf("guest rebooted in %v (%s)", time.Since(start).Round(time.Millisecond), again)
		echoCheck(t, ctx, uds, 1<<10, 3)
		echoCheck(t, ctx, uds, 8<<20, 4)
	})
	// With -no-reboot QEMU exits when the guest reboots and the launcher
	// starts a new one on the same vhost-user socket.
	t.Run("NewQEMU", func(t *testing.T) {
		qemu.Kill()
		qemu = boot(false)
		waitBoot(t, boots, 120*time.Second)
		echoCheck(t, ctx, uds, 1<<20, 5)

		c, err := dialRetry(ctx, uds, vmControlPort)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("reboot\n"))
		c.Close()
		select {
		case <-qemu.Exited():
		case <-time.After(60 * time.Second):
			t.Fatal("QEMU with -no-reboot did not exit when the guest rebooted")
		}
		qemu = boot(true)
		waitBoot(t, boots, 120*time.Second)
		echoCheck(t, ctx, uds, 1<<20, 6)
	})
}

func waitBoot(t *testing.T, boots <-chan string, d time.Duration) string {
	t.Helper()
	select {
	case b := <-boots:
		return b
	case <-time.After(d):
		t.Fatalf("no guest-initiated connection to port %d within %v", vmHostPort, d)
		return ""
	}
}

// dialRetry dials a guest port through the hybrid socket, retrying while
// the guest is not listening yet.
func dialRetry(ctx context.Context, uds string, port uint32) (net.Conn, error) {
	target := fmt.Sprintf("unix://%s?port=%d", uds, port)
	deadline := time.Now().Add(60 * time.Second)
	for {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := transport.Dial(dctx, target)
		cancel()
		if err == nil {
			return c, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("Dial(%s): %w", target, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// echoCheck sends n random bytes through the guest's echo port and checks
// the sha256 of what comes back.
func echoCheck(t *testing.T, ctx context.Context, uds string, n int64, seed uint64) {
	c, err := dialRetry(ctx, uds, vmEchoPort)
	if err != nil {
		t.Error(err)
		return
	}
	defer c.Close()
	sent := sha256.New()
	werr := make(chan error, 1)
	go func() {
		src := io.LimitReader(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}), n)
		_, err := io.CopyBuffer(io.MultiWriter(c, sent), src, make([]byte, 256<<10))
		if err == nil {
			err = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		werr <- err
	}()
	got := sha256.New()
	m, err := io.CopyBuffer(got, c, make([]byte, 256<<10))
	if err != nil {
		t.Errorf("echo %d bytes: read after %d: %v", n, m, err)
		return
	}
	if err := <-werr; err != nil {
		t.Errorf("echo %d bytes: write: %v", n, err)
		return
	}
	if m != n || !bytes.Equal(got.Sum(nil), sent.Sum(nil)) {
		t.Errorf("echo %d bytes: got %d bytes, sha256 %x, want %x", n, m, got.Sum(nil), sent.Sum(nil))
	}
}

// throughput measures each direction alone.
func throughput(t *testing.T, ctx context.Context, uds string, n int64) {
	// Host to guest: the guest counts what it reads.
	c, err := dialRetry(ctx, uds, vmSinkPort)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	src := io.LimitReader(rand.NewChaCha8([32]byte{9}), n)
	if _, err := io.CopyBuffer(c, src, make([]byte, 256<<10)); err != nil {
		t.Fatal(err)
	}
	c.(interface{ CloseWrite() error }).CloseWrite()
	line, err := bufio.NewReader(c).ReadString('\n')
	h2g := time.Since(start)
	c.Close()
	if count, _, _ := strings.Cut(line, " "); err != nil || count != strconv.FormatInt(n, 10) {
		t.Fatalf("sink answered %q, %v; want %d bytes and the guest's busy share", line, err, n)
	}

	// Guest to host: the guest sends its pattern.
	if c, err = dialRetry(ctx, uds, vmSourcePort); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start = time.Now()
	fmt.Fprintf(c, "%d\n", n)
	got := sha256.New()
	m, err := io.CopyBuffer(got, c, make([]byte, 256<<10))
	g2h := time.Since(start)
	if err != nil || m != n {
		t.Fatalf("source: read %d bytes, %v; want %d", m, err, n)
	}
	want := sha256.New()
	block := guestPattern()
	for left := n; left > 0; left -= int64(len(block)) {
		want.Write(block[:min(left, int64(len(block)))])
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatalf("source: sha256 %s, want %s", hex.EncodeToString(got.Sum(nil)), hex.EncodeToString(want.Sum(nil)))
	}
	mb := float64(n) / 1e6
	t.Logf("hybrid vsock throughput, %d MiB each: host->guest %.1f MB/s, guest->host %.1f MB/s", n>>20, mb/h2g.Seconds(), mb/g2h.Seconds())
}

// guestPattern is testinit's pattern().
func guestPattern() []byte {
	r := rand.New(rand.NewPCG(42, 42))
	b := make([]byte, 1<<20)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}
