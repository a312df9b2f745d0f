// Package piboot switches root slots on a Raspberry Pi, whose boot loader
// is the firmware on the FAT boot partition rather than ingot's host-side
// loader. Each slot has its own directory of operating-system files on the
// boot partition (PrefixDir: kernel, device trees, overlays, cmdline.txt
// naming its root partition), and config.txt selects one with os_prefix=.
//
// A trial boots through the firmware's one-shot tryboot flag: the agent
// writes tryboot.txt, a copy of config.txt selecting the trial slot, and
// reboots with the argument "0 tryboot"; the firmware clears the flag
// before it starts the kernel, so any reset during the trial (a crash, a
// watchdog, a failed health check, pulling the power) boots config.txt,
// the old slot, again. Confirming rewrites the one os_prefix line of
// config.txt in place: the slot names have the same length, so the file
// keeps its size and the change is a single sector write, which a power
// cut cannot tear (a rename on vfat can lose the file).
package piboot

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ingotdev/ingot/appliance/slot"
)

// Boot partition files the firmware reads.
const (
	ConfigFile  = "config.txt"
	TrybootFile = "tryboot.txt"
)

// RebootArg is the reboot(2) argument that sets the firmware's tryboot
// flag (LINUX_REBOOT_CMD_RESTART2; "0" is the boot partition number).
const RebootArg = "0 tryboot"

// prefixKey starts the config.txt line that selects the slot.
const prefixKey = "os_prefix="

// PrefixDir is the directory of slot's operating-system files on the boot
// partition, as os_prefix= names it (with its trailing slash).
func PrefixDir(slot string) string { return "slot-" + slot + "/" }

// validSlot reports whether s names a slot.
func validSlot(s string) bool { return s == "a" || s == "b" }

// SetPrefix returns config with its os_prefix= line set to slot's
// directory; the result has the same length as config. It fails when the
// config has no single os_prefix line naming a slot.
func SetPrefix(config []byte, slot string) ([]byte, error) {
	if !validSlot(slot) {
		return nil, fmt.Errorf("piboot: slot %q is not a or b", slot)
	}
	start, end, err := prefixLine(config)
	if err != nil {
		return nil, err
	}
	out := bytes.Clone(config)
	copy(out[start:end], prefixKey+PrefixDir(slot))
	return out, nil
}

// Prefix returns the slot config's os_prefix= line selects.
func Prefix(config []byte) (string, error) {
	start, end, err := prefixLine(config)
	if err != nil {
		return "", err
	}
	if string(config[start+len(prefixKey):end]) == PrefixDir("a") {
		return "a", nil
	}
	return "b", nil
}

// prefixLine finds the os_prefix= line: its start and the end of its
// value. Exactly one, naming a slot directory, is allowed: a config that
// says more than ingot wrote is not ours to rewrite.
func prefixLine(config []byte) (start, end int, err error) {
	start = -1
	off := 0
	for line := range bytes.Lines(config) {
		if bytes.HasPrefix(line, []byte(prefixKey)) {
			if start >= 0 {
				return 0, 0, fmt.Errorf("piboot: %s: more than one %s line", ConfigFile, prefixKey)
			}
			start = off
			end = off + len(bytes.TrimRight(line, "\r\n"))
		}
		off += len(line)
	}
	if start < 0 {
		return 0, 0, fmt.Errorf("piboot: %s: no %s line", ConfigFile, prefixKey)
	}
	if v := string(config[start:end]); v != prefixKey+PrefixDir("a") && v != prefixKey+PrefixDir("b") {
		return 0, 0, fmt.Errorf("piboot: %s: %q is not %sslot-a/ or slot-b/", ConfigFile, config[start:end], prefixKey)
	}
	return start, end, nil
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
		start, _, _ := prefixLine(b)
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("piboot: %w", err)
		}
		// Only the bytes that differ: the line, within one sector.
		_, werr := f.WriteAt(next[start:start+len(prefixKey)+len(PrefixDir(slot))], int64(start))
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
