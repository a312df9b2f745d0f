package push

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/hypervisor/vm"
	"github.com/ingotdev/ingot/internal/vmtest"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/image"
	"github.com/ingotdev/ingot/packer/format/slot"
)

// runVM boots img under TCG in runDir until the test ends, forwarding the
// host ports of forwards, and returns the guest console; a failed test
// logs its tail.
func runVM(t *testing.T, img, runDir string, forwards ...qemu.Forward) *vmtest.Console {
	t.Helper()
	console := &vmtest.Console{}
	vmCtx, stopVM := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- vm.Run(vmCtx, vm.Config{
			Image: img, RunDir: runDir, Accel: qemu.AccelTCG, MemoryMiB: 512,
			Forwards: forwards, Console: console, Logf: t.Logf,
		})
	}()
	t.Cleanup(func() {
		stopVM()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Error("VM did not stop within a minute")
		}
		if t.Failed() {
			t.Logf("console (tail):\n%s", console.Tail(200))
		}
	})
	return console
}

// agentClient returns a client of the agent of the VM in runDir over
// hybrid vsock, with the token of appDir, and its target.
func agentClient(t *testing.T, appDir, runDir string) (*mgmt.Client, string, string) {
	t.Helper()
	target := fmt.Sprintf("unix://%s?port=%d", vm.VsockPath(runDir), config.DefaultVsockPort)
	tok, err := os.ReadFile(filepath.Join(appDir, ".ingot/token"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := mgmt.NewClient(target, string(tok))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, target, string(tok)
}

// rootImage opens an image file and returns its root squashfs
// (image.RootSquashfs) and the function that closes the file.
func rootImage(path string) (*io.SectionReader, func() error, error) {
	im, err := image.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("push: %w", err)
	}
	sr, err := im.RootSquashfs(slot.A)
	if err != nil {
		im.Close()
		return nil, nil, err
	}
	return sr, im.Close, nil
}
