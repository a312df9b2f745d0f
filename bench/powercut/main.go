// Command powercut cuts the power of a VM appliance during `ingot update`
// again and again: each trial starts an A/B update (push.Update, as
// `ingot update` runs it), SIGKILLs QEMU at a random point of one phase —
// mid-stream of the root upload, commit → reboot, or the trial boot, in
// turn — starts the VM again on the same disk, and records which slot and
// build came back and whether the file the appliance keeps on /perm
// survived. The rig is internal/powercut, the same one
// TestVMUpdatePowerLoss (mgmt/push) runs 20 cuts with. Run it from the
// repository root:
//
//	INGOT_KERNEL_DEB=.cache/kernels/linux-image-cloud-amd64.deb go run ./bench/powercut [-trials 200] [-seed S] [-accel tcg] [-v]
//
// It prints one line per trial and ends with:
//
//	RESULT powercut trials=N bricked=B perm_lost=P old_slot=O new_slot=M mid_stream=… commit_reboot=… trial=… seconds=…
//
// bricked counts trials after which no slot came up with a healthy agent
// and service within powercut.RecoveryLimit; perm_lost those after which
// the /perm marker was missing or changed; old_slot and new_slot those
// that came back on the build that ran before the update or on the one
// being pushed. mid_stream, commit_reboot and trial count where the cuts
// landed (a cut after the last byte of the upload but before the commit
// returned counts as commit_reboot). After a bricked trial or a lost
// marker the bench builds a fresh appliance and goes on. -seed repeats a
// run's kill points (the same seed in INGOT_POWERLOSS_SEED repeats them in
// the test).
//
// Anchor: the project's benchmarks measure ours against a named anchor in
// the same run. This one measures reliability, not speed, and has no
// other tool to race: its anchor is the requirement of issue 12, 0
// bricked and 0 perm_lost over 200 cuts.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	"github.com/ingotdev/ingot/internal/vmtest"

	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/internal/powercut"
)

// tokenFile is the management token the appliance is built with (the
// hello example's, relative to the repository root).
const tokenFile = "examples/hello/.ingot/token"

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "bench/powercut: %v\n", err)
		os.Exit(1)
	}
}

// tally is what the trials came to.
type tally struct {
	trials, bricked, permLost, oldSlot, newSlot int
	midStream, commitReboot, trial              int
}

func (t *tally) add(c powercut.Cut) {
	t.trials++
	switch c.Reached {
	case powercut.Stream:
		t.midStream++
	case powercut.PushToCommit, powercut.Commit:
		t.commitReboot++
	case powercut.Trial:
		t.trial++
	}
	switch {
	case c.Bricked:
		t.bricked++
		return
	case c.NewBuild:
		t.newSlot++
	default:
		t.oldSlot++
	}
	if c.PermLost {
		t.permLost++
	}
}

func run() error {
	trials := flag.Int("trials", 200, "power cuts")
	seed := flag.Uint64("seed", uint64(time.Now().UnixNano()), "seed of the kill points (printed; repeats a run)")
	accel := flag.String("accel", string(qemu.AccelTCG), "accelerator: tcg, kvm or auto")
	verbose := flag.Bool("v", false, "print push's lines, the VM's boots and the guest's console")
	flag.Parse()
	if *trials < 1 {
		return fmt.Errorf("-trials %d: want at least 1", *trials)
	}
	if _, err := vmtest.KernelDeb("amd64"); err != nil {
		return err
	}
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		return fmt.Errorf("%w (run from the repository root)", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	tmp, err := os.MkdirTemp("", "ingot-bench-powercut-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cfg := powercut.Config{Token: tok, Accel: qemu.Accel(*accel)}
	if *verbose {
		cfg.Logf = func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
		cfg.Console = os.Stderr
	}
	fmt.Printf("powercut: %d trials, seed %d (-seed %d repeats the kill points), accel %s\n", *trials, *seed, *seed, *accel)
	rng := powercut.NewRand(*seed)

	start := time.Now()
	var rig *powercut.Rig
	defer func() {
		if rig != nil {
			closeRig(rig)
		}
	}()
	rigs := 0
	var t tally
	for i := range *trials {
		if rig == nil {
			rigs++
			cfg.Dir = filepath.Join(tmp, fmt.Sprintf("rig%d", rigs))
			if err := os.Mkdir(cfg.Dir, 0o700); err != nil {
				return err
			}
			rigStart := time.Now()
			if rig, err = powercut.New(ctx, cfg); err != nil {
				return err
			}
			sp := rig.Spans()
			fmt.Printf("appliance %d ready in %s; measured update: %s %s, %s %s, %s %s\n", rigs,
				time.Since(rigStart).Round(time.Millisecond),
				powercut.Stream, sp[powercut.Stream].Round(time.Millisecond),
				powercut.Commit, sp[powercut.Commit].Round(time.Millisecond),
				powercut.Trial, sp[powercut.Trial].Round(time.Millisecond))
		}
		c, err := rig.Cut(ctx, powercut.Planned[i%len(powercut.Planned)], rng)
		if err != nil {
			return fmt.Errorf("trial %d: planned %s: %w", i+1, c.Planned, err)
		}
		t.add(c)
		printTrial(os.Stdout, i+1, *trials, c)
		if c.RunErr == nil {
			fmt.Fprintf(os.Stderr, "trial %d: vm.Run returned nil after QEMU was killed\n", i+1)
		}
		if c.Bricked || c.PermLost {
			if dir := os.Getenv("INGOT_POWERLOSS_KEEP"); dir != "" {
				if p, err := rig.KeepImage(dir); err != nil {
					fmt.Fprintln(os.Stderr, err)
				} else {
					fmt.Printf("trial %d: image kept as %s\n", i+1, p)
				}
			}
			// The disk is no longer a fair start: go on with a fresh one.
			closeRig(rig)
			rig = nil
		}
	}
	fmt.Printf("RESULT powercut trials=%d bricked=%d perm_lost=%d old_slot=%d new_slot=%d mid_stream=%d commit_reboot=%d trial=%d seconds=%.1f\n",
		t.trials, t.bricked, t.permLost, t.oldSlot, t.newSlot, t.midStream, t.commitReboot, t.trial, time.Since(start).Seconds())
	return nil
}

// printTrial prints one trial's line.
func printTrial(w io.Writer, i, n int, c powercut.Cut) {
	head := fmt.Sprintf("trial %d/%d: planned %s +%s, cut in %s (qemu pid %d)", i, n, c.Planned, c.Delay.Round(time.Millisecond), c.Reached, c.PID)
	if c.Bricked {
		fmt.Fprintf(w, "%s: BRICKED: %v\n", head, c.Err)
		return
	}
	build := "old"
	if c.NewBuild {
		build = "new"
	}
	fmt.Fprintf(w, "%s: slot %s, %s build (%s), marker %s, in %s\n", head, c.Slot, build, c.Greeting, c.Verdict, c.Took.Round(time.Millisecond))
}

func closeRig(r *powercut.Rig) {
	if err := r.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "stop VM: %v\n", err)
	}
}
