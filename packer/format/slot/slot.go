// Package slot holds the A/B boot state of an appliance (slot.json on the
// boot partition) and the rules every boot loader applies to it: boot the
// trial slot while it has tries left, fall back to the active slot when a
// trial never confirmed, and record why.
package slot

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Name is a root slot: "a" or "b".
type Name string

// The two root slots.
const (
	A Name = "a"
	B Name = "b"
)

// FileName is the state file's name on the boot partition.
const FileName = "slot.json"

// Valid reports whether n names a slot.
func (n Name) Valid() bool { return n == A || n == B }

// Other returns the slot that is not n.
func (n Name) Other() Name {
	if n == A {
		return B
	}
	return A
}

// PartitionLabel is the GPT partition name of the slot, e.g. "root-a".
func (n Name) PartitionLabel() string { return "root-" + string(n) }

// Failure records a trial that did not confirm.
type Failure struct {
	Slot   Name   `json:"slot"`
	Reason string `json:"reason"`
}

// State is the content of slot.json.
type State struct {
	// Active is the slot known to work.
	Active Name `json:"active"`
	// Trial, when set, is a slot written by an update that has not yet
	// proven itself; it is booted while TriesLeft > 0.
	Trial     Name `json:"trial,omitempty"`
	TriesLeft int  `json:"tries_left"`
	// LastFailed describes the most recent trial that fell back.
	LastFailed *Failure `json:"last_failed,omitempty"`
}

// Initial is the state of a freshly built image.
func Initial() State { return State{Active: A} }

// maxTries bounds tries_left so a corrupt file cannot pin a trial forever.
const maxTries = 16

// Parse decodes and validates slot.json.
func Parse(data []byte) (State, error) {
	var s State
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return State{}, fmt.Errorf("slot: %s: %w", FileName, err)
	}
	if err := s.Validate(); err != nil {
		return State{}, err
	}
	return s, nil
}

// Validate checks the invariants of a state.
func (s State) Validate() error {
	if !s.Active.Valid() {
		return fmt.Errorf("slot: %s: active: %q is not a or b", FileName, s.Active)
	}
	if s.Trial != "" {
		if !s.Trial.Valid() {
			return fmt.Errorf("slot: %s: trial: %q is not a or b", FileName, s.Trial)
		}
		if s.Trial == s.Active {
			return fmt.Errorf("slot: %s: trial: %q is also the active slot", FileName, s.Trial)
		}
	}
	if s.TriesLeft < 0 || s.TriesLeft > maxTries {
		return fmt.Errorf("slot: %s: tries_left: %d is outside 0..%d", FileName, s.TriesLeft, maxTries)
	}
	return nil
}

// FileBytes is the fixed size of slot.json: one 512-byte sector. A state
// file that never changes size is rewritten in place by a single sector
// write, which a power cut cannot tear, instead of by a rename, which
// Linux's vfat does not make crash-safe (a power test saw the old file's
// clusters freed while the directory still pointed at them).
const FileBytes = 512

// maxReasonBytes keeps a failure reason short enough for FileBytes.
const maxReasonBytes = 256

// Marshal encodes the state as slot.json, padded with spaces to FileBytes.
func (s State) Marshal() []byte {
	if s.LastFailed != nil && len(s.LastFailed.Reason) > maxReasonBytes {
		f := *s.LastFailed
		f.Reason = f.Reason[:maxReasonBytes]
		s.LastFailed = &f
	}
	b, _ := json.Marshal(s) // State has no unencodable fields
	if len(b) >= FileBytes {
		// Unreachable with valid names and the reason cap; keep the
		// file valid JSON all the same.
		return append(b, '\n')
	}
	out := bytes.Repeat([]byte{' '}, FileBytes)
	copy(out, b)
	out[FileBytes-1] = '\n'
	return out
}

// Decision is what a boot loader does with a state.
type Decision struct {
	Boot  Name  // slot to boot
	Trial bool  // this boot is a trial
	Next  State // state to persist before booting
	// Changed reports whether Next differs from the state read, i.e. the
	// loader must write it back before it boots.
	Changed bool
}

// Decide applies the boot rules: a trial with tries left is booted and
// loses a try; a trial without tries left has failed and the active slot
// boots.
func (s State) Decide() Decision {
	switch {
	case s.Trial != "" && s.TriesLeft > 0:
		next := s
		next.TriesLeft--
		return Decision{Boot: s.Trial, Trial: true, Next: next, Changed: true}
	case s.Trial != "":
		next := State{Active: s.Active, LastFailed: &Failure{
			Slot:   s.Trial,
			Reason: "trial boot did not confirm (services not healthy in time, or the system did not come up)",
		}}
		return Decision{Boot: s.Active, Next: next, Changed: true}
	}
	return Decision{Boot: s.Active, Next: s}
}

// StartTrial returns the state that boots slot n on trial for tries boots.
func (s State) StartTrial(n Name, tries int) (State, error) {
	if !n.Valid() {
		return State{}, fmt.Errorf("slot: trial slot %q is not a or b", n)
	}
	if n == s.Active {
		return State{}, fmt.Errorf("slot: slot %q is active; a trial needs the other slot", n)
	}
	if tries < 1 || tries > maxTries {
		return State{}, fmt.Errorf("slot: tries %d outside 1..%d", tries, maxTries)
	}
	return State{Active: s.Active, Trial: n, TriesLeft: tries, LastFailed: s.LastFailed}, nil
}

// Confirm returns the state after the booted trial slot proved healthy.
func (s State) Confirm(booted Name) (State, error) {
	if s.Trial == "" || booted != s.Trial {
		return State{}, fmt.Errorf("slot: confirm %q: it is not the trial slot (trial %q)", booted, s.Trial)
	}
	return State{Active: booted}, nil
}

// Save writes the state to path so that a power cut leaves either the old
// or the new state. An existing file of FileBytes is overwritten in place
// with one sector write and synced; otherwise (first write, an old-format
// file) a temporary file is written, synced and renamed over path, and the
// directory synced.
func Save(path string, s State) error {
	if err := s.Validate(); err != nil {
		return err
	}
	data := s.Marshal()
	if st, err := os.Stat(path); err == nil && st.Size() == FileBytes && len(data) == FileBytes {
		return overwrite(path, data)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".slot-*.tmp")
	if err != nil {
		return fmt.Errorf("slot: save %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("slot: save %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("slot: save %s: sync: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("slot: save %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("slot: save %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("slot: save %s: open dir: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("slot: save %s: sync dir: %w", path, err)
	}
	return nil
}

// overwrite replaces the content of a FileBytes file in place and syncs it.
func overwrite(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("slot: save %s: %w", path, err)
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		f.Close()
		return fmt.Errorf("slot: save %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("slot: save %s: sync: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("slot: save %s: %w", path, err)
	}
	return nil
}
