package assemble

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ingotdev/ingot/internal/vmtest"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/hypervisor/vm"
)

// TestVMHello builds examples/hello for amd64, boots it under TCG, and
// fetches the greeting through a forwarded port.
func TestVMHello(t *testing.T) { testHello(t, config.TargetVMAmd64, vm.FirmwareDirect) }

// TestVMRunUEFI is TestVMHello through `ingot run -firmware uefi`'s path:
// vm.Run boots the image with OVMF and the image's systemd-boot.
func TestVMRunUEFI(t *testing.T) { testHello(t, config.TargetVMAmd64, vm.FirmwareUEFI) }

// TestVMHelloARM64 does the same for vm-arm64 under qemu-system-aarch64.
func TestVMHelloARM64(t *testing.T) {
	vmtest.Kernel(t, "arm64")
	testHello(t, config.TargetVMArm64, vm.FirmwareDirect)
}

func testHello(t *testing.T, target config.Target, firmware string) {
	cfg := helloConfig(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "hello.img")
	rep, err := Image(t.Context(), cfg, target, img, WithCacheDir(filepath.Join(dir, "cache")))
	if err != nil {
		t.Fatal(err)
	}
	port := vmtest.FreePort(t)
	console := &vmtest.Console{}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- vm.Run(ctx, vm.Config{
			Image: img, RunDir: filepath.Join(dir, "run"), Accel: qemu.AccelTCG, MemoryMiB: 512,
			Forwards: []qemu.Forward{{Proto: "tcp", HostPort: port, GuestPort: 8080}},
			Console:  console, Logf: t.Logf, Firmware: firmware,
		})
	}()
	defer func() {
		if t.Failed() {
			t.Logf("console:\n%s", console.String())
		}
	}()

	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(3 * time.Minute)
	var body string
	for time.Now().Before(deadline) {
		resp, err := client.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				body = string(b)
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("VM stopped before hello answered: %v", err)
		case <-time.After(500 * time.Millisecond):
		}
	}
	if !strings.Contains(body, "hello from ingot") || !strings.Contains(body, rep.BuildID) {
		t.Fatalf("GET %s = %q, want the greeting and build id %s", url, body, rep.BuildID)
	}
	if !strings.Contains(console.String(), "hello: ") {
		t.Errorf("console has no line prefixed with the service name 'hello: '")
	}
	if efi := strings.Contains(console.String(), `initrd=\initrd.img.a`); efi != (firmware == vm.FirmwareUEFI) {
		t.Errorf("firmware %q: the console shows a systemd-boot command line: %v", firmware, efi)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("vm.Run after stop: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("VM did not stop within a minute of cancel")
	}
}
