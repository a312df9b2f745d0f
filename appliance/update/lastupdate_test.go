package update

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/format/slot"
)

var (
	t0 = time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	t1 = t0.Add(time.Minute)
)

func TestParseLastUpdate(t *testing.T) {
	good := mgmt.LastUpdate{Started: t0, Slot: "b", BuildID: "b2", Release: 7, FromSlot: "a", FromBuildID: "b1", FromRelease: 6, Outcome: mgmt.OutcomeFailed, Finished: t1, Reason: "trial health check: service web is exited"}
	data, err := marshalLastUpdate(good)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseLastUpdate(data)
	if err != nil || got != good {
		t.Fatalf("ParseLastUpdate(marshalLastUpdate(r)) = %+v, %v; want %+v", got, err, good)
	}
	pending := strings.Replace(strings.Replace(string(data), `"failed"`, `"pending"`, 1), `,"finished":"2026-12-04T10:01:00Z"`, "", 1)
	if _, err := ParseLastUpdate([]byte(pending)); err != nil {
		t.Errorf("a pending record: %v", err)
	}
	bad := []struct{ name, data, want string }{
		{"empty", "", "EOF"},
		{"garbage", "\x00\xffnot json", "invalid character"},
		{"torn", string(data[:len(bytes.TrimSpace(data))/2]), "unexpected EOF"},
		{"unknown field", strings.Replace(string(data), `"slot"`, `"bogus":1,"slot"`, 1), `unknown field "bogus"`},
		{"trailing data", string(data) + "{}", "data after the record"},
		{"bad slot", strings.Replace(string(data), `"slot":"b"`, `"slot":"c"`, 1), `slot "c" is not a or b`},
		{"bad from_slot", strings.Replace(string(data), `"from_slot":"a"`, `"from_slot":""`, 1), `from_slot "" is not a or b`},
		{"bad outcome", strings.Replace(string(data), `"failed"`, `"exploded"`, 1), `outcome "exploded"`},
		{"no start", strings.Replace(string(data), `"started":"2026-12-04T10:00:00Z",`, "", 1), "started is missing"},
		{"pending with a finish", strings.Replace(string(data), `"failed"`, `"pending"`, 1), "pending update has a finished time"},
		{"decided without a finish", strings.Replace(pending, `"pending"`, `"confirmed"`, 1), "outcome confirmed has no finished time"},
		{"long reason", strings.Replace(string(data), "service web", strings.Repeat("x", 600), 1), "reason is"},
		{"oversized", string(data) + strings.Repeat(" ", layout.MaxLastUpdateBytes), "more than 4096"},
	}
	for _, tt := range bad {
		if _, err := ParseLastUpdate([]byte(tt.data)); err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), layout.LastUpdateFile) {
			t.Errorf("%s: ParseLastUpdate = %v, want an error naming %s and containing %q", tt.name, err, layout.LastUpdateFile, tt.want)
		}
	}

	// On the boot partition, anything that does not decode is no record.
	dir := t.TempDir()
	if r := ReadLastUpdate(dir); r != nil {
		t.Errorf("ReadLastUpdate with no file = %+v, want nil", r)
	}
	for _, tt := range bad {
		if err := os.WriteFile(filepath.Join(dir, layout.LastUpdateFile), []byte(tt.data), 0o644); err != nil {
			t.Fatal(err)
		}
		if r := ReadLastUpdate(dir); r != nil {
			t.Errorf("%s: ReadLastUpdate = %+v, want nil", tt.name, r)
		}
	}
	if err := saveLastUpdate(dir, good); err != nil {
		t.Fatal(err)
	}
	if r := ReadLastUpdate(dir); r == nil || *r != good {
		t.Errorf("ReadLastUpdate after saveLastUpdate = %+v, want %+v", r, good)
	}
	if _, err := os.Stat(filepath.Join(dir, tempPrefix+layout.LastUpdateFile)); !os.IsNotExist(err) {
		t.Errorf("temporary file left after a save: %v", err)
	}
}

