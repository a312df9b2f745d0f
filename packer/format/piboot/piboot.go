// Package piboot switches root slots on a Raspberry Pi, whose boot loader
// is the firmware on the FAT boot partition rather than ingot's host-side
// loader. Each slot has its own directory on the boot partition (PrefixDir)
// with its kernel, its cmdline.txt, which names the slot's root partition,
// and the device trees and overlays of its kernel (with overlays/README,
// without which the firmware would read a shared overlays directory);
// config.txt selects one with its os_prefix= line. Only the firmware
// itself (bootcode.bin, start*.elf, fixup*.dat) and config.txt are shared.
//
// A trial boots through the firmware's one-shot tryboot flag: the agent
// writes tryboot.txt, a copy of config.txt selecting the trial slot, and
// reboots with the argument "0 tryboot"; the firmware clears the flag
// before it starts the kernel, so any reset during the trial (a crash, a
// watchdog, a failed health check, pulling the power) boots config.txt,
// the old slot, again. Confirming rewrites config.txt in place: the slot
// names have the same length and the file is smaller than a sector, so the
// change is a single sector write, which a power cut cannot tear (a rename
// on vfat can lose the file).
package piboot

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ingotdev/ingot/packer/format/slot"
)

// Boot partition files the firmware reads.
const (
	ConfigFile  = "config.txt"
	TrybootFile = "tryboot.txt"
)

// RebootArg is the reboot(2) argument that sets the firmware's tryboot
// flag (LINUX_REBOOT_CMD_RESTART2; "0" is the boot partition number).
const RebootArg = "0 tryboot"

// slotLines are the config.txt settings that select the slot; the slot
// letter follows "slot-" in their values.
var slotLines = []string{"os_prefix=slot-%s/"}

// maxConfigBytes keeps config.txt within one sector, so that rewriting it
// in place is atomic.
const maxConfigBytes = slot.SectorBytes

// PrefixDir is the directory of slot n's files on the boot partition,
// with its trailing slash.
func PrefixDir(n slot.Name) string { return "slot-" + string(n) + "/" }

// SetPrefix returns config with its slot lines set to slot n; the result
// has the same length as config. It fails when the config does not have
// each slot line exactly once, all naming the same slot.
func SetPrefix(config []byte, n slot.Name) ([]byte, error) {
	if !n.Valid() {
		return nil, fmt.Errorf("piboot: slot %q is not a or b", n)
	}
	offs, _, err := slotOffsets(config)
	if err != nil {
		return nil, err
	}
	out := bytes.Clone(config)
	for _, o := range offs {
		out[o] = n[0]
	}
	return out, nil
}

// Prefix returns the slot config selects.
func Prefix(config []byte) (slot.Name, error) {
	_, n, err := slotOffsets(config)
	return n, err
}

// slotOffsets finds the byte offset of the slot letter in each slot line,
// and the slot they name.
func slotOffsets(config []byte) ([]int, slot.Name, error) {
	if len(config) > maxConfigBytes {
		return nil, "", fmt.Errorf("piboot: %s: %d bytes, more than the %d a single sector write covers", ConfigFile, len(config), maxConfigBytes)
	}
	var offs []int
	var named slot.Name
	for _, pattern := range slotLines {
		key, _, _ := strings.Cut(pattern, "=")
		found := -1
		off := 0
		for line := range bytes.Lines(config) {
			text := string(bytes.TrimRight(line, "\r\n"))
			if strings.HasPrefix(text, key+"=") {
				if found >= 0 {
					return nil, "", fmt.Errorf("piboot: %s: more than one %s= line", ConfigFile, key)
				}
				var n slot.Name
				switch text {
				case fmt.Sprintf(pattern, slot.A):
					n = slot.A
				case fmt.Sprintf(pattern, slot.B):
					n = slot.B
				default:
					return nil, "", fmt.Errorf("piboot: %s: %q is not %q for slot a or b", ConfigFile, text, fmt.Sprintf(pattern, "X"))
				}
				if named != "" && n != named {
					return nil, "", fmt.Errorf("piboot: %s: the slot lines name different slots", ConfigFile)
				}
				named = n
				found = off + strings.Index(text, "slot-") + len("slot-")
			}
			off += len(line)
		}
		if found < 0 {
			return nil, "", fmt.Errorf("piboot: %s: no %s= line", ConfigFile, key)
		}
		offs = append(offs, found)
	}
	return offs, named, nil
}

// Active returns the slot config.txt in bootDir boots.
func Active(bootDir string) (slot.Name, error) {
	b, err := os.ReadFile(filepath.Join(bootDir, ConfigFile))
	if err != nil {
		return "", fmt.Errorf("piboot: %w", err)
	}
	return Prefix(b)
}

// setPrefixFile writes file in bootDir as config.txt selecting slot n
// (slot.WriteFile: config.txt keeps its length, so it is rewritten in
// place by one sector write).
func setPrefixFile(bootDir, file string, n slot.Name) error {
	b, err := os.ReadFile(filepath.Join(bootDir, ConfigFile))
	if err != nil {
		return fmt.Errorf("piboot: %w", err)
	}
	next, err := SetPrefix(b, n)
	if err != nil {
		return err
	}
	if file == ConfigFile && bytes.Equal(next, b) {
		return nil
	}
	if err := slot.WriteFile(filepath.Join(bootDir, file), next); err != nil {
		return fmt.Errorf("piboot: %w", err)
	}
	return nil
}

// Firmware tells the Raspberry Pi firmware about slot changes; it
// implements update.Firmware.
type Firmware struct{}

// Trial writes tryboot.txt in bootDir: config.txt selecting slot n. Until
// the firmware is rebooted with RebootArg nothing reads it.
func (Firmware) Trial(bootDir string, n slot.Name) error {
	return setPrefixFile(bootDir, TrybootFile, n)
}

// Cancel removes tryboot.txt; a missing one is fine.
func (Firmware) Cancel(bootDir string) error {
	err := os.Remove(filepath.Join(bootDir, TrybootFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("piboot: %w", err)
	}
	if err := slot.SyncDir(bootDir); err != nil {
		return fmt.Errorf("piboot: %w", err)
	}
	return nil
}

// Activate makes config.txt in bootDir boot slot n, rewriting the
// os_prefix line in place, and removes tryboot.txt.
func (fw Firmware) Activate(bootDir string, n slot.Name) error {
	if err := setPrefixFile(bootDir, ConfigFile, n); err != nil {
		return err
	}
	return fw.Cancel(bootDir)
}

// BootFile is name in slot n's os_prefix directory.
func (Firmware) BootFile(name string, n slot.Name) string { return PrefixDir(n) + name }

// RebootArg is RebootArg.
func (Firmware) RebootArg() string { return RebootArg }
