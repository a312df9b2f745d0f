package update

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/ingotdev/ingot/appliance/piboot"
	"github.com/ingotdev/ingot/appliance/slot"
)

const piConfig = "arm_64bit=1\nkernel=slot-a/vmlinuz\ncmdline=slot-a/cmdline.txt\n"

// TestRaspberryPiTrial runs an update through the Raspberry Pi firmware's
// files: the trial goes to tryboot.txt, the kernel to slot b's os_prefix
// directory, the reboot needs the tryboot argument, and only a confirmed
// trial changes config.txt; a trial that did not confirm is recorded as
// failed on the next (normal) boot.
func TestRaspberryPiTrial(t *testing.T) {
	ctx := context.Background()
	for _, confirm := range []bool{true, false} {
		r := newRig(t, slot.Initial())
		if err := os.WriteFile(filepath.Join(r.bootDir, piboot.ConfigFile), []byte(piConfig), 0o644); err != nil {
			t.Fatal(err)
		}
		m := r.manager(t, slot.A, WithFirmware(piboot.Firmware{}))
		img := image(100_000, 3)
		if _, err := m.WriteRoot(ctx, bytes.NewReader(img), int64(len(img)), sum(img), runtime.GOARCH); err != nil {
			t.Fatal(err)
		}
		kernel := []byte("pi kernel v2")
		if _, err := m.WriteBootFile(ctx, "vmlinuz", bytes.NewReader(kernel), int64(len(kernel)), sum(kernel)); err != nil {
			t.Fatal(err)
		}
		if arg := m.RebootArg(); arg != "" {
			t.Errorf("RebootArg before commit = %q, want none", arg)
		}
		if _, err := m.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(filepath.Join(r.bootDir, "slot-b", "vmlinuz")); string(got) != "pi kernel v2" {
			t.Errorf("slot-b/vmlinuz = %q, want the new kernel", got)
		}
		try, _ := os.ReadFile(filepath.Join(r.bootDir, piboot.TrybootFile))
		if s, err := piboot.Prefix(try); err != nil || s != "b" {
			t.Errorf("tryboot.txt selects %q, %v; want b", s, err)
		}
		if arg := m.RebootArg(); arg != piboot.RebootArg {
			t.Errorf("RebootArg with a trial pending = %q, want %q", arg, piboot.RebootArg)
		}

		// The firmware boots b once.
		trial, err := FirmwareBoot(r.bootDir, slot.B)
		if err != nil || !trial {
			t.Fatalf("FirmwareBoot(b) = %v, %v; want a trial", trial, err)
		}
		if confirm {
			m2 := r.manager(t, slot.B, WithFirmware(piboot.Firmware{}))
			if _, err := m2.Confirm(); err != nil {
				t.Fatal(err)
			}
			if s, err := piboot.Active(r.bootDir); err != nil || s != "b" {
				t.Errorf("config.txt after confirm selects %q, %v; want b", s, err)
			}
			if _, err := os.Stat(filepath.Join(r.bootDir, piboot.TrybootFile)); !os.IsNotExist(err) {
				t.Errorf("tryboot.txt after confirm: %v, want removed", err)
			}
			continue
		}
		// Not confirmed: the next boot is config.txt's, slot a.
		if s, _ := piboot.Active(r.bootDir); s != "a" {
			t.Errorf("config.txt during an unconfirmed trial selects %q, want a", s)
		}
		trial, err = FirmwareBoot(r.bootDir, slot.A)
		if err != nil || trial {
			t.Fatalf("FirmwareBoot(a) after the trial = %v, %v; want a normal boot", trial, err)
		}
		st, _ := ReadState(r.bootDir)
		if st.Active != slot.A || st.Trial != "" || st.LastFailed == nil || st.LastFailed.Slot != slot.B {
			t.Errorf("slot.json after the failed trial = %+v, want a active and b failed", st)
		}
	}
}

// TestFirmwareBootUnstartedTrial: a commit whose reboot never happened
// (power cut) leaves the trial pending, not failed.
func TestFirmwareBootUnstartedTrial(t *testing.T) {
	r := newRig(t, slot.State{Active: slot.A, Trial: slot.B, TriesLeft: 1})
	trial, err := FirmwareBoot(r.bootDir, slot.A)
	if err != nil || trial {
		t.Fatalf("FirmwareBoot(a) = %v, %v", trial, err)
	}
	st, _ := ReadState(r.bootDir)
	if st.Trial != slot.B || st.TriesLeft != 1 || st.LastFailed != nil {
		t.Errorf("slot.json = %+v, want the trial of b still pending", st)
	}
}
