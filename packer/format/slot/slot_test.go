package slot

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/packer/format/layout"
)

func TestDecide(t *testing.T) {
	tests := []struct {
		name      string
		in        State
		boot      Name
		trial     bool
		next      State
		changed   bool
		failedNow bool
	}{
		{"plain", State{Active: A}, A, false, State{Active: A}, false, false},
		{"trial with tries", State{Active: A, Trial: B, TriesLeft: 1}, B, true, State{Active: A, Trial: B, TriesLeft: 0}, true, false},
		{"trial exhausted", State{Active: A, Trial: B}, A, false, State{Active: A}, true, true},
		{"b active", State{Active: B}, B, false, State{Active: B}, false, false},
	}
	for _, tt := range tests {
		d := tt.in.Decide()
		if d.Boot != tt.boot || d.Trial != tt.trial || d.Changed != tt.changed {
			t.Errorf("%s: Decide() = boot %q trial %v changed %v, want %q %v %v", tt.name, d.Boot, d.Trial, d.Changed, tt.boot, tt.trial, tt.changed)
		}
		if d.Next.Active != tt.next.Active || d.Next.Trial != tt.next.Trial || d.Next.TriesLeft != tt.next.TriesLeft {
			t.Errorf("%s: Decide().Next = %+v, want %+v", tt.name, d.Next, tt.next)
		}
		if tt.failedNow && (d.Next.LastFailed == nil || d.Next.LastFailed.Slot != tt.in.Trial) {
			t.Errorf("%s: Decide().Next.LastFailed = %+v, want slot %q", tt.name, d.Next.LastFailed, tt.in.Trial)
		}
	}
}

// TestRecover: with slot.json unreadable, the first slot whose check
// passes boots as active, with no trial, and the state says why; with none
// the error names both slots' reasons.
func TestRecover(t *testing.T) {
	torn := errors.New("unexpected end of JSON input")
	zeroed := errors.New("magic 0x00000000 is not squashfs")
	empty := errors.New("no superblock")
	tests := []struct {
		name   string
		bad    map[Name]error
		boot   Name
		failed Name
	}{
		{"both valid", nil, A, ""},
		{"a zeroed", map[Name]error{A: zeroed}, B, A},
		{"b empty", map[Name]error{B: empty}, A, ""},
	}
	for _, tt := range tests {
		d, err := Recover(torn, func(n Name) error { return tt.bad[n] })
		if err != nil {
			t.Errorf("%s: Recover() = %v", tt.name, err)
			continue
		}
		want := State{Active: tt.boot}
		if d.Boot != tt.boot || d.Trial || !d.Changed || d.Next.Active != want.Active || d.Next.Trial != "" || d.Next.TriesLeft != 0 {
			t.Errorf("%s: Recover() = %+v, want boot %s as active, no trial, changed", tt.name, d, tt.boot)
		}
		if err := d.Next.Validate(); err != nil {
			t.Errorf("%s: Recover().Next: %v", tt.name, err)
		}
		if !strings.Contains(d.Recovered, "slot.json unreadable, booted slot "+string(tt.boot)) || !strings.Contains(d.Recovered, torn.Error()) {
			t.Errorf("%s: Recover().Recovered = %q, want it to say slot.json was unreadable, slot %s booted, and why", tt.name, d.Recovered, tt.boot)
		}
		if tt.failed != "" && !strings.Contains(d.Recovered, zeroed.Error()) {
			t.Errorf("%s: Recover().Recovered = %q, want slot %s's reason", tt.name, d.Recovered, tt.failed)
		}
		if f := d.Next.LastFailed; f == nil || f.Slot != tt.failed || f.Reason != d.Recovered {
			t.Errorf("%s: Recover().Next.LastFailed = %+v, want slot %q and the reason", tt.name, f, tt.failed)
		}
		// What is persisted reads back as the same decision, with nothing
		// left to spend: the next boot boots the same slot.
		back, err := Parse(d.Next.Marshal())
		if err != nil || back.Decide().Boot != tt.boot || back.Decide().Changed {
			t.Errorf("%s: Parse(Recover().Next.Marshal()) = %+v, %v; want a state that boots %s unchanged", tt.name, back, err, tt.boot)
		}
	}
	_, err := Recover(torn, func(n Name) error { return map[Name]error{A: zeroed, B: empty}[n] })
	if err == nil || !strings.Contains(err.Error(), "slot a: "+zeroed.Error()) || !strings.Contains(err.Error(), "slot b: "+empty.Error()) || !strings.Contains(err.Error(), torn.Error()) {
		t.Errorf("Recover(no slot boots) = %v, want an error naming slot.json's and both slots' reasons", err)
	}
}

func TestTrialLifecycle(t *testing.T) {
	s := Initial()
	s, err := s.StartTrial(B, 1)
	if err != nil {
		t.Fatal(err)
	}
	d := s.Decide()
	if d.Boot != B || !d.Trial {
		t.Fatalf("first boot after StartTrial = %+v, want trial of b", d)
	}
	c, err := d.Next.Confirm(B)
	if err != nil {
		t.Fatal(err)
	}
	if c.Active != B || c.Trial != "" {
		t.Fatalf("Confirm(b) = %+v, want b active and no trial", c)
	}
	if _, err := c.StartTrial(B, 1); err == nil {
		t.Error("StartTrial(active slot) succeeded, want error")
	}
	if _, err := c.Confirm(A); err == nil {
		t.Error("Confirm without a trial succeeded, want error")
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"active":"c","tries_left":0}`, "active"},
		{`{"active":"a","trial":"a","tries_left":1}`, "trial"},
		{`{"active":"a","tries_left":-1}`, "tries_left"},
		{`{"active":"a","tries_left":0,"bogus":1}`, "bogus"},
		{`{"active":`, "slot.json"},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.in))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%s) error = %v, want mention of %q", tt.in, err, tt.want)
		}
	}
}

func TestSaveRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, layout.SlotFile)
	want := State{Active: B, LastFailed: &Failure{Slot: A, Reason: "x"}}
	if err := Save(dir, want); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if got.Active != want.Active || got.LastFailed == nil || *got.LastFailed != *want.LastFailed {
		t.Errorf("round trip = %+v, want %+v", got, want)
	}
	if err := Save(dir, State{Active: "z"}); err == nil {
		t.Error("Save(invalid) succeeded")
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries after saves, want 1 (no temp files left)", len(entries))
	}
}

func TestSaveOverwritesInPlace(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, layout.SlotFile)
	if err := Save(dir, Initial()); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if before.Size() != FileBytes {
		t.Fatalf("slot.json is %d bytes, want %d", before.Size(), FileBytes)
	}
	long := State{Active: A, LastFailed: &Failure{Slot: B, Reason: strings.Repeat("x", 4000)}}
	if err := Save(dir, long); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Error("Save replaced the file; want an in-place overwrite of the same file")
	}
	data, _ := os.ReadFile(path)
	got, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != FileBytes || got.LastFailed == nil || len(got.LastFailed.Reason) != maxReasonBytes {
		t.Errorf("after overwrite: %d bytes, reason %d bytes; want %d and %d", len(data), len(got.LastFailed.Reason), FileBytes, maxReasonBytes)
	}
}
