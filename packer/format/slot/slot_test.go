package slot

import (
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