// TestResolveLastUpdate decides a pending record from every slot.json a
// boot can find.
func TestResolveLastUpdate(t *testing.T) {
	pending := mgmt.LastUpdate{Started: t0, Slot: "b", FromSlot: "a", Outcome: mgmt.OutcomePending}
	tests := []struct {
		name   string
		rec    mgmt.LastUpdate
		state  slot.State
		want   string
		reason string
	}{
		{"trial not booted", pending, slot.State{Active: slot.A, Trial: slot.B, TriesLeft: 1}, mgmt.OutcomePending, ""},
		{"trial booting", pending, slot.State{Active: slot.A, Trial: slot.B}, mgmt.OutcomePending, ""},
		{"confirmed", pending, slot.State{Active: slot.B}, mgmt.OutcomeConfirmed, ""},
		{"loader fell back", pending, slot.State{Active: slot.A, LastFailed: &slot.Failure{Slot: slot.B, Reason: "trial boot did not confirm"}}, mgmt.OutcomeFailed, "trial boot did not confirm"},
		{"trial gone", pending, slot.State{Active: slot.A}, mgmt.OutcomeCancelled, "slot.json no longer holds the trial"},
		{"other slot failed", pending, slot.State{Active: slot.A, LastFailed: &slot.Failure{Slot: slot.A, Reason: "x"}}, mgmt.OutcomeCancelled, "slot.json no longer holds the trial"},
		{"already decided", mgmt.LastUpdate{Started: t0, Slot: "b", FromSlot: "a", Outcome: mgmt.OutcomeRolledBack, Finished: t0, Reason: "by request"}, slot.State{Active: slot.B}, mgmt.OutcomeRolledBack, "by request"},
	}
	for _, tt := range tests {
		got, changed := resolveLastUpdate(tt.rec, tt.state, t1)
		if got.Outcome != tt.want || got.Reason != tt.reason || changed != (tt.want != tt.rec.Outcome) {
			t.Errorf("%s: resolve = %s %q (changed %v), want %s %q", tt.name, got.Outcome, got.Reason, changed, tt.want, tt.reason)
		}
		if changed && !got.Finished.Equal(t1) {
			t.Errorf("%s: finished %v, want %v", tt.name, got.Finished, t1)
		}
	}
}

// recordRig is a rig whose Manager records updates with a fixed clock and
// a log the test reads.
type recordRig struct {
	*rig
	mu   sync.Mutex
	logs []string
	now  time.Time
}

func newRecordRig(t *testing.T) *recordRig {
	return &recordRig{rig: newRig(t, slot.Initial()), now: t0}
}

func (r *recordRig) manager(t *testing.T, booted slot.Name, build string, release uint64) *Manager {
	t.Helper()
	return r.rig.manager(t, booted, WithRunning(build, release), withNow(func() time.Time { return r.now }), WithLogf(func(f string, a ...any) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.logs = append(r.logs, fmt.Sprintf(f, a...))
	}))
}

