// Package slot holds the A/B boot state of an appliance (slot.json on the
// boot partition) and the rules every boot loader applies to it: boot the
// trial slot while it has tries left, fall back to the active slot when a
// trial never confirmed, and record why. It also writes the files of a
// mounted boot partition that decide what boots (WriteFile, Rename), so
// that a power cut leaves each one old or new.
package slot

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/ingotdev/ingot/packer/format/layout"
)

// Name is a root slot: "a" or "b".
type Name string

// The two root slots.
const (
	A Name = "a"
	B Name = "b"
)

// Valid reports whether n names a slot.
func (n Name) Valid() bool { return n == A || n == B }

// Other returns the slot that is not n.
func (n Name) Other() Name {
	if n == A {
		return B
	}
	return A
}

// PartitionLabel is the GPT partition name of the slot, e.g. "root-a";
// "" for a name that is not a slot.
func (n Name) PartitionLabel() string {
	switch n {
	case A:
		return layout.RootAPartition
	case B:
		return layout.RootBPartition
	}
	return ""
}

// BootFile is the name on the boot partition of the slot's copy of the
// per-slot boot file name (layout.PerSlot): "vmlinuz.b". Images written
// before per-slot files existed have only the shared name, which boot
// loaders fall back to. (A Raspberry Pi's firmware reads them from the
// slot's directory instead: piboot.PrefixDir.)
func (n Name) BootFile(name string) string { return name + "." + string(n) }

// Cmdline is the kernel command line that boots slot n: base, the slot's
// own command line (its layout.CmdlineFile), then the root partition by
// PARTUUID, the slot and, on a trial boot, the trial flag. Both loaders
// build it here, the host-side one per boot and the UEFI entries
// (package bls) per slot, so stage1 cannot tell them apart.
func (n Name) Cmdline(base, rootPARTUUID string, trial bool) string {
	words := []string{strings.TrimSpace(base),
		layout.ParamRoot + "=PARTUUID=" + rootPARTUUID, layout.ParamSlot + "=" + string(n)}
	if trial {
		words = append(words, layout.ParamTrial+"=1")
	}
	return strings.Join(words, " ")
}

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
		return State{}, fmt.Errorf("slot: %s: %w", layout.SlotFile, err)
	}
	if err := s.Validate(); err != nil {
		return State{}, err
	}
	return s, nil
}

// Validate checks the invariants of a state.
func (s State) Validate() error {
	if !s.Active.Valid() {
		return fmt.Errorf("slot: %s: active: %q is not a or b", layout.SlotFile, s.Active)
	}
	if s.Trial != "" {
		if !s.Trial.Valid() {
			return fmt.Errorf("slot: %s: trial: %q is not a or b", layout.SlotFile, s.Trial)
		}
		if s.Trial == s.Active {
			return fmt.Errorf("slot: %s: trial: %q is also the active slot", layout.SlotFile, s.Trial)
		}
	}
	if s.TriesLeft < 0 || s.TriesLeft > maxTries {
		return fmt.Errorf("slot: %s: tries_left: %d is outside 0..%d", layout.SlotFile, s.TriesLeft, maxTries)
	}
	return nil
}

// FileBytes is the fixed size of slot.json: one sector, so that WriteFile
// rewrites it in place (see SectorBytes).
const FileBytes = SectorBytes

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
	// Recovered, set only by Recover, says that slot.json could not be
	// read and which slot was chosen instead, and why: the loader must
	// show it to the operator.
	Recovered string
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

// Recover is the decision when slot.json cannot be read or parsed (why
// says how it failed). Nothing in the file can be trusted, not even which
// slot is active, so the slot is chosen by what it holds: check reports
// why slot n cannot boot (no complete root, missing boot files), and the
// first of a, b that passes boots, as the active slot with no trial. Slot
// a comes first because every image starts with it; b is taken only when
// a cannot boot, e.g. after an update into a failed half-way (its
// superblock is zeroed until the last write) and a torn slot.json.
//
// Next records the choice in LastFailed, naming the slot that could not
// boot (none when both could), so the appliance's status shows it (a new
// field would make older roots refuse the file). Next is safe to persist:
// it names only a slot that check has just passed and starts no trial, so
// it is what Recover would decide again at the next boot. When no slot
// passes, the error names both reasons.
func Recover(why error, check func(Name) error) (Decision, error) {
	var reasons []string
	var failed Name
	for _, n := range []Name{A, B} {
		err := check(n)
		if err != nil {
			reasons = append(reasons, fmt.Sprintf("slot %s: %v", n, err))
			failed = n
			continue
		}
		reason := fmt.Sprintf("%s unreadable, booted slot %s, whose root is valid: %v", layout.SlotFile, n, why)
		if failed != "" {
			reason += "; " + reasons[0]
		}
		next := State{Active: n, LastFailed: &Failure{Slot: failed, Reason: reason}}
		return Decision{Boot: n, Next: next, Changed: true, Recovered: reason}, nil
	}
	return Decision{}, fmt.Errorf("slot: %s is unreadable (%v) and no slot can boot: %s", layout.SlotFile, why, strings.Join(reasons, "; "))
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

// Save writes the state to slot.json in the mounted boot partition
// bootDir with WriteFile: Marshal's fixed size makes every write after the
// first a single sector write.
func Save(bootDir string, s State) error {
	if err := s.Validate(); err != nil {
		return err
	}
	return WriteFile(filepath.Join(bootDir, layout.SlotFile), s.Marshal())
}
