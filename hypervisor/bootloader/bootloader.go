// Package bootloader is the host-side boot loader for VM appliances: it
// reads the boot partition of an image (kernel, initramfs, command line,
// A/B slot state), applies the trial and rollback rules of package slot,
// persists the decision before the guest starts, and returns what the VMM
// needs for a direct kernel boot. There is no firmware or boot loader in
// the guest, so a VM boots the same way every time and cannot be bricked
// by a bad boot sector.
package bootloader

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/ingotdev/ingot/packer/format/image"
	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/format/piboot"
	"github.com/ingotdev/ingot/packer/format/slot"
)

// Boot is one prepared boot.
type Boot struct {
	// Info describes the image as built (layout.InfoFile).
	Info layout.Info
	// BuildID is the build that Slot holds: the layout.ParamBuild of the
	// slot's own command line, which an update replaces with the slot's
	// root, or Info's on an image written without it.
	BuildID string
	Slot    slot.Name
	Trial   bool
	Kernel  string // path of the extracted kernel
	Initrd  string // path of the extracted initramfs
	Cmdline string
	// State is the slot state as persisted before this boot.
	State slot.State
	// Recovered is set when slot.json could not be read or parsed: which
	// slot boots instead and why (slot.Recover). The VMM shows it to the
	// operator; the guest's status shows it as last_failed.
	Recovered string
}

// Prepare reads the boot partition of the image at path, decides which
// slot to boot (image.Decide: with an unreadable slot.json, a slot whose
// root is valid), writes the decision back to slot.json when it changed, and
// extracts kernel and initramfs into dir. extraCmdline is appended to the
// command line (e.g. the guest network of the VMM).
func Prepare(path, dir string, extraCmdline ...string) (*Boot, error) {
	im, err := image.OpenRW(path)
	if err != nil {
		return nil, fmt.Errorf("bootloader: %w", err)
	}
	defer im.Close()
	bootFS, err := im.Boot()
	if err != nil {
		return nil, fmt.Errorf("bootloader: %w", err)
	}
	var b Boot
	if b.Info, err = im.Info(); err != nil {
		return nil, fmt.Errorf("bootloader: %w", err)
	}
	// Before slot.json is touched: a Raspberry Pi image is the board
	// firmware's to boot.
	if _, err := fs.Stat(bootFS, piboot.ConfigFile); err == nil {
		return nil, fmt.Errorf("bootloader: %s is a Raspberry Pi image (target %s): the board's firmware boots it, not a VM; write it to a card with `ingot flash`, or build target vm-arm64 to run the same appliance here", path, b.Info.Target)
	}
	d, err := im.Decide()
	if err != nil {
		return nil, fmt.Errorf("bootloader: %w", err)
	}
	b.Recovered = d.Recovered
	if d.Changed {
		// The decision is on disk before the guest starts: RewriteBoot
		// syncs, and it replaces the file in place (new clusters, then one
		// directory entry write), so a power cut leaves the old or the new
		// state.
		if err := im.RewriteBoot(layout.SlotFile, d.Next.Marshal()); err != nil {
			if d.Recovered == "" {
				return nil, fmt.Errorf("bootloader: persist slot decision: %w", err)
			}
			// A recovered decision spends no try and starts no trial:
			// the next boot, finding the same unreadable file, decides
			// the same. Booting without it is safe, and the guest's
			// updates stay off until slot.json is readable.
			b.Recovered += fmt.Sprintf(" (not written to %s: %v)", layout.SlotFile, err)
		}
	}
	b.Slot, b.Trial, b.State = d.Boot, d.Trial, d.Next
	root, err := im.Partition(d.Boot.PartitionLabel())
	if err != nil {
		return nil, fmt.Errorf("bootloader: %w", err)
	}
	files, err := im.BootFiles(d.Boot)
	if err != nil {
		return nil, fmt.Errorf("bootloader: %w", err)
	}
	b.BuildID = b.Info.BuildID
	if id := layout.CmdlineBuild(string(files[layout.CmdlineFile])); id != "" {
		b.BuildID = id
	}
	words := append([]string{d.Boot.Cmdline(string(files[layout.CmdlineFile]), root.GUID.String(), d.Trial)}, extraCmdline...)
	b.Cmdline = strings.Join(words, " ")

	b.Kernel, b.Initrd = filepath.Join(dir, layout.KernelFile), filepath.Join(dir, layout.InitrdFile)
	for name, dst := range map[string]string{layout.KernelFile: b.Kernel, layout.InitrdFile: b.Initrd} {
		if err := os.WriteFile(dst, files[name], 0o644); err != nil {
			return nil, fmt.Errorf("bootloader: extract %s: %w", name, err)
		}
	}
	return &b, nil
}
