package push_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/internal/powercut"
	"github.com/ingotdev/ingot/internal/vmtest"
)

// defaultPowerLossKills is how many times TestVMUpdatePowerLoss kills QEMU
// unless INGOT_POWERLOSS_N says otherwise (bench/powercut runs 200).
const defaultPowerLossKills = 20

// TestVMUpdatePowerLoss cuts the power (SIGKILL of QEMU) at random points
// of push.Update: mid-stream of the root upload, between the commit and
// the reboot, and during the trial boot. After each cut the VM is started
// again on the same image and must come up healthy on one of its two
// slots, its agent answering, and with the file its service wrote to /perm
// before the first update unchanged. The rig is internal/powercut.
func TestVMUpdatePowerLoss(t *testing.T) {
	vmtest.Kernel(t, "amd64")
	kills := defaultPowerLossKills
	if s := os.Getenv("INGOT_POWERLOSS_N"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("INGOT_POWERLOSS_N=%q: want a positive count", s)
		}
		kills = n
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("INGOT_POWERLOSS_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("INGOT_POWERLOSS_SEED=%q: %v", s, err)
		}
		seed = n
	}
	t.Logf("%d kills, seed %d (INGOT_POWERLOSS_SEED=%d repeats the kill points)", kills, seed, seed)
	rng := powercut.NewRand(seed)

	tok, err := os.ReadFile("../../examples/hello/.ingot/token")
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	rig, err := powercut.New(ctx, powercut.Config{Dir: t.TempDir(), Token: tok, Accel: qemu.AccelTCG, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := rig.Close(); err != nil {
			t.Errorf("stop VM: %v", err)
		}
		if t.Failed() {
			s := rig.Console()
			t.Logf("console (last 20000 bytes):\n%s", s[max(0, len(s)-20000):])
		}
	}()

	type outcome struct{ kills, newBuild, oldBuild int }
	results := map[powercut.Phase]*outcome{}
	var order []powercut.Phase
	loopStart := time.Now()
	for i := range kills {
		phase := powercut.Planned[i%len(powercut.Planned)]
		c, err := rig.Cut(ctx, phase, rng)
		t.Logf("kill %d: planned %s +%s, reached %s: SIGKILL qemu pid %d; vm.Run: %v; update: %v",
			i+1, c.Planned, c.Delay.Round(time.Millisecond), c.Reached, c.PID, c.RunErr, c.UpdateErr)
		if err != nil {
			t.Fatalf("kill %d: %v", i+1, err)
		}
		if c.RunErr == nil {
			t.Errorf("kill %d: vm.Run returned nil after QEMU was killed, want an error", i+1)
		}
		if c.Bricked {
			keepImage(t, rig)
			t.Fatalf("kill %d (%s): after restart: %v", i+1, c.Reached, c.Err)
		}
		if c.PermLost {
			t.Fatalf("kill %d (%s): after restart the service says marker %q, want ok: /perm lost the marker", i+1, c.Reached, c.Verdict)
		}
		o := results[c.Reached]
		if o == nil {
			o = &outcome{}
			results[c.Reached] = o
			order = append(order, c.Reached)
		}
		o.kills++
		which := "old build"
		if c.NewBuild {
			o.newBuild++
			which = "new build"
		} else {
			o.oldBuild++
		}
		t.Logf("kill %d: back up on slot %s with the %s (%s), marker ok, in %s", i+1, c.Slot, which,
			c.Greeting, c.Took.Round(time.Millisecond))
	}
	if strings.Contains(rig.Console(), "marker BAD") {
		t.Errorf("console shows a bad marker")
	}
	perKill := time.Since(loopStart) / time.Duration(kills)
	t.Logf("%d kills in %s (%s each)", kills, time.Since(loopStart).Round(time.Second), perKill.Round(time.Millisecond))
	for _, p := range order {
		o := results[p]
		t.Logf("phase %-14s %2d kills: %d came up on the new build, %d on the old", p, o.kills, o.newBuild, o.oldBuild)
	}
}

// keepImage copies the image of a failed run to $INGOT_POWERLOSS_KEEP
// (when set) for a look with fsck.fat or mtools.
func keepImage(t *testing.T, rig *powercut.Rig) {
	dir := os.Getenv("INGOT_POWERLOSS_KEEP")
	if dir == "" {
		return
	}
	p, err := rig.KeepImage(dir)
	if err != nil {
		t.Errorf("%v", err)
		return
	}
	t.Logf("image kept as %s", filepath.Clean(p))
}
