package vm

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ingotdev/ingot/hypervisor/qemu"
)

// TestCheckBootLoop runs the loop rule over boot histories, oldest first.
func TestCheckBootLoop(t *testing.T) {
	silent := bootRecord{Exit: qemu.ExitReboot, Lasted: 150 * time.Millisecond}
	crash := bootRecord{Exit: qemu.ExitPanic, ConsoleBytes: 4096, Lasted: 3 * time.Second}
	served := bootRecord{Exit: qemu.ExitReboot, ConsoleBytes: 1 << 20, Lasted: time.Minute}
	trial := func(r bootRecord) bootRecord { r.Trial = true; return r }
	rep := func(n int, r bootRecord) []bootRecord { return slices.Repeat([]bootRecord{r}, n) }
	cat := func(parts ...[]bootRecord) []bootRecord { return slices.Concat(parts...) }

	for _, tc := range []struct {
		name   string
		boots  []bootRecord
		silent bool // want ErrSilentResets
		loop   bool // want ErrBootLoop
	}{
		{"no boots", nil, false, false},
		{"silent resets below the limit", rep(silentResetsMax-1, silent), false, false},
		{"silent resets at the limit", rep(silentResetsMax, silent), true, true},
		{"silent resets after a good boot", cat(rep(5, served), rep(silentResetsMax, silent)), true, true},
		{"a good boot ends the silent streak", cat(rep(silentResetsMax-1, silent), rep(1, served), rep(silentResetsMax-1, silent)), false, false},
		// A trial that never prints falls back when its tries run out.
		{"silent trial boots", rep(silentResetsMax+5, trial(silent)), false, false},
		{"silent trial boots, then silent fallback", cat(rep(4, trial(silent)), rep(silentResetsMax, silent)), true, true},
		{"a poweroff is no reset", cat(rep(silentResetsMax-1, silent), rep(1, bootRecord{Exit: qemu.ExitPoweroff})), false, false},
		{"crashes below the limit", rep(crashLoopBoots-1, crash), false, false},
		{"crashes at the limit", rep(crashLoopBoots, crash), false, true},
		{"crashing trial boots", rep(crashLoopBoots+6, trial(crash)), false, false},
		// An update reboots twice; a rollback boots the failing trial, then the old slot.
		{"update cycles", slices.Repeat([]bootRecord{served, trial(served)}, 10), false, false},
		{"long boots that reboot", rep(crashLoopBoots*2, served), false, false},
	} {
		err := checkBootLoop(tc.boots, 64)
		if got := errors.Is(err, ErrSilentResets); got != tc.silent {
			t.Errorf("%s: checkBootLoop = %v, want ErrSilentResets %v", tc.name, err, tc.silent)
		}
		if got := errors.Is(err, ErrBootLoop); got != tc.loop {
			t.Errorf("%s: checkBootLoop = %v, want ErrBootLoop %v", tc.name, err, tc.loop)
		}
		if tc.silent && !strings.Contains(err.Error(), "64 MiB") {
			t.Errorf("%s: checkBootLoop = %v, want the guest's memory named", tc.name, err)
		}
	}
}
