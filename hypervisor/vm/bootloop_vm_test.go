package vm_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ingotdev/ingot/builder/assemble"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/hypervisor/bootloader"
	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/hypervisor/vm"
	"github.com/ingotdev/ingot/internal/vmtest"
)

// silentMemoryMiB is far too little memory for hello's kernel and
// initramfs: the guest resets before its kernel prints a byte.
const silentMemoryMiB = 32

// TestVMSilentResets runs hello with too little memory: Run must stop
// with ErrSilentResets instead of booting the guest again forever.
func TestVMSilentResets(t *testing.T) {
	vmtest.Kernel(t, "amd64")
	cfg, err := config.Load("../../examples/hello/ingot.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "hello.img")
	if _, err := assemble.Image(t.Context(), cfg, config.TargetVMAmd64, img, assemble.WithCacheDir(filepath.Join(dir, "cache"))); err != nil {
		t.Fatal(err)
	}
	console := &vmtest.Console{}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var boots atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- vm.Run(ctx, vm.Config{
			Image: img, RunDir: filepath.Join(dir, "run"), Accel: qemu.AccelTCG, MemoryMiB: silentMemoryMiB,
			Vsock: vm.VsockNone, Console: console, Logf: t.Logf,
			OnBoot: func(*bootloader.Boot) { boots.Add(1) },
		})
	}()
	select {
	case err := <-done:
		if !errors.Is(err, vm.ErrSilentResets) {
			t.Fatalf("vm.Run = %v, want ErrSilentResets", err)
		}
		t.Logf("after %d boots: %v", boots.Load(), err)
	case <-time.After(2 * time.Minute):
		t.Fatalf("vm.Run still booting after 2 minutes (%d boots), want it to stop with ErrSilentResets", boots.Load())
	}
	if s := console.String(); s != "" {
		t.Errorf("console = %q, want nothing: the guest was to reset before its kernel printed", s)
	}
}
