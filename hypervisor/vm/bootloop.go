package vm

import (
	"errors"
	"fmt"
	"time"

	"github.com/ingotdev/ingot/hypervisor/qemu"
)

// ErrBootLoop marks a Run that stopped because the guest kept resetting
// without getting anywhere; booting it again would only loop.
var ErrBootLoop = errors.New("boot loop")

// ErrSilentResets is the ErrBootLoop of a guest that resets before its
// kernel prints anything: its memory is the likely cause.
var ErrSilentResets = fmt.Errorf("%w: the guest resets before its kernel prints anything on the console", ErrBootLoop)

// silentResetsMax is how many boots in a row may end in a guest reset
// before the kernel printed a byte on the console. A kernel that cannot
// even start (too little memory for it and its initramfs, a kernel for
// another machine) resets several times a second, forever, without a word.
const silentResetsMax = 3

// crashLoopBoots is how many boots in a row may each end in a guest reset
// or panic within crashLoopBootTime of starting. An update reboots twice
// and each boot of a failing trial ends the same way, but a trial is
// bounded by its tries, so trial boots are not counted; a slot that keeps
// crashing with nothing left to fall back to would loop forever.
const crashLoopBoots = 10

// crashLoopBootTime is how long a boot must last for its reset not to
// count towards crashLoopBoots: longer than a boot that fails early in
// stage0 or stage1 under TCG takes.
const crashLoopBootTime = 30 * time.Second

// bootRecord is how one boot of Run ended.
type bootRecord struct {
	Exit qemu.Exit
	// Trial is set on a trial boot: the loader falls back to the other
	// slot when its tries run out, so it cannot loop forever.
	Trial bool
	// ConsoleBytes is what the guest wrote on its serial console.
	ConsoleBytes int64
	// Lasted is the time from QEMU's start to its exit.
	Lasted time.Duration
}

// guestReset reports whether the guest ended the boot itself by a reset
// or a panic, the exits after which Run boots again.
func (r bootRecord) guestReset() bool { return r.Exit == qemu.ExitReboot || r.Exit == qemu.ExitPanic }

// checkBootLoop reports an ErrBootLoop error when the last boots, oldest
// first, show a loop: silentResetsMax non-trial resets in a row with a
// silent console, or crashLoopBoots non-trial resets in a row each within
// crashLoopBootTime. memoryMiB is the guest's memory, for the message.
func checkBootLoop(boots []bootRecord, memoryMiB int) error {
	silent, quick := 0, 0
	for i := len(boots) - 1; i >= 0; i-- {
		r := boots[i]
		if !r.guestReset() || r.Trial || r.ConsoleBytes > 0 {
			break
		}
		silent++
	}
	for i := len(boots) - 1; i >= 0; i-- {
		r := boots[i]
		if !r.guestReset() || r.Trial || r.Lasted >= crashLoopBootTime {
			break
		}
		quick++
	}
	switch {
	case silent >= silentResetsMax:
		mem := "the guest's"
		if memoryMiB > 0 {
			mem = fmt.Sprintf("%d MiB", memoryMiB)
		}
		return fmt.Errorf("vm: %w (%d boots in a row); most likely %s is too little memory for the kernel and its initramfs",
			ErrSilentResets, silent, mem)
	case quick >= crashLoopBoots:
		return fmt.Errorf("vm: %w: the guest reset or panicked %d times in a row, each within %v of starting, with no trial to fall back from: a crash loop (the console above says why)",
			ErrBootLoop, quick, crashLoopBootTime)
	}
	return nil
}

// bootHistoryMax is how many boots checkBootLoop needs to see.
const bootHistoryMax = max(silentResetsMax, crashLoopBoots)
