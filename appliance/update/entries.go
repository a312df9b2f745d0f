package update

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ingotdev/ingot/packer/format/bls"
	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/format/slot"
)

// Entries keeps the UEFI boot path's Boot Loader Specification entries
// (package bls) in step with slot.json on a VM image. slot.json stays the
// record; the entries are its projection for systemd-boot, which records
// one fact of its own: the spent try of a trial entry, in the entry's
// name. Sync writes the projection after every change of slot.json; Boot
// takes systemd-boot's fact back into slot.json at the start of a boot.
// An image without an entries directory (built before the UEFI path) has
// nothing to keep, and both do nothing.
type Entries struct {
	// Title names the appliance in systemd-boot's menu.
	Title string
	// Root returns the PARTUUID of slot n's root partition.
	Root func(n slot.Name) (string, error)
}

// names lists the entries directory of the boot partition at bootDir;
// ok is false when there is none.
func (e *Entries) names(bootDir string) (names []string, ok bool, err error) {
	des, err := os.ReadDir(filepath.Join(bootDir, filepath.FromSlash(bls.EntriesDir)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("update: boot entries: %w", err)
	}
	for _, de := range des {
		if de.Type().IsRegular() {
			names = append(names, de.Name())
		}
	}
	return names, true, nil
}

// Sync makes the entries match slot.json (bls.Plan): new entries are
// written and synced before stale ones are removed, so a power cut in
// between leaves an extra entry that sorts below the new one.
func (e *Entries) Sync(bootDir string) error {
	s, err := ReadState(bootDir)
	if err != nil {
		return err
	}
	return e.sync(bootDir, s)
}

func (e *Entries) sync(bootDir string, s slot.State) error {
	names, ok, err := e.names(bootDir)
	if err != nil || !ok {
		return err
	}
	plan := bls.Plan(names, s)
	dir := filepath.Join(bootDir, filepath.FromSlash(bls.EntriesDir))
	for _, en := range plan.Write {
		if err := e.write(bootDir, dir, en); err != nil {
			return err
		}
	}
	if len(plan.Write) > 0 {
		if err := slot.SyncDir(dir); err != nil {
			return fmt.Errorf("update: boot entries: %w", err)
		}
	}
	for _, name := range plan.Remove {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("update: boot entries: %w", err)
		}
	}
	if len(plan.Remove) > 0 {
		if err := slot.SyncDir(dir); err != nil {
			return fmt.Errorf("update: boot entries: %w", err)
		}
	}
	return nil
}

// write creates the file of entry en, from its slot's command line on the
// boot partition and its root partition's PARTUUID, and syncs it.
func (e *Entries) write(bootDir, dir string, en bls.Entry) error {
	cmdline, err := os.ReadFile(filepath.Join(bootDir, en.Slot.BootFile(layout.CmdlineFile)))
	if err != nil {
		return fmt.Errorf("update: boot entry for slot %s: %w", en.Slot, err)
	}
	root, err := e.Root(en.Slot)
	if err != nil {
		return fmt.Errorf("update: boot entry for slot %s: root partition: %w", en.Slot, err)
	}
	b, err := bls.Content(en, bls.Params{Title: e.Title, Cmdline: string(cmdline), RootPARTUUID: root})
	if err != nil {
		return fmt.Errorf("update: %w", err)
	}
	path := filepath.Join(dir, en.FileName())
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("update: boot entry: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("update: boot entry %s: %w", path, err)
	}
	return nil
}

// BootReport is what Boot found.
type BootReport struct {
	// Trial is set when this boot is the trial slot.json names.
	Trial bool
	// Reboot is set when this boot should not run: the firmware booted a
	// trial entry that slot.json does not name (a cancel cut short by a
	// power cut). The entries are repaired, so the next boot runs the
	// active slot.
	Reboot bool
	// Note says what was repaired, for the log; "" when nothing was.
	Note string
}

// Boot applies, at the start of a boot, what the loader that chose it
// did, so both loaders leave the same slot.json (see the table in
// ARCHITECTURE.md section 5), then makes the entries match. booted and
// trial are the kernel command line's ingot.slot and ingot.trial, which
// the host-side loader and the entries set alike.
//
//   - A trial boot of the slot.json trial spends its try, if the loader
//     did not already (systemd-boot counts in the entry's name, the host
//     loader in slot.json).
//   - A trial boot slot.json does not name must not run (Reboot), unless
//     it is of the active slot: then it is a normal boot.
//   - Booting the active slot while slot.json still has a trial whose try
//     is spent (in slot.json or in its entry's name) means the trial
//     failed: recorded as the host loader's slot.State.Decide does.
//   - Booting a slot that is not active with no trial pending means a
//     confirm was written to slot.json but not yet to the entries: the
//     entries are fixed and the next boot runs the active slot (Note).
//   - With slot.json unreadable, the entries chose a slot whose root came
//     up, so it is written as active, as slot.Recover does for the host
//     loader; on a trial boot slot.json is left alone (the trial cannot
//     be confirmed, and the next boot falls back by the entries).
func (e *Entries) Boot(bootDir string, booted slot.Name, trial bool) (BootReport, error) {
	names, ok, err := e.names(bootDir)
	if err != nil || !ok {
		return BootReport{Trial: trial}, err
	}
	s, err := ReadState(bootDir)
	if err != nil {
		if trial {
			return BootReport{Note: fmt.Sprintf("%v: trial boot of slot %s cannot be confirmed; the next boot falls back to the active entry", err, booted)}, nil
		}
		next := slot.State{Active: booted, LastFailed: &slot.Failure{Slot: booted.Other(),
			Reason: fmt.Sprintf("slot.json unreadable, booted slot %s from its boot entry (%v)", booted, err)}}
		if serr := slot.Save(bootDir, next); serr != nil {
			return BootReport{}, fmt.Errorf("update: rewrite unreadable %s: %w", layout.SlotFile, serr)
		}
		return BootReport{Note: fmt.Sprintf("%s was unreadable (%v): rewritten with slot %s active", layout.SlotFile, err, booted)},
			e.sync(bootDir, next)
	}
	var rep BootReport
	switch {
	case trial && s.Trial == booted:
		rep.Trial = true
		if s.TriesLeft > 0 {
			s.TriesLeft = 0
			if err := saveState(bootDir, s); err != nil {
				return BootReport{}, err
			}
		}
	case trial && booted == s.Active:
		// A stale trial entry of the slot that is active anyway: this is
		// a normal boot of it, with nothing to confirm.
		rep.Note = fmt.Sprintf("booted a trial entry of slot %s, which %s already has active: a normal boot; entries repaired", booted, layout.SlotFile)
	case trial:
		rep.Reboot = true
		rep.Note = fmt.Sprintf("booted a trial entry of slot %s that %s does not name (active %s, trial %q): entries repaired, rebooting into slot %s",
			booted, layout.SlotFile, s.Active, s.Trial, s.Active)
	case s.Trial != "" && booted == s.Active && (s.TriesLeft == 0 || bls.Spent(names, s.Trial)):
		s.TriesLeft = 0
		s = s.Decide().Next
		if err := saveState(bootDir, s); err != nil {
			return BootReport{}, err
		}
	case s.Trial == "" && booted != s.Active:
		rep.Note = fmt.Sprintf("booted slot %s, but %s has %s active (the power went while a confirm was written): the entries boot %s from the next boot",
			booted, layout.SlotFile, s.Active, s.Active)
	}
	return rep, e.sync(bootDir, s)
}
