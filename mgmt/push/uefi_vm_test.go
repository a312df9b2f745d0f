package push

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ingotdev/ingot/builder/assemble"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/hypervisor/bootloader"
	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/internal/powercut/marker"
	"github.com/ingotdev/ingot/internal/vmtest"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/bls"
	"github.com/ingotdev/ingot/packer/format/certpin"
	"github.com/ingotdev/ingot/packer/format/image"
)

// uefiDiskFormat is the disk format the UEFI update test attaches: raw,
// so that the test can read the boot partition between power cuts and
// check that the entries and the host loader pick the same slot (the
// qcow2 copy boots under OVMF in builder/assemble's TestVMUEFIAmd64).
const uefiDiskFormat = "raw"

// defaultUEFIPowerCuts is how many times TestVMUEFIUpdate cuts the power
// during an update unless INGOT_UEFI_POWERCUTS says otherwise.
const defaultUEFIPowerCuts = 10

// crashSource is a service that exits at once: a build whose trial fails.
const crashSource = `package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Println("crash: exiting at once")
	os.Exit(3)
}
`

// writeUEFIApp writes the marker appliance (marker.Source: a file on /perm
// checked at every start) with management over TLS on port 7443, the only
// channel a VM has without an ingot process on the host. With crash, its
// service is crashSource instead.
func writeUEFIApp(t *testing.T, dir, greeting string, crash bool) *config.Config {
	t.Helper()
	pkg := "./cmd/marker"
	if crash {
		pkg = "./cmd/crash"
	}
	files := map[string]string{
		"go.mod":             "module marker\n\ngo 1.26\n",
		"cmd/marker/main.go": marker.Source,
		"cmd/crash/main.go":  crashSource,
		config.FileName: fmt.Sprintf(`name: uefi
targets: [vm-amd64, vm-arm64]
services:
  - name: marker
    go: %s
    env:
      GREETING: %s
    restart: always
    needs_perm: true
    health: {http: "http://127.0.0.1:8080/", interval: 1s, timeout: 500ms}
management: {tcp: ":7443"}
update:
  health_window: 3s
`, pkg, greeting),
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile(filepath.Join(repo, "examples/hello/.ingot/token"))
	if err != nil {
		t.Fatal(err)
	}
	files[".ingot/token"] = string(tok)
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeTestCert(t, dir, "uefi")
	cfg, err := config.Load(filepath.Join(dir, config.FileName))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// uefiVM boots one image through UEFI firmware again and again, as a
// machine is switched on again after a power cut: the same disk and the
// same variable store. The guest's reboots reset in place, through the
// firmware and systemd-boot, as on real hardware.
type uefiVM struct {
	t        *testing.T
	arch     string
	img, dir string
	forwards []qemu.Forward
	console  *vmtest.Console
	vm       *vmtest.VM
}

func (u *uefiVM) start() {
	u.t.Helper()
	fw, err := qemu.UEFI(u.arch, u.dir)
	if err != nil {
		u.t.Fatal(err)
	}
	u.vm = vmtest.Boot(u.t, &qemu.Machine{
		Arch: u.arch, MemoryMiB: 512, Disk: u.img, DiskFormat: uefiDiskFormat, Firmware: fw,
		Forwards: u.forwards, ResetOnReboot: true, Console: u.console,
	})
}

// trialBoots watches the console, every 20 ms until the test ends, for
// the kernel command line of a trial boot after this call; the function
// returned reports when it first appeared (zero: not yet).
func (u *uefiVM) trialBoots() func() time.Time {
	before := strings.Count(u.console.String(), "ingot.trial=1")
	var mu sync.Mutex
	var seen time.Time
	go func() {
		for u.t.Context().Err() == nil {
			if strings.Count(u.console.String(), "ingot.trial=1") > before {
				mu.Lock()
				seen = time.Now()
				mu.Unlock()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return seen
	}
}

// waitTrialBoot waits until seen reports a trial boot.
func (u *uefiVM) waitTrialBoot(seen func() time.Time, limit time.Duration) bool {
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if !seen().IsZero() {
			return true
		}
	}
	return false
}

// exited reports QEMU's end as an error, for marker.Healthy.
func (u *uefiVM) exited() error {
	select {
	case <-u.vm.Exited():
		return fmt.Errorf("QEMU ended")
	default:
		return nil
	}
}

// TestVMUEFIUpdate updates and rolls back an appliance that boots through
// OVMF and systemd-boot under plain QEMU, over the TLS management port,
// with no ingot process on the host:
//   - a good update is confirmed, and still runs after QEMU is killed and
//     started again;
//   - a rollback puts the other slot on trial and confirms it;
//   - an update whose service crashes fails its trial, and the old slot
//     boots by itself;
//   - a power cut (SIGKILL of QEMU) at random points of an update and its
//     trial, 10 times, always leaves a bootable slot with /perm intact.
func TestVMUEFIUpdate(t *testing.T) { testUEFIUpdate(t, config.TargetVMAmd64, defaultUEFIPowerCuts) }

// TestVMUEFIUpdateArm64 does the same for vm-arm64 under AAVMF, without
// the power cuts (TCG runs arm64 guests several times slower), unless
// INGOT_UEFI_POWERCUTS asks for them.
func TestVMUEFIUpdateArm64(t *testing.T) {
	vmtest.Kernel(t, "arm64")
	testUEFIUpdate(t, config.TargetVMArm64, 0)
}

func testUEFIUpdate(t *testing.T, target config.Target, cuts int) {
	vmtest.Kernel(t, target.Arch())
	if s := os.Getenv("INGOT_UEFI_POWERCUTS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			t.Fatalf("INGOT_UEFI_POWERCUTS=%q: want a count", s)
		}
		cuts = n
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("INGOT_POWERLOSS_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("INGOT_POWERLOSS_SEED=%q: %v", s, err)
		}
		seed = n
	}
	t.Logf("%d power cuts, seed %d (INGOT_POWERLOSS_SEED=%d repeats them)", cuts, seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))

	ctx := t.Context()
	tmp := t.TempDir()
	cache := assemble.WithCacheDir(filepath.Join(tmp, "cache"))
	appDir := filepath.Join(tmp, "app")
	greetings := [2]string{"greeting one", "greeting two"}
	img := filepath.Join(tmp, "uefi.img")
	cfg1 := writeUEFIApp(t, appDir, greetings[0], false)
	if _, err := assemble.Image(ctx, cfg1, target, img, cache); err != nil {
		t.Fatal(err)
	}
	port, tlsPort := vmtest.FreePort(t), vmtest.FreePort(t)
	u := &uefiVM{t: t, arch: target.Arch(), img: img, dir: filepath.Join(tmp, "vm"), console: &vmtest.Console{},
		forwards: []qemu.Forward{{Proto: "tcp", HostPort: port, GuestPort: 8080}, {Proto: "tcp", HostPort: tlsPort, GuestPort: 7443}}}
	if err := os.MkdirAll(u.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			s := u.console.String()
			t.Logf("console (last 20000 bytes):\n%s", s[max(0, len(s)-20000):])
		}
	}()
	start := time.Now()
	u.start()

	certPEM, err := os.ReadFile(cfg1.Management.TLSCertFile)
	if err != nil {
		t.Fatal(err)
	}
	pin, err := certpin.OfPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile(filepath.Join(appDir, ".ingot/token"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := mgmt.NewClient(fmt.Sprintf("https://127.0.0.1:%d", tlsPort), string(tok), mgmt.WithCertSHA256(pin))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	_, body, err := marker.Healthy(ctx, u.exited, c, url, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(body, "marker created") || !strings.Contains(body, greetings[0]) {
		t.Fatalf("first boot: GET %s = %q, want %q and a created marker", url, body, greetings[0])
	}
	t.Logf("first boot healthy %s after start", time.Since(start).Round(time.Millisecond))
	opts := []Option{WithLog(testLog{t}), WithPollInterval(300 * time.Millisecond), WithWaitTimeout(5 * time.Minute), WithAssembleOptions(cache)}

	// A good update: the trial boots through systemd-boot's counted
	// entry and is confirmed. It also measures how long the update and
	// its trial boot take, for the power cuts below.
	upStart := time.Now()
	trialSeen := u.trialBoots()
	rep, err := New(c, opts...).Update(ctx, writeUEFIApp(t, appDir, greetings[1], false))
	if err != nil {
		t.Fatal(err)
	}
	upSpan := time.Since(upStart)
	trialSpan := time.Since(trialSeen())
	if rep.Status.Slot != "b" || rep.Status.SlotState == nil || rep.Status.SlotState.Active != "b" || rep.Status.SlotState.Trial != "" {
		t.Fatalf("after the update: slot %q, slot.json %+v; want b active, no trial", rep.Status.Slot, rep.Status.SlotState)
	}
	if !strings.Contains(u.console.String(), `initrd=\initrd.img.b`) || !strings.Contains(u.console.String(), "ingot.trial=1") {
		t.Errorf("the console shows no trial boot of slot b through systemd-boot")
	}
	t.Logf("update confirmed on slot b in %s", upSpan.Round(time.Millisecond))

	// The power goes; the machine comes back on the confirmed slot.
	u.vm.Kill()
	u.start()
	st, body, err := marker.Healthy(ctx, u.exited, c, url, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if st.Slot != "b" || !strings.Contains(body, greetings[1]) || !strings.Contains(body, "marker ok") {
		t.Fatalf("after a power cut: slot %q, GET %s = %q; want b, %q, marker ok", st.Slot, url, body, greetings[1])
	}

	// ingot rollback: slot a (the first build) goes on trial through its
	// own counted entry and is confirmed.
	st, err = New(c, opts...).Rollback(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, body, err = marker.Healthy(ctx, u.exited, c, url, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	if st.Slot != "a" || st.SlotState == nil || st.SlotState.Active != "a" || !strings.Contains(body, greetings[0]) {
		t.Fatalf("after the rollback: slot %q, slot.json %+v, GET = %q; want a active, %q", st.Slot, st.SlotState, body, greetings[0])
	}

	// An update whose service crashes: its trial (slot b) fails and slot
	// a boots again by itself.
	_, err = New(c, opts...).Update(ctx, writeUEFIApp(t, appDir, "greeting crash", true))
	if err == nil || !strings.Contains(err.Error(), "trial failed") {
		t.Fatalf("update to a crashing build = %v, want a failed trial", err)
	}
	st, body, err = marker.Healthy(ctx, u.exited, c, url, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if st.Slot != "a" || st.SlotState.Active != "a" || st.SlotState.LastFailed == nil || st.SlotState.LastFailed.Slot != "b" ||
		!strings.Contains(body, greetings[0]) || !strings.Contains(body, "marker ok") {
		t.Fatalf("after the crashing update: slot %q, slot.json %+v, GET = %q; want a active, b failed, %q, marker ok",
			st.Slot, st.SlotState, body, greetings[0])
	}
	t.Logf("crashing update fell back to slot a: %s", st.SlotState.LastFailed.Reason)

	// Power cuts: even ones anywhere from the start of the update to a
	// little after its confirm (the build on the host, the stream, the
	// commit, the reboot through the firmware, the trial); odd ones
	// during the trial boot, from the moment systemd-boot started it to
	// its confirm, where only the firmware's boot counting brings the old
	// slot back.
	running := 0
	for i := range cuts {
		trialStarted := u.trialBoots()
		next := 1 - running
		cfg := writeUEFIApp(t, appDir, greetings[next], false)
		uctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			_, err := New(c, opts...).Update(uctx, cfg)
			done <- err
		}()
		anchor := "update start"
		delay := time.Duration(rng.Int64N(int64(upSpan + 5*time.Second)))
		if i%2 == 1 {
			anchor = "trial boot"
			delay = time.Duration(rng.Int64N(int64(max(trialSpan, time.Millisecond))))
			if !u.waitTrialBoot(trialStarted, 5*time.Minute) {
				t.Fatalf("cut %d: no trial boot within 5 minutes", i+1)
			}
		}
		var upErr error
		ended := false
		select {
		case upErr = <-done:
			ended = true
			t.Logf("cut %d: the update ended (%v) before the cut at %s +%s", i+1, upErr, anchor, delay.Round(time.Millisecond))
		case <-time.After(delay):
		}
		inTrial := !trialStarted().IsZero()
		u.vm.Kill()
		cancel()
		if !ended {
			upErr = <-done
		}
		t.Logf("cut %d at %s +%s (trial boot under way: %v): update: %v", i+1, anchor, delay.Round(time.Millisecond), inTrial, upErr)
		u.start()
		st, body, err := marker.Healthy(ctx, u.exited, c, url, 6*time.Minute)
		if err != nil {
			t.Fatalf("cut %d at +%s: after the restart: %v", i+1, delay.Round(time.Millisecond), err)
		}
		if !strings.Contains(body, "marker ok") {
			t.Fatalf("cut %d: GET %s = %q, want marker ok: /perm lost the marker", i+1, url, body)
		}
		which := "old build"
		switch {
		case strings.Contains(body, greetings[next]):
			running, which = next, "new build"
		case strings.Contains(body, greetings[running]):
		default:
			t.Fatalf("cut %d: GET %s = %q, want one of the two greetings", i+1, url, body)
		}
		reason := ""
		if st.SlotState.LastFailed != nil {
			reason = st.SlotState.LastFailed.Reason
		}
		t.Logf("cut %d: back up on slot %s with the %s (%q), marker ok; last_failed: %q", i+1, st.Slot, which, greetings[running], reason)
	}
	if strings.Contains(u.console.String(), "marker BAD") {
		t.Errorf("the console shows a bad marker")
	}

	// One slot state, two readers: after all of this, with the power off,
	// the entries as systemd-boot and Linux's vfat left them (long names,
	// deleted entries) read through our FAT reader choose the slot the
	// host-side loader chooses from slot.json.
	st, err = callStatus(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	u.vm.Kill()
	im, err := image.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := im.Boot()
	if err != nil {
		t.Fatal(err)
	}
	des, err := fsys.ReadDir(bls.EntriesDir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	im.Close()
	uefiSlot, uefiTrial, ok := bls.Default(names)
	b, err := bootloader.Prepare(img, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if !ok || string(uefiSlot) != st.Slot || uefiTrial || b.Slot != uefiSlot || b.Trial {
		t.Errorf("entries %v boot slot %s (trial %v), the host loader slot %s (trial %v), the appliance ran %s: the readers disagree",
			names, uefiSlot, uefiTrial, b.Slot, b.Trial, st.Slot)
	}
}
