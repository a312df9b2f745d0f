package update

import (
	"fmt"
	"time"

	"github.com/ingotdev/ingot/packer/format/slot"
)

// Firmware is a boot loader that lives on the boot partition and reads
// files of its own rather than slot.json, such as the Raspberry Pi
// firmware (package piboot). slot.json stays the record of the A/B state;
// the Manager mirrors each change into the firmware's files after
// slot.json has it.
type Firmware interface {
	// Trial makes the next boot with RebootArg boot slot n once.
	Trial(bootDir string, n slot.Name) error
	// Cancel drops a pending trial.
	Cancel(bootDir string) error
	// Activate makes every later boot boot slot n.
	Activate(bootDir string, n slot.Name) error
	// BootFile is the name, relative to the boot partition, of slot n's
	// copy of the per-slot boot file name (layout.KernelFile, ...).
	BootFile(name string, n slot.Name) string
	// RebootArg is the reboot(2) argument that starts a pending trial.
	RebootArg() string
}

// slotBootFile names slot n's copy of boot file name for fw, or for the
// host-side loader when fw is nil.
func slotBootFile(fw Firmware, name string, n slot.Name) string {
	if fw != nil {
		return fw.BootFile(name, n)
	}
	return n.BootFile(name)
}

// FirmwareBoot applies the boot rules of slot.State.Decide at the start of
// a boot that a firmware chose, since no host-side loader ran before it:
// booting the trial slot spends its try (the firmware boots a trial only
// once, through its one-shot flag), and booting the active slot after the
// try was spent means the trial failed, which LastFailed records. A trial
// whose try is left was never started (the power went between commit and
// reboot) and stays pending. It reports whether this boot is a trial.
//
// slot.json is written before fw's files, so a power cut in between leaves
// slot.json ahead: a confirmed slot that the firmware does not boot yet.
// FirmwareBoot then mirrors slot.json's active slot into fw again, so the
// next boot runs it, and says so in its error-free report (repaired).
// A failed trial is also the failed outcome of the last update's record
// (ResolveLastUpdate); an error writing that record is returned after
// slot.json was written, for the caller to report.
func FirmwareBoot(bootDir string, booted slot.Name, fw Firmware) (trial bool, repaired string, err error) {
	s, err := ReadState(bootDir)
	if err != nil {
		return false, "", err
	}
	switch {
	case s.Trial == "" && booted != s.Active:
		if err := fw.Activate(bootDir, s.Active); err != nil {
			return false, "", fmt.Errorf("update: firmware booted slot %s, slot.json has %s active: %w", booted, s.Active, err)
		}
		return false, fmt.Sprintf("the firmware booted slot %s, but slot.json has %s active (the power went while a confirm was written): the firmware now boots %s again from the next boot", booted, s.Active, s.Active), nil
	case s.Trial != "" && booted == s.Trial:
		if s.TriesLeft > 0 {
			s.TriesLeft--
			if err := saveState(bootDir, s); err != nil {
				return false, "", err
			}
		}
		return true, "", nil
	case s.Trial != "" && booted == s.Active && s.TriesLeft == 0:
		next := s.Decide().Next
		if err := saveState(bootDir, next); err != nil {
			return false, "", err
		}
		// The trial failed: so does the update in the record (an error
		// here is only reported; slot.json has the failure).
		if _, err := ResolveLastUpdate(bootDir, next, time.Now()); err != nil {
			return false, "", err
		}
	}
	return false, "", nil
}
