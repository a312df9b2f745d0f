package update

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/format/slot"
)

// trialTries is how many boots a committed slot gets to confirm. One: a
// trial that does not come up healthy falls back at the next boot, without
// anyone having to notice.
const trialTries = 1

// ReadState reads slot.json from the mounted boot partition bootDir.
func ReadState(bootDir string) (slot.State, error) {
	path := filepath.Join(bootDir, layout.SlotFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return slot.State{}, fmt.Errorf("update: %w", err)
	}
	s, err := slot.Parse(b)
	if err != nil {
		return slot.State{}, fmt.Errorf("update: %s: %w", path, err)
	}
	return s, nil
}

func saveState(bootDir string, s slot.State) error {
	if err := slot.Save(bootDir, s); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	return nil
}

// Commit makes staged, the slot an update was just written to, the trial
// slot: the boot loader boots it once, and it becomes active only when
// stage1 confirms it. The active slot stays the fallback. A commit while
// another trial is pending replaces that trial.
func Commit(bootDir string, staged slot.Name) (slot.State, error) {
	s, err := ReadState(bootDir)
	if err != nil {
		return slot.State{}, err
	}
	if staged == s.Active {
		return slot.State{}, fmt.Errorf("update: commit: slot %s is the active slot, the fallback of any trial: %w", staged, mgmt.ErrConflict)
	}
	next, err := s.StartTrial(staged, trialTries)
	if err != nil {
		return slot.State{}, fmt.Errorf("update: commit: %w", err)
	}
	if err := saveState(bootDir, next); err != nil {
		return slot.State{}, err
	}
	return next, nil
}

// Confirm records that booted, the slot this boot runs, proved healthy:
// when it is the trial slot it becomes the active one. Confirming the
// active slot when no trial is pending changes nothing (stage1 may confirm
// every boot). Anything else is an error: this boot is not what slot.json
// expects, e.g. the trial was rolled back while it ran.
func Confirm(bootDir string, booted slot.Name) (slot.State, error) {
	s, err := ReadState(bootDir)
	if err != nil {
		return slot.State{}, err
	}
	switch {
	case s.Trial != "" && s.Trial == booted:
		next, err := s.Confirm(booted)
		if err != nil {
			return slot.State{}, fmt.Errorf("update: confirm: %w", err)
		}
		if err := saveState(bootDir, next); err != nil {
			return slot.State{}, err
		}
		return next, nil
	case s.Trial == "" && s.Active == booted:
		return s, nil
	}
	return slot.State{}, fmt.Errorf("update: confirm slot %q: slot.json has active %q, trial %q: %w", booted, s.Active, s.Trial, mgmt.ErrConflict)
}

// Rollback undoes the last switch; booted is the slot this boot runs and
// check verifies that a slot holds a complete root (ValidRoot on its
// partition).
//
//   - A pending trial is cancelled: the active slot boots next. If this boot
//     is that trial, LastFailed records that it was rolled back by request,
//     and a later Confirm of it fails, so it cannot become active.
//   - Without a trial, the other slot becomes the trial slot, if check
//     passes: it boots next and becomes active when it proves healthy, just
//     like an update. Going back to a slot is never allowed to skip the
//     trial, because the other slot may hold an image that never ran.
//
// The switch takes effect at the next boot; Rollback does not reboot.
func Rollback(bootDir string, booted slot.Name, check func(slot.Name) error) (slot.State, error) {
	s, err := ReadState(bootDir)
	if err != nil {
		return slot.State{}, err
	}
	var next slot.State
	if s.Trial != "" {
		next = slot.State{Active: s.Active, LastFailed: s.LastFailed}
		if booted == s.Trial {
			next.LastFailed = &slot.Failure{Slot: s.Trial, Reason: "rolled back by request during its trial boot"}
		}
	} else {
		other := s.Active.Other()
		if err := check(other); err != nil {
			return slot.State{}, fmt.Errorf("update: rollback to slot %s: %w: %w", other, err, mgmt.ErrConflict)
		}
		if next, err = s.StartTrial(other, trialTries); err != nil {
			return slot.State{}, fmt.Errorf("update: rollback: %w", err)
		}
	}
	if err := saveState(bootDir, next); err != nil {
		return slot.State{}, err
	}
	return next, nil
}

// SlotState converts a slot.State for the management protocol.
func SlotState(s slot.State) mgmt.SlotState {
	out := mgmt.SlotState{Active: string(s.Active), Trial: string(s.Trial), TriesLeft: s.TriesLeft}
	if s.LastFailed != nil {
		out.LastFailed = &mgmt.SlotFailure{Slot: string(s.LastFailed.Slot), Reason: s.LastFailed.Reason}
	}
	return out
}
