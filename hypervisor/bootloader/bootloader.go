// Package bootloader is the host-side boot loader for VM appliances: it
// reads the boot partition of an image (kernel, initramfs, command line,
// A/B slot state), applies the trial and rollback rules of package slot,
// persists the decision before the guest starts, and returns what the VMM
// needs for a direct kernel boot. There is no firmware or boot loader in
// the guest, so a VM boots the same way every time and cannot be bricked
// by a bad boot sector.
package bootloader

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/ingotdev/ingot/packer/format/fat"
	"github.com/ingotdev/ingot/packer/format/gpt"
	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/format/piboot"
	"github.com/ingotdev/ingot/packer/format/slot"
)

// Boot is one prepared boot.
type Boot struct {
	Info    layout.Info
	Slot    slot.Name
	Trial   bool
	Kernel  string // path of the extracted kernel
	Initrd  string // path of the extracted initramfs
	Cmdline string
	// State is the slot state as persisted before this boot.
	State slot.State
}

// Prepare reads the boot partition of the image at path, decides which
// slot to boot, writes the decision back to slot.json when it changed, and
// extracts kernel and initramfs into dir. extraCmdline is appended to the
// command line (e.g. the guest network of the VMM).
func Prepare(path, dir string, extraCmdline ...string) (*Boot, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("bootloader: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("bootloader: %w", err)
	}
	table, err := gpt.Read(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("bootloader: %s: %w", path, err)
	}
	parts := map[string]gpt.Partition{}
	for _, p := range table.Partitions {
		parts[p.Name] = p
	}
	bootPart, ok := parts[layout.BootPartition]
	if !ok {
		return nil, fmt.Errorf("bootloader: %s: no %q partition in the GPT", path, layout.BootPartition)
	}
	section := fat.NewSection(f, bootPart.OffsetBytes(), bootPart.SizeBytes())
	bootFS, err := fat.Open(section, section.Size())
	if err != nil {
		return nil, fmt.Errorf("bootloader: %s: boot partition: %w", path, err)
	}
	read := func(name string) ([]byte, error) {
		b, err := fs.ReadFile(bootFS, name)
		if err != nil {
			return nil, fmt.Errorf("bootloader: %s: boot partition: %w", path, err)
		}
		return b, nil
	}
	// readSlot reads slot's copy of a per-slot boot file, or the shared
	// file of an image written before slots had their own.
	readSlot := func(name string, sl slot.Name) ([]byte, error) {
		b, err := fs.ReadFile(bootFS, layout.SlotBootFile(name, string(sl)))
		if errors.Is(err, fs.ErrNotExist) {
			return read(name)
		}
		if err != nil {
			return nil, fmt.Errorf("bootloader: %s: boot partition: %w", path, err)
		}
		return b, nil
	}
	var b Boot
	infoData, err := read(layout.InfoFile)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(infoData, &b.Info); err != nil {
		return nil, fmt.Errorf("bootloader: %s: %s: %w", path, layout.InfoFile, err)
	}
	// Before slot.json is touched: a Raspberry Pi image is the board
	// firmware's to boot.
	if _, err := fs.Stat(bootFS, piboot.ConfigFile); err == nil {
		return nil, fmt.Errorf("bootloader: %s is a Raspberry Pi image (target %s): the board's firmware boots it, not a VM; write it to a card with `ingot flash`, or build target vm-arm64 to run the same appliance here", path, b.Info.Target)
	}
	stateData, err := read(layout.SlotFile)
	if err != nil {
		return nil, err
	}
	state, err := slot.Parse(stateData)
	if err != nil {
		// A corrupt slot.json must not strand the appliance: slot a is the
		// one the packer wrote, so it is the safe fallback.
		state = slot.State{Active: slot.A, LastFailed: &slot.Failure{Slot: "", Reason: "slot.json unreadable: " + err.Error()}}
	}
	d := state.Decide()
	if d.Changed || err != nil {
		if err := fat.Rewrite(section, section.Size(), layout.SlotFile, d.Next.Marshal()); err != nil {
			return nil, fmt.Errorf("bootloader: %s: persist slot decision: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("bootloader: %s: sync: %w", path, err)
		}
	}
	b.Slot, b.Trial, b.State = d.Boot, d.Trial, d.Next
	root, ok := parts[d.Boot.PartitionLabel()]
	if !ok {
		return nil, fmt.Errorf("bootloader: %s: no %q partition in the GPT", path, d.Boot.PartitionLabel())
	}
	cmdline, err := readSlot(layout.CmdlineFile, d.Boot)
	if err != nil {
		return nil, err
	}
	words := []string{strings.TrimSpace(string(cmdline)),
		layout.ParamRoot + "=PARTUUID=" + root.GUID.String(), layout.ParamSlot + "=" + string(d.Boot)}
	if d.Trial {
		words = append(words, layout.ParamTrial+"=1")
	}
	words = append(words, extraCmdline...)
	b.Cmdline = strings.Join(words, " ")

	for _, file := range []struct{ name, dst string }{{layout.KernelFile, "vmlinuz"}, {layout.InitrdFile, "initrd.img"}} {
		data, err := readSlot(file.name, d.Boot)
		if err != nil {
			return nil, err
		}
		dst := filepath.Join(dir, file.dst)
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			return nil, fmt.Errorf("bootloader: extract %s: %w", file.name, err)
		}
		if file.name == layout.KernelFile {
			b.Kernel = dst
		} else {
			b.Initrd = dst
		}
	}
	return &b, nil
}
