package push

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/ingotdev/ingot/builder/assemble"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/internal/vmtest"
	"github.com/ingotdev/ingot/packer/format/layout"
)

// TestVMUpdateARM64 boots hello v1 built for vm-arm64 under
// qemu-system-aarch64 (TCG) and updates it to v2 over the hybrid vsock
// channel, exactly as on amd64: the agent reports its target, the update
// builds that target again, and v2 answers from slot b, confirmed.
func TestVMUpdateARM64(t *testing.T) {
	vmtest.Kernel(t, "arm64")
	ctx := t.Context()
	tmp := t.TempDir()
	cache := assemble.WithCacheDir(filepath.Join(tmp, "cache"))
	appDir := filepath.Join(tmp, "hello")
	cfg1 := writeHello(t, appDir, "arm greeting v1")
	img := filepath.Join(tmp, "hello-arm64.img")
	start := time.Now()
	rep1, err := assemble.Image(ctx, cfg1, config.TargetVMArm64, img, cache)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("v1 build %s in %s", rep1.BuildID, time.Since(start).Round(time.Millisecond))

	port := vmtest.FreePort(t)
	runDir := filepath.Join(tmp, "run")
	runVM(t, img, runDir, qemu.Forward{Proto: "tcp", HostPort: port, GuestPort: 8080})
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	c, _, _ := agentClient(t, appDir, runDir)
	waitGreeting(t, url, "arm greeting v1", 5*time.Minute)
	st, err := callStatus(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if st.Arch != "arm64" || st.Target != string(config.TargetVMArm64) || st.BuildID != rep1.BuildID {
		t.Fatalf("status over vsock: arch %q target %q build %q; want arm64, vm-arm64, %s", st.Arch, st.Target, st.BuildID, rep1.BuildID)
	}

	cfg2 := writeHello(t, appDir, "arm greeting v2")
	rep, err := New(c, WithLog(testLog{t}), WithPollInterval(500*time.Millisecond),
		WithWaitTimeout(5*time.Minute), WithAssembleOptions(cache)).Update(ctx, cfg2)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Slot != "b" || rep.Status.Slot != "b" || rep.Status.Arch != "arm64" || rep.Status.SlotState == nil ||
		rep.Status.SlotState.Active != "b" || rep.Status.SlotState.Trial != "" {
		t.Errorf("after update: slot %q, status %+v; want arm64 on b, active, no trial", rep.Slot, rep.Status)
	}
	// The command line carries the slot's build id (ingot.build), so it
	// differs with every build; the kernel and initramfs do not.
	if len(rep.BootFiles) != 1 || rep.BootFiles[0] != layout.CmdlineFile {
		t.Errorf("boot files sent = %v, want just %s (same kernel and initramfs)", rep.BootFiles, layout.CmdlineFile)
	}
	waitGreeting(t, url, "arm greeting v2", time.Minute)
	for _, s := range rep.Steps {
		t.Logf("step %s: %s", s.Name, s.Duration.Round(time.Millisecond))
	}
}