// update writes a root and a command line naming build into the update
// slot and commits it, with release in the root's PUT.
func (r *recordRig) update(t *testing.T, m *Manager, build string, release uint64, seed uint64) {
	t.Helper()
	ctx := context.Background()
	img := fakeRoot(100_000, seed)
	if _, err := m.WriteRoot(ctx, bytes.NewReader(img), int64(len(img)), sum(img), runtime.GOARCH, release); err != nil {
		t.Fatal(err)
	}
	cmdline := []byte("console=ttyS0 " + layout.ParamBuild + "=" + build + "\n")
	if _, err := m.WriteBootFile(ctx, layout.CmdlineFile, bytes.NewReader(cmdline), int64(len(cmdline)), sum(cmdline)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

func (r *recordRig) record(t *testing.T) mgmt.LastUpdate {
	t.Helper()
	rec := ReadLastUpdate(r.bootDir)
	if rec == nil {
		t.Fatal("no record of the last update")
	}
	return *rec
}

// TestLastUpdateTransitions runs updates through every outcome and checks
// the record after each step, as a boot after it would read it.
func TestLastUpdateTransitions(t *testing.T) {
	ctx := context.Background()
	r := newRecordRig(t)
	m := r.manager(t, slot.A, "build-1", 1)
	if m.LastUpdate(ctx) != nil {
		t.Fatal("a fresh image has a record of an update")
	}

	// Commit: pending, with what it installs and what it replaces.
	r.update(t, m, "build-2", 2, 21)
	want := mgmt.LastUpdate{Started: t0, Slot: "b", BuildID: "build-2", Release: 2, FromSlot: "a", FromBuildID: "build-1", FromRelease: 1, Outcome: mgmt.OutcomePending}
	if got := r.record(t); got != want {
		t.Fatalf("after commit: %+v, want %+v", got, want)
	}
	if got := m.LastUpdate(ctx); got == nil || *got != want {
		t.Errorf("Manager.LastUpdate = %+v, want %+v", got, want)
	}

	// The trial boots (the loader spends its try) and confirms.
	s := r.state(t)
	if err := slot.Save(r.bootDir, s.Decide().Next); err != nil {
		t.Fatal(err)
	}
	r.now = t1
	mb := r.manager(t, slot.B, "build-2", 2)
	if got := r.record(t); got.Outcome != mgmt.OutcomePending {
		t.Fatalf("a trial boot's start resolved the record: %+v", got)
	}
	if _, err := mb.Confirm(); err != nil {
		t.Fatal(err)
	}
	want.Outcome, want.Finished = mgmt.OutcomeConfirmed, t1
	if got := r.record(t); got != want {
		t.Fatalf("after confirm: %+v, want %+v", got, want)
	}

	// Rollback of the confirmed update: rolled back.
	if _, err := mb.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if got := r.record(t); got.Outcome != mgmt.OutcomeRolledBack || !strings.Contains(got.Reason, "rolled back by request") || got.Slot != "b" {
		t.Fatalf("after a rollback of the confirmed update: %+v", got)
	}
	// Which the trial of a (the rollback's) confirming does not change.
	if _, err := mb.Rollback(ctx); err != nil { // cancel the rollback's trial again
		t.Fatal(err)
	}
	if got := r.record(t); got.Outcome != mgmt.OutcomeRolledBack {
		t.Fatalf("cancelling the rollback's trial changed the record: %+v", got)
	}

	// A new update from b, cancelled by a rollback before it booted.
	r.update(t, mb, "build-3", 3, 22)
	if got := r.record(t); got.Slot != "a" || got.BuildID != "build-3" || got.FromBuildID != "build-2" || got.Outcome != mgmt.OutcomePending {
		t.Fatalf("after the second commit: %+v", got)
	}
	if _, err := mb.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if got := r.record(t); got.Outcome != mgmt.OutcomeCancelled || !strings.Contains(got.Reason, "before its trial boot") {
		t.Fatalf("after a rollback before the trial boot: %+v", got)
	}

	// A new update over a pending trial of the same slot cancels it.
	r.update(t, mb, "build-4", 4, 23)
	img := fakeRoot(100_000, 24)
	if _, err := mb.WriteRoot(ctx, bytes.NewReader(img), int64(len(img)), sum(img), runtime.GOARCH, 5); err != nil {
		t.Fatal(err)
	}
	if got := r.record(t); got.BuildID != "build-4" || got.Outcome != mgmt.OutcomeCancelled || !strings.Contains(got.Reason, "a new update") {
		t.Fatalf("after a new root over the pending trial: %+v", got)
	}

	// An update whose trial never came up: the host loader fell back and
	// the next boot's agent resolves the record from slot.json.
	r.update(t, mb, "build-5", 5, 25)
	s = r.state(t)
	s = s.Decide().Next // the trial boot
	s = s.Decide().Next // it hung; the next boot falls back
	if err := slot.Save(r.bootDir, s); err != nil {
		t.Fatal(err)
	}
	r.manager(t, slot.B, "build-2", 2)
	if got := r.record(t); got.Outcome != mgmt.OutcomeFailed || got.Reason != s.LastFailed.Reason || got.BuildID != "build-5" {
		t.Fatalf("after the loader's fallback: %+v, want failed with %q", got, s.LastFailed.Reason)
	}

	// A trial rolled back while it runs.
	mb = r.manager(t, slot.B, "build-2", 2)
	r.update(t, mb, "build-6", 6, 26)
	if err := slot.Save(r.bootDir, r.state(t).Decide().Next); err != nil {
		t.Fatal(err)
	}
	ma := r.manager(t, slot.A, "build-6", 6)
	if _, err := ma.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if got := r.record(t); got.Outcome != mgmt.OutcomeRolledBack || !strings.Contains(got.Reason, "during its trial boot") {
		t.Fatalf("after a rollback during the trial boot: %+v", got)
	}
	// The boot after it (back on b) keeps that outcome.
	r.manager(t, slot.B, "build-2", 2)
	if got := r.record(t); got.Outcome != mgmt.OutcomeRolledBack {
		t.Fatalf("the boot after the rollback changed the record: %+v", got)
	}
	if len(r.logs) == 0 || !strings.Contains(strings.Join(r.logs, "\n"), "failed") {
		t.Errorf("the Manager logged no resolved outcome: %q", r.logs)
	}
}

// TestLastUpdateWriteFails: a record that cannot be written is logged and
// changes nothing else: the commit and the confirm succeed, slot.json has
// the trial, and the record reads as none.
func TestLastUpdateWriteFails(t *testing.T) {
	r := newRecordRig(t)
	// A non-empty directory in the record's place: rename cannot replace it.
	blocker := filepath.Join(r.bootDir, layout.LastUpdateFile)
	if err := os.MkdirAll(filepath.Join(blocker, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	m := r.manager(t, slot.A, "build-1", 1)
	r.update(t, m, "build-2", 2, 31)
	if s := r.state(t); s.Trial != slot.B || s.TriesLeft != 1 {
		t.Fatalf("slot.json after the commit = %+v, want the trial of b", s)
	}
	if rec := ReadLastUpdate(r.bootDir); rec != nil {
		t.Errorf("ReadLastUpdate of a directory = %+v, want nil", rec)
	}
	if !strings.Contains(strings.Join(r.logs, "\n"), "recording the update of slot b") {
		t.Errorf("the failed write was not logged: %q", r.logs)
	}
	if err := slot.Save(r.bootDir, r.state(t).Decide().Next); err != nil {
		t.Fatal(err)
	}
	if _, err := r.manager(t, slot.B, "build-2", 2).Confirm(); err != nil {
		t.Fatalf("Confirm with an unwritable record = %v", err)
	}
	if s := r.state(t); s.Active != slot.B {
		t.Errorf("slot.json after the confirm = %+v, want b active", s)
	}
	entries, _ := os.ReadDir(r.bootDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tempPrefix) {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}
