package update

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/piboot"
	"github.com/ingotdev/ingot/packer/format/slot"
)

const piConfig = "arm_64bit=1\nos_prefix=slot-a/\nkernel=vmlinuz\ncmdline=cmdline.txt\n"

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
		img := fakeRoot(100_000, 3)
		if _, err := m.WriteRoot(ctx, bytes.NewReader(img), int64(len(img)), sum(img), runtime.GOARCH, 0); err != nil {
			t.Fatal(err)
		}
		kernel := []byte("pi kernel v2")
		if _, err := m.WriteBootFile(ctx, "vmlinuz", bytes.NewReader(kernel), int64(len(kernel)), sum(kernel)); err != nil {
			t.Fatal(err)
		}
		trees := map[string]string{"bcm2711-rpi-4-b.dtb": "pi4 tree v2", "overlays/vc4-kms-v3d.dtbo": "overlay v2", "overlays/README": "readme"}
		for name, body := range trees {
			if _, err := m.WriteBootFile(ctx, name, strings.NewReader(body), int64(len(body)), sum([]byte(body))); err != nil {
				t.Fatalf("WriteBootFile(%s) = %v", name, err)
			}
		}
		for _, bad := range []string{"overlays/../../x.dtbo", "../x.dtb", "overlays/sub/x.dtbo", "config.txt", "bootcode.bin"} {
			if _, err := m.WriteBootFile(ctx, bad, strings.NewReader("x"), 1, sum([]byte("x"))); err == nil {
				t.Errorf("WriteBootFile(%q) = nil, want an error", bad)
			}
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
		bf, err := m.BootFiles(ctx, "b")
		if err != nil {
			t.Fatal(err)
		}
		for name, body := range trees {
			if got, _ := os.ReadFile(filepath.Join(r.bootDir, "slot-b", filepath.FromSlash(name))); string(got) != body {
				t.Errorf("slot-b/%s = %q, want %q", name, got, body)
			}
			if h := bf.Slots["b"][name]; h != sum([]byte(body)) {
				t.Errorf("BootFiles(b)[%s] = %q, want the hash of %q", name, h, body)
			}
		}
		try, _ := os.ReadFile(filepath.Join(r.bootDir, piboot.TrybootFile))
		if s, err := piboot.Prefix(try); err != nil || s != "b" {
			t.Errorf("tryboot.txt selects %q, %v; want b", s, err)
		}
		if arg := m.RebootArg(); arg != piboot.RebootArg {
			t.Errorf("RebootArg with a trial pending = %q, want %q", arg, piboot.RebootArg)
		}

		// The firmware boots b once.
		trial, _, err := FirmwareBoot(r.bootDir, slot.B, piboot.Firmware{})
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
			if rec := ReadLastUpdate(r.bootDir); rec == nil || rec.Slot != "b" || rec.Outcome != mgmt.OutcomeConfirmed {
				t.Errorf("record of the last update after confirm = %+v, want b confirmed", rec)
			}
			continue
		}
		// Not confirmed: the next boot is config.txt's, slot a.
		if s, _ := piboot.Active(r.bootDir); s != "a" {
			t.Errorf("config.txt during an unconfirmed trial selects %q, want a", s)
		}
		trial, _, err = FirmwareBoot(r.bootDir, slot.A, piboot.Firmware{})
		if err != nil || trial {
			t.Fatalf("FirmwareBoot(a) after the trial = %v, %v; want a normal boot", trial, err)
		}
		st, _ := ReadState(r.bootDir)
		if st.Active != slot.A || st.Trial != "" || st.LastFailed == nil || st.LastFailed.Slot != slot.B {
			t.Errorf("slot.json after the failed trial = %+v, want a active and b failed", st)
		}
		// FirmwareBoot itself (no Manager yet) fails the update's record.
		if rec := ReadLastUpdate(r.bootDir); rec == nil || rec.Slot != "b" || rec.Outcome != mgmt.OutcomeFailed || st.LastFailed == nil || rec.Reason != st.LastFailed.Reason {
			t.Errorf("record of the last update after the failed trial = %+v, want b failed with slot.json's reason", rec)
		}
	}
}

// TestFirmwareBootUnstartedTrial: a commit whose reboot never happened
// (power cut) leaves the trial pending, not failed.
func TestFirmwareBootUnstartedTrial(t *testing.T) {
	r := newRig(t, slot.State{Active: slot.A, Trial: slot.B, TriesLeft: 1})
	trial, _, err := FirmwareBoot(r.bootDir, slot.A, piboot.Firmware{})
	if err != nil || trial {
		t.Fatalf("FirmwareBoot(a) = %v, %v", trial, err)
	}
	st, _ := ReadState(r.bootDir)
	if st.Trial != slot.B || st.TriesLeft != 1 || st.LastFailed != nil {
		t.Errorf("slot.json = %+v, want the trial of b still pending", st)
	}
}

// TestFirmwareBootAfterTornConfirm: the power went after a confirm saved
// slot.json (b active) but before config.txt was switched, so the firmware
// booted a again. The next boot must run the confirmed b: config.txt is
// switched now, slot.json is left as it is, and the repair is reported.
func TestFirmwareBootAfterTornConfirm(t *testing.T) {
	r := newRig(t, slot.State{Active: slot.B})
	if err := os.WriteFile(filepath.Join(r.bootDir, piboot.ConfigFile), []byte(piConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	trial, repaired, err := FirmwareBoot(r.bootDir, slot.A, piboot.Firmware{})
	if err != nil || trial || !strings.Contains(repaired, "slot.json has b active") {
		t.Fatalf("FirmwareBoot(a) with b active = %v, %q, %v; want a reported repair", trial, repaired, err)
	}
	if s, err := piboot.Active(r.bootDir); err != nil || s != "b" {
		t.Errorf("config.txt after the repair selects %q, %v; want b", s, err)
	}
	if st, _ := ReadState(r.bootDir); st.Active != slot.B || st.Trial != "" {
		t.Errorf("slot.json = %+v, want b active and unchanged", st)
	}
	// Booting the active slot needs no repair.
	if _, repaired, err := FirmwareBoot(r.bootDir, slot.B, piboot.Firmware{}); err != nil || repaired != "" {
		t.Errorf("FirmwareBoot(b) with b active = %q, %v; want nothing to repair", repaired, err)
	}
}

// TestDeviceTreesNeedFirmware: an appliance booted by ingot's own loader
// has no use for device trees and refuses them.
func TestDeviceTreesNeedFirmware(t *testing.T) {
	r := newRig(t, slot.Initial())
	m := r.manager(t, slot.A)
	img := fakeRoot(100_000, 3)
	if _, err := m.WriteRoot(context.Background(), bytes.NewReader(img), int64(len(img)), sum(img), runtime.GOARCH, 0); err != nil {
		t.Fatal(err)
	}
	body := []byte("tree")
	_, err := m.WriteBootFile(context.Background(), "bcm2711-rpi-4-b.dtb", bytes.NewReader(body), int64(len(body)), sum(body))
	if err == nil || !strings.Contains(err.Error(), "reads none") {
		t.Errorf("WriteBootFile(dtb) without firmware = %v, want a refusal", err)
	}
}
