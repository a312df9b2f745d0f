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
const maxConfigBytes = 512

// PrefixDir is the directory of slot's files on the boot partition, with
// its trailing slash.
func PrefixDir(slot string) string { return "slot-" + slot + "/" }

// validSlot reports whether s names a slot.
func validSlot(s string) bool { return s == "a" || s == "b" }

// SetPrefix returns config with its slot lines set to slot; the result has
// the same length as config. It fails when the config does not have each
// slot line exactly once, all naming the same slot.
func SetPrefix(config []byte, slot string) ([]byte, error) {
	if !validSlot(slot) {
		return nil, fmt.Errorf("piboot: slot %q is not a or b", slot)
	}
	offs, _, err := slotOffsets(config)
	if err != nil {
		return nil, err
	}
	out := bytes.Clone(config)
	for _, o := range offs {
		out[o] = slot[0]
	}
	return out, nil
}

// Prefix returns the slot config selects.
func Prefix(config []byte) (string, error) {
	_, slot, err := slotOffsets(config)
	return slot, err
}

// slotOffsets finds the byte offset of the slot letter in each slot line,
// and the slot they name.
func slotOffsets(config []byte) ([]int, string, error) {
	if len(config) > maxConfigBytes {
		return nil, "", fmt.Errorf("piboot: %s: %d bytes, more than the %d a single sector write covers", ConfigFile, len(config), maxConfigBytes)
	}
	var offs []int
	slot := ""
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
				var s string
				switch text {
				case fmt.Sprintf(pattern, "a"):
					s = "a"
				case fmt.Sprintf(pattern, "b"):
					s = "b"
				default:
					return nil, "", fmt.Errorf("piboot: %s: %q is not %q for slot a or b", ConfigFile, text, fmt.Sprintf(pattern, "X"))
				}
				if slot != "" && s != slot {
					return nil, "", fmt.Errorf("piboot: %s: the slot lines name different slots", ConfigFile)
				}
				slot = s
				found = off + strings.Index(text, "slot-") + len("slot-")
			}
			off += len(line)
		}
		if found < 0 {
			return nil, "", fmt.Errorf("piboot: %s: no %s= line", ConfigFile, key)
		}
		offs = append(offs, found)
	}
	return offs, slot, nil
}

// Active returns the slot config.txt in bootDir boots.
func Active(bootDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(bootDir, ConfigFile))
	if err != nil {
		return "", fmt.Errorf("piboot: %w", err)
	}
	return Prefix(b)
}

// PrepareTrial writes tryboot.txt in bootDir: config.txt selecting slot.
// Until the firmware is rebooted with RebootArg nothing reads it.
func PrepareTrial(bootDir, slot string) error {
	b, err := os.ReadFile(filepath.Join(bootDir, ConfigFile))
	if err != nil {
		return fmt.Errorf("piboot: %w", err)
	}
	trial, err := SetPrefix(b, slot)
	if err != nil {
		return err
	}
	path := filepath.Join(bootDir, TrybootFile)
	tmp := path + ".tmp"
	if err := writeSynced(tmp, trial); err != nil {
		return fmt.Errorf("piboot: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("piboot: %w", err)
	}
	return syncDir(bootDir)
}

// CancelTrial removes tryboot.txt; a missing one is fine.
func CancelTrial(bootDir string) error {
	err := os.Remove(filepath.Join(bootDir, TrybootFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("piboot: %w", err)
	}
	return syncDir(bootDir)
}

// SetActive makes config.txt in bootDir boot slot, rewriting the os_prefix
// line in place, and removes tryboot.txt.
func SetActive(bootDir, slot string) error {
	path := filepath.Join(bootDir, ConfigFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("piboot: %w", err)
	}
	next, err := SetPrefix(b, slot)
	if err != nil {
		return err
	}
	if !bytes.Equal(next, b) {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("piboot: %w", err)
		}
		_, werr := f.WriteAt(next, 0)
		serr := f.Sync()
		cerr := f.Close()
		if err := errors.Join(werr, serr, cerr); err != nil {
			return fmt.Errorf("piboot: rewrite %s: %w", path, err)
		}
	}
	return CancelTrial(bootDir)
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	serr := f.Sync()
	cerr := f.Close()
	return errors.Join(werr, serr, cerr)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("piboot: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("piboot: sync %s: %w", dir, err)
	}
	return nil
}

// Firmware tells the Raspberry Pi firmware about slot changes; it
// implements update.Firmware.
type Firmware struct{}

// Trial writes tryboot.txt for slot n.
func (Firmware) Trial(bootDir string, n slot.Name) error { return PrepareTrial(bootDir, string(n)) }

// Cancel removes tryboot.txt.
func (Firmware) Cancel(bootDir string) error { return CancelTrial(bootDir) }

// Activate points config.txt at slot n.
func (Firmware) Activate(bootDir string, n slot.Name) error { return SetActive(bootDir, string(n)) }

// BootFile is name in slot n's os_prefix directory.
func (Firmware) BootFile(name string, n slot.Name) string { return PrefixDir(string(n)) + name }

// RebootArg is RebootArg.
func (Firmware) RebootArg() string { return RebootArg }
