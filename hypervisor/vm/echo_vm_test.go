package vm_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ingotdev/ingot/internal/vmtest"

	"github.com/ingotdev/ingot/builder/assemble"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/hypervisor/vm"
	"github.com/ingotdev/ingot/mgmt/transport"
)

// echoTarget is the hybrid-vsock target of guest port in runDir.
func echoTarget(runDir string, port int) string {
	return fmt.Sprintf("unix://%s?port=%d", vm.VsockPath(runDir), port)
}

// roundTrip sends n random bytes to the echo service and checks the echo
// by sha256, writing and reading concurrently.
func roundTrip(ctx context.Context, target string, n int64) error {
	c, err := transport.Dial(ctx, target)
	if err != nil {
		return err
	}
	defer c.Close()
	sent := sha256.New()
	errc := make(chan error, 1)
	go func() {
		_, err := io.Copy(c, io.TeeReader(io.LimitReader(rand.Reader, n), sent))
		if cw, ok := c.(interface{ CloseWrite() error }); ok && err == nil {
			err = cw.CloseWrite()
		}
		errc <- err
	}()
	got := sha256.New()
	m, err := io.Copy(got, io.LimitReader(c, n))
	if err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if err := <-errc; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if m != n || !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
		return fmt.Errorf("echo of %d bytes: got %d bytes, sha256 %x, want %x", n, m, got.Sum(nil), sent.Sum(nil))
	}
	return nil
}

// TestVMVsockEcho boots the vsock-echo appliance and uses the hybrid vsock
// channel of the built-in backend: round trips, many connections at once,
// a guest-initiated connection, and the channel after a guest reboot.
func TestVMVsockEcho(t *testing.T) {
	vmtest.Kernel(t, "amd64")
	cfg, err := config.Load("../../examples/vsock-echo/ingot.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "echo.img")
	if _, err := assemble.Image(t.Context(), cfg, config.TargetVMAmd64, img, assemble.WithCacheDir(filepath.Join(dir, "cache"))); err != nil {
		t.Fatal(err)
	}
	// Short: Unix socket paths are limited to 107 bytes.
	runDir, err := os.MkdirTemp("", "vsock-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(runDir)

	// The guest announces each boot on host port 6000.
	announce, err := net.Listen("unix", vm.VsockPath(runDir)+"_6000")
	if err != nil {
		t.Fatal(err)
	}
	defer announce.Close()
	boots := make(chan string, 4)
	go func() {
		for {
			c, err := announce.Accept()
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			boots <- strings.TrimSpace(line)
		}
	}()

	console := &vmtest.Console{}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- vm.Run(ctx, vm.Config{Image: img, RunDir: runDir, Accel: qemu.AccelTCG, MemoryMiB: 512, Console: console, Logf: t.Logf})
	}()
	defer func() {
		if t.Failed() {
			t.Logf("console:\n%s", console.String())
		}
	}()
	waitBoot := func(what string) string {
		select {
		case id := <-boots:
			return id
		case err := <-done:
			t.Fatalf("%s: VM stopped: %v", what, err)
		case <-time.After(3 * time.Minute):
			t.Fatalf("%s: no announcement on host port 6000 within 3 minutes", what)
		}
		return ""
	}
	first := waitBoot("first boot")
	target := echoTarget(runDir, 5000)
	ctxIO, cancelIO := context.WithTimeout(ctx, 5*time.Minute)
	defer cancelIO()

	if err := roundTrip(ctxIO, target, 1<<10); err != nil {
		t.Fatalf("1 KiB round trip: %v", err)
	}
	start := time.Now()
	const big = 256 << 20
	if err := roundTrip(ctxIO, target, big); err != nil {
		t.Fatalf("256 MiB round trip: %v", err)
	}
	t.Logf("256 MiB echoed in %v (%.0f MB/s each way)", time.Since(start), float64(big)/1e6/time.Since(start).Seconds())

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := roundTrip(ctxIO, target, 4<<20); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("one of 64 concurrent connections: %v", err)
	}

	// Reboot the guest; vm.Run starts a new QEMU that connects to the same
	// backend, and the same host socket reaches the new boot.
	c, err := transport.Dial(ctxIO, echoTarget(runDir, 5001))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("reboot\n")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	second := waitBoot("after reboot")
	if second == first {
		t.Fatalf("boot id %s announced twice: the guest did not reboot", first)
	}
	if err := roundTrip(ctxIO, target, 1<<20); err != nil {
		t.Fatalf("round trip after reboot: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("vm.Run: %v", err)
	}
}
