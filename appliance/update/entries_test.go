package update

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/bls"
	"github.com/ingotdev/ingot/packer/format/slot"
)

// entriesRig is a boot partition with the UEFI path: per-slot command
// lines and the entries the packer writes for a new image.
func entriesRig(t *testing.T, state slot.State) (*rig, *Entries) {
	t.Helper()
	r := newRig(t, state)
	for _, n := range []slot.Name{slot.A, slot.B} {
		if err := os.WriteFile(filepath.Join(r.bootDir, n.BootFile("cmdline.txt")), []byte("console=ttyS0 panic=1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(r.bootDir, bls.EntriesDir), 0o755); err != nil {
		t.Fatal(err)
	}
	e := &Entries{Title: "ingot test", Root: func(n slot.Name) (string, error) { return "PART-" + string(n), nil }}
	if err := e.Sync(r.bootDir); err != nil {
		t.Fatal(err)
	}
	return r, e
}

func entryNames(t *testing.T, bootDir string) []string {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(bootDir, bls.EntriesDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	slices.Sort(names)
	return names
}

// firmwareBoot is systemd-boot: it picks the default entry and, for a
// counted one, renames it with one try fewer before it boots it.
func firmwareBoot(t *testing.T, bootDir string) (slot.Name, bool) {
	t.Helper()
	l := bls.List(entryNames(t, bootDir))
	if len(l) == 0 {
		t.Fatal("no entry to boot")
	}
	e := l[0].Entry
	if e.Counted {
		next := e
		next.Left, next.Done = max(0, e.Left-1), e.Done+1
		dir := filepath.Join(bootDir, bls.EntriesDir)
		if err := os.Rename(filepath.Join(dir, l[0].Name), filepath.Join(dir, next.FileName())); err != nil {
			t.Fatal(err)
		}
	}
	return e.Slot, e.Counted
}

func readState(t *testing.T, bootDir string) slot.State {
	t.Helper()
	s, err := ReadState(bootDir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// commitB writes a root to slot b from a boot of a and commits it.
func commitB(t *testing.T, r *rig, e *Entries) {
	t.Helper()
	ctx := context.Background()
	m := r.manager(t, slot.A, WithEntries(e))
	img := fakeRoot(100_000, 7)
	if _, err := m.WriteRoot(ctx, bytes.NewReader(img), int64(len(img)), sum(img), runtime.GOARCH, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestEntriesConfirmedTrial: a commit adds a counted entry for the trial
// that systemd-boot prefers; its boot spends the try in slot.json too;
// the confirm leaves one entry, for the new active slot.
func TestEntriesConfirmedTrial(t *testing.T) {
	r, e := entriesRig(t, slot.Initial())
	if got := entryNames(t, r.bootDir); !slices.Equal(got, []string{"ingot-1-a.conf"}) {
		t.Fatalf("initial entries %v", got)
	}
	commitB(t, r, e)
	names := entryNames(t, r.bootDir)
	if !slices.Equal(names, []string{"ingot-1-a.conf", "ingot-2-b+1.conf"}) {
		t.Fatalf("entries after commit %v", names)
	}
	content, err := os.ReadFile(filepath.Join(r.bootDir, bls.EntriesDir, "ingot-2-b+1.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(content), "options console=ttyS0 panic=1 ingot.root=PARTUUID=PART-b ingot.slot=b ingot.trial=1\n") {
		t.Errorf("trial entry:\n%s", content)
	}
	booted, trial := firmwareBoot(t, r.bootDir)
	if booted != slot.B || !trial {
		t.Fatalf("firmware booted %s trial=%v", booted, trial)
	}
	rep, err := e.Boot(r.bootDir, booted, trial)
	if err != nil || !rep.Trial || rep.Reboot {
		t.Fatalf("Boot = %+v, %v", rep, err)
	}
	if s := readState(t, r.bootDir); s.Trial != slot.B || s.TriesLeft != 0 {
		t.Fatalf("slot.json after the trial boot %+v: the firmware's spent try is not recorded", s)
	}
	m := r.manager(t, slot.B, WithEntries(e))
	if _, err := m.Confirm(); err != nil {
		t.Fatal(err)
	}
	if got := entryNames(t, r.bootDir); !slices.Equal(got, []string{"ingot-2-b.conf"}) {
		t.Fatalf("entries after confirm %v", got)
	}
	if b, _ := firmwareBoot(t, r.bootDir); b != slot.B {
		t.Fatalf("after confirm the firmware boots %s", b)
	}
}

// TestEntriesFailedTrial: a trial that never confirms (power cut during
// it) is skipped by the firmware at the next boot, and that boot records
// the failure in slot.json as the host loader would.
func TestEntriesFailedTrial(t *testing.T) {
	r, e := entriesRig(t, slot.Initial())
	commitB(t, r, e)
	firmwareBoot(t, r.bootDir) // b's trial; the power goes before stage1 records anything
	booted, trial := firmwareBoot(t, r.bootDir)
	if booted != slot.A || trial {
		t.Fatalf("second boot ran %s trial=%v, want a", booted, trial)
	}
	if _, err := e.Boot(r.bootDir, booted, trial); err != nil {
		t.Fatal(err)
	}
	s := readState(t, r.bootDir)
	if s.Active != slot.A || s.Trial != "" || s.LastFailed == nil || s.LastFailed.Slot != slot.B {
		t.Fatalf("slot.json %+v, want a active with b's failure", s)
	}
	if got := entryNames(t, r.bootDir); !slices.Equal(got, []string{"ingot-1-a.conf"}) {
		t.Fatalf("entries %v", got)
	}
}

// TestEntriesUnstartedTrial: booting the active slot while the trial's
// entry still has its try (the menu, or a commit cut short before its
// entry) leaves the trial pending, with its entry.
func TestEntriesUnstartedTrial(t *testing.T) {
	r, e := entriesRig(t, slot.Initial())
	st, _ := slot.Initial().StartTrial(slot.B, 1)
	if err := slot.Save(r.bootDir, st); err != nil { // slot.json written, entry not yet
		t.Fatal(err)
	}
	if _, err := e.Boot(r.bootDir, slot.A, false); err != nil {
		t.Fatal(err)
	}
	if s := readState(t, r.bootDir); s.Trial != slot.B || s.TriesLeft != 1 {
		t.Fatalf("slot.json %+v: the unstarted trial was dropped", s)
	}
	if b, trial := firmwareBoot(t, r.bootDir); b != slot.B || !trial {
		t.Fatalf("next firmware boot %s trial=%v, want b's trial", b, trial)
	}
}

// TestEntriesStaleTrial: a trial entry that slot.json does not name (a
// rollback cut short after slot.json) must not run: Boot asks for a
// reboot and removes it, so the active slot boots next.
func TestEntriesStaleTrial(t *testing.T) {
	r, e := entriesRig(t, slot.Initial())
	commitB(t, r, e)
	if err := slot.Save(r.bootDir, slot.Initial()); err != nil { // the cancel; its entry removal never happened
		t.Fatal(err)
	}
	booted, trial := firmwareBoot(t, r.bootDir)
	rep, err := e.Boot(r.bootDir, booted, trial)
	if err != nil || !rep.Reboot || rep.Trial || !strings.Contains(rep.Note, "does not name") {
		t.Fatalf("Boot of a stale trial = %+v, %v", rep, err)
	}
	if b, _ := firmwareBoot(t, r.bootDir); b != slot.A {
		t.Fatalf("after the repair the firmware boots %s", b)
	}
}

// TestEntriesTornConfirm: slot.json has the confirmed slot active but
// the entries still boot the old one; that boot repairs the entries.
func TestEntriesTornConfirm(t *testing.T) {
	r, e := entriesRig(t, slot.Initial())
	if err := slot.Save(r.bootDir, slot.State{Active: slot.B}); err != nil {
		t.Fatal(err)
	}
	rep, err := e.Boot(r.bootDir, slot.A, false)
	if err != nil || !strings.Contains(rep.Note, "confirm") {
		t.Fatalf("Boot = %+v, %v", rep, err)
	}
	if b, _ := firmwareBoot(t, r.bootDir); b != slot.B {
		t.Fatalf("after the repair the firmware boots %s, want b", b)
	}
}

// TestEntriesHostLoaderTrial: the host loader spent the try in slot.json;
// the trial's entry goes, so a UEFI boot after it agrees (falls back).
func TestEntriesHostLoaderTrial(t *testing.T) {
	r, e := entriesRig(t, slot.Initial())
	commitB(t, r, e)
	s := readState(t, r.bootDir)
	d := s.Decide() // what hypervisor/bootloader does
	if err := slot.Save(r.bootDir, d.Next); err != nil {
		t.Fatal(err)
	}
	rep, err := e.Boot(r.bootDir, d.Boot, d.Trial)
	if err != nil || !rep.Trial {
		t.Fatalf("Boot = %+v, %v", rep, err)
	}
	if b, trial := firmwareBoot(t, r.bootDir); b != slot.A || trial {
		t.Fatalf("a UEFI boot after the host loader's trial runs %s trial=%v, want a", b, trial)
	}
}

// TestEntriesUnreadableSlotJSON: with slot.json garbage, the entries
// still boot a slot, and that boot writes it back as active.
func TestEntriesUnreadableSlotJSON(t *testing.T) {
	r, e := entriesRig(t, slot.Initial())
	if err := os.WriteFile(filepath.Join(r.bootDir, "slot.json"), bytes.Repeat([]byte{0xff}, 512), 0o644); err != nil {
		t.Fatal(err)
	}
	booted, trial := firmwareBoot(t, r.bootDir)
	rep, err := e.Boot(r.bootDir, booted, trial)
	if err != nil || rep.Note == "" {
		t.Fatalf("Boot = %+v, %v", rep, err)
	}
	if s := readState(t, r.bootDir); s.Active != slot.A || s.LastFailed == nil {
		t.Fatalf("slot.json %+v", s)
	}
}

// TestEntriesRootWriteDropsTrial: writing a new root over a pending
// trial removes that trial's entry before the first byte.
func TestEntriesRootWriteDropsTrial(t *testing.T) {
	r, e := entriesRig(t, slot.Initial())
	commitB(t, r, e)
	m := r.manager(t, slot.A, WithEntries(e))
	img := fakeRoot(100_000, 9)
	// A stream that fails half-way: the trial was cancelled before it.
	body := bytes.NewReader(img[:50_000])
	if _, err := m.WriteRoot(context.Background(), body, int64(len(img)), sum(img), runtime.GOARCH, 0); err == nil {
		t.Fatal("a short stream was accepted")
	}
	if got := entryNames(t, r.bootDir); !slices.Equal(got, []string{"ingot-1-a.conf"}) {
		t.Fatalf("entries after a cut root write %v", got)
	}
}

// TestEntriesRollback: a rollback puts the other slot on trial with its
// own counted entry; cancelling it removes that entry again.
func TestEntriesRollback(t *testing.T) {
	r, e := entriesRig(t, slot.Initial())
	commitB(t, r, e)
	m := r.manager(t, slot.A, WithEntries(e))
	if _, err := m.Rollback(context.Background()); err != nil { // cancels b's pending trial
		t.Fatal(err)
	}
	if got := entryNames(t, r.bootDir); !slices.Equal(got, []string{"ingot-1-a.conf"}) {
		t.Fatalf("entries after cancelling the trial %v", got)
	}
	st, err := m.Rollback(context.Background()) // b holds a valid root: it goes on trial
	if err != nil || st.Trial != "b" {
		t.Fatalf("Rollback = %+v, %v; want b on trial", st, err)
	}
	if b, trial := firmwareBoot(t, r.bootDir); b != slot.B || !trial {
		t.Fatalf("after the rollback the firmware boots %s trial=%v, want b's trial", b, trial)
	}
}

// TestEntriesStaleTrialOfActive: a stale trial entry of the slot that is
// active anyway boots as a normal boot of it: no reboot, no trial.
func TestEntriesStaleTrialOfActive(t *testing.T) {
	r, e := entriesRig(t, slot.Initial())
	rep, err := e.Boot(r.bootDir, slot.A, true)
	if err != nil || rep.Reboot || rep.Trial || rep.Note == "" {
		t.Fatalf("Boot = %+v, %v; want a normal boot with a note", rep, err)
	}
	if s := readState(t, r.bootDir); s.Active != slot.A || s.Trial != "" || s.LastFailed != nil {
		t.Fatalf("slot.json %+v", s)
	}
}

// TestSlotStateWaitsForConfirmedEntries: while a confirm is writing the
// entry that boots the confirmed slot, SlotState does not report the slot
// confirmed. A client that saw "confirmed" may cut the power at once; the
// firmware must then boot that slot (TestVMUEFIUpdate's power cut after
// the update once came back on the old slot: slot.json was written, the
// entry not yet).
func TestSlotStateWaitsForConfirmedEntries(t *testing.T) {
	r, e := entriesRig(t, slot.Initial())
	commitB(t, r, e)
	booted, trial := firmwareBoot(t, r.bootDir)
	if _, err := e.Boot(r.bootDir, booted, trial); err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	slow := &Entries{Title: e.Title, Root: func(n slot.Name) (string, error) {
		once.Do(func() { close(entered) })
		<-release
		return e.Root(n)
	}}
	m := r.manager(t, slot.B, WithEntries(slow))
	confirmed := make(chan error, 1)
	go func() {
		_, err := m.Confirm()
		confirmed <- err
	}()
	<-entered // slot.json says b is active; b's entry is being written
	states := make(chan mgmt.SlotState, 1)
	go func() {
		s, err := m.SlotState(context.Background())
		if err != nil {
			t.Error(err)
		}
		states <- s
	}()
	select {
	case s := <-states:
		t.Fatalf("SlotState = %+v while the confirm was still writing b's entry", s)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-confirmed; err != nil {
		t.Fatal(err)
	}
	if s := <-states; s.Active != "b" || s.Trial != "" {
		t.Errorf("SlotState after the confirm = %+v, want b active", s)
	}
	if b, counted := firmwareBoot(t, r.bootDir); b != slot.B || counted {
		t.Errorf("after the confirm the firmware boots %s (counted %v), want b", b, counted)
	}
}
