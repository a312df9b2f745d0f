// Package bls is the UEFI boot path's view of the A/B state: the Boot
// Loader Specification entries that systemd-boot reads from the boot
// partition (loader/entries/*.conf), its loader.conf, and where the EFI
// loader itself lives (the removable-media path, so no NVRAM entry is
// needed).
//
// slot.json stays the one record of the A/B state. The entries are its
// projection for a firmware-side loader: one entry without a boot counter
// for the active slot, and, while a trial has tries left, one entry for
// the trial slot with a counter ("+LEFT[-DONE]" before ".conf") and a
// higher generation, so it sorts first. systemd-boot renames a counted
// entry (LEFT-1, DONE+1) before it boots it and sorts an entry with no
// tries left after every other, so a trial that never confirms falls back
// to the active entry on the next boot by itself. Plan turns a listing of
// the entries directory and a slot.State into the files to write and to
// remove; the agent and the packer both use it.
package bls

import (
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/format/slot"
)

// Paths on the boot partition (FAT, slash-separated).
const (
	// EntriesDir holds the Boot Loader Specification type 1 entries.
	EntriesDir = "loader/entries"
	// LoaderConf is systemd-boot's configuration.
	LoaderConf = "loader/loader.conf"
)

// entryPrefix starts the name of every entry ingot writes; files in
// EntriesDir without it are left alone.
const entryPrefix = "ingot-"

// MaxEntryBytes bounds an entry file: it fits one sector, so the
// single data write of a new entry cannot be torn.
const MaxEntryBytes = slot.SectorBytes

// RemovablePath is the path of the EFI loader that UEFI firmware starts
// from a disk without a boot entry in NVRAM (UEFI 2.x, 3.5.1.1), for the
// guest architecture arch (GOARCH spelling).
func RemovablePath(arch string) (string, error) {
	switch arch {
	case "amd64":
		return "EFI/BOOT/BOOTX64.EFI", nil
	case "arm64":
		return "EFI/BOOT/BOOTAA64.EFI", nil
	}
	return "", fmt.Errorf("bls: no UEFI removable-media loader name for arch %q", arch)
}

// SystemdBootPath is where Debian's systemd-boot-efi package holds the
// systemd-boot binary for arch, inside its data archive.
func SystemdBootPath(arch string) (string, error) {
	switch arch {
	case "amd64":
		return "usr/lib/systemd/boot/efi/systemd-bootx64.efi", nil
	case "arm64":
		return "usr/lib/systemd/boot/efi/systemd-bootaa64.efi", nil
	}
	return "", fmt.Errorf("bls: no systemd-boot binary known for arch %q", arch)
}

// LoaderConfig is loader.conf: boot the first entry at once with no menu
// (timeout 0; a key held at start still shows it), no command-line
// editor (the entry's command line is the appliance's), and no entries
// systemd-boot would invent (other EFI programs, firmware setup).
func LoaderConfig() []byte {
	return []byte("timeout 0\neditor no\nauto-entries no\nauto-firmware no\n")
}

// Entry is the name of one of ingot's entry files.
type Entry struct {
	// Gen orders entries: systemd-boot boots the good entry whose name
	// sorts last by version comparison, so the highest generation wins.
	Gen  int
	Slot slot.Name
	// Counted marks a trial entry: its name carries "+Left-Done", which
	// systemd-boot counts down before each boot of it.
	Counted    bool
	Left, Done int
}

// FileName is e's name in EntriesDir: "ingot-GEN-SLOT.conf", or with a
// counter "ingot-GEN-SLOT+LEFT-DONE.conf" ("-DONE" left out when 0).
func (e Entry) FileName() string {
	name := entryPrefix + strconv.Itoa(e.Gen) + "-" + string(e.Slot)
	if e.Counted {
		name += "+" + strconv.Itoa(e.Left)
		if e.Done > 0 {
			name += "-" + strconv.Itoa(e.Done)
		}
	}
	return name + ".conf"
}

// Bad reports whether systemd-boot sorts e last: a counted entry with no
// tries left.
func (e Entry) Bad() bool { return e.Counted && e.Left == 0 }

// ParseName parses an entry file name that FileName could have written,
// or that systemd-boot made of one by counting (case does not matter: FAT
// and the firmware's driver may change it). ok is false for any other
// name.
func ParseName(name string) (e Entry, ok bool) {
	rest, ok := cutPrefixFold(name, entryPrefix)
	if !ok || len(rest) < len(".conf") || !strings.EqualFold(rest[len(rest)-len(".conf"):], ".conf") {
		return Entry{}, false
	}
	rest = rest[:len(rest)-len(".conf")]
	gen, rest, ok := strings.Cut(rest, "-")
	if !ok {
		return Entry{}, false
	}
	if e.Gen, ok = number(gen); !ok {
		return Entry{}, false
	}
	sl, counter, counted := strings.Cut(rest, "+")
	e.Slot = slot.Name(strings.ToLower(sl))
	if !e.Slot.Valid() {
		return Entry{}, false
	}
	if counted {
		e.Counted = true
		left, done, hasDone := strings.Cut(counter, "-")
		if e.Left, ok = number(left); !ok {
			return Entry{}, false
		}
		if hasDone {
			if e.Done, ok = number(done); !ok {
				return Entry{}, false
			}
		}
	}
	return e, true
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return "", false
	}
	return s[len(prefix):], true
}

// number parses a decimal of 1 to 9 digits.
func number(s string) (int, bool) {
	if s == "" || len(s) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// List returns ingot's entries among names (the file names in
// EntriesDir), in the order systemd-boot prefers them: good entries by
// generation, highest first, then bad ones.
func List(names []string) []Named {
	var out []Named
	for _, n := range names {
		if e, ok := ParseName(n); ok {
			out = append(out, Named{Name: n, Entry: e})
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i].Entry, out[j].Entry
		if a.Bad() != b.Bad() {
			return !a.Bad()
		}
		if a.Gen != b.Gen {
			return a.Gen > b.Gen
		}
		return a.Left > b.Left
	})
	return out
}

// Named is an entry with the name it has on disk (which may differ from
// FileName in case).
type Named struct {
	Name  string
	Entry Entry
}

// Default is the slot the entries boot next and whether that is a trial
// (a counted entry), the way systemd-boot chooses; ok is false when there
// is no entry of ingot's.
func Default(names []string) (sl slot.Name, trial bool, ok bool) {
	l := List(names)
	if len(l) == 0 {
		return "", false, false
	}
	return l[0].Entry.Slot, l[0].Entry.Counted, true
}

// Spent reports whether names hold a counted entry for n whose tries are
// used up, and none for n with tries left: the firmware booted n's trial
// and n never confirmed.
func Spent(names []string, n slot.Name) bool {
	spent := false
	for _, e := range List(names) {
		if e.Entry.Slot != n || !e.Entry.Counted {
			continue
		}
		if e.Entry.Left > 0 {
			return false
		}
		spent = true
	}
	return spent
}

// Changes is what Plan asks for: entries to write (in order) and then
// the names to remove. Writes come first, so a power cut in between
// leaves an extra entry that sorts below the new one, never none.
type Changes struct {
	Write  []Entry
	Remove []string
}

// Empty reports whether the entries already match.
func (c Changes) Empty() bool { return len(c.Write) == 0 && len(c.Remove) == 0 }

// Plan works out how to make the entries named by names match s: one
// uncounted entry for s.Active and, while s.Trial has tries left, one
// counted entry for it with a higher generation. An entry that already
// fits is kept, so systemd-boot's counter on a trial entry is never
// reset. Every other entry of ingot's is removed.
func Plan(names []string, s slot.State) Changes {
	var c Changes
	entries := List(names)
	maxGen := 0
	for _, e := range entries {
		maxGen = max(maxGen, e.Entry.Gen)
	}
	var active, trial *Named
	for i := range entries {
		e := &entries[i]
		switch {
		case !e.Entry.Counted && active == nil && e.Entry.Slot == s.Active:
			active = e
		case e.Entry.Counted && trial == nil && s.Trial != "" && s.TriesLeft > 0 &&
			e.Entry.Slot == s.Trial && e.Entry.Left > 0:
			trial = e
		}
	}
	// The kept active entry must be the highest uncounted one: otherwise
	// a stale entry would win if the removals below are cut short.
	if active != nil {
		for _, e := range entries {
			if !e.Entry.Counted && e.Entry.Gen > active.Entry.Gen {
				active = nil
				break
			}
		}
	}
	activeGen := 0
	if active == nil {
		maxGen++
		activeGen = maxGen
		c.Write = append(c.Write, Entry{Gen: activeGen, Slot: s.Active})
	} else {
		activeGen = active.Entry.Gen
	}
	if trial != nil && trial.Entry.Gen <= activeGen {
		trial = nil
	}
	wantTrial := s.Trial != "" && s.TriesLeft > 0
	if wantTrial && trial == nil {
		maxGen++
		c.Write = append(c.Write, Entry{Gen: maxGen, Slot: s.Trial, Counted: true, Left: s.TriesLeft})
	}
	for i := range entries {
		e := &entries[i]
		if e != active && e != trial {
			c.Remove = append(c.Remove, e.Name)
		}
	}
	return c
}

// Params is what an entry's file says besides its name.
type Params struct {
	// Title is shown in systemd-boot's menu.
	Title string
	// Cmdline is the slot's own command line (its layout.CmdlineFile).
	Cmdline string
	// RootPARTUUID is the GPT GUID of the slot's root partition.
	RootPARTUUID string
}

// Content is the text of e's entry file. The kernel and initramfs are the
// slot's own copies; the options are the slot's command line with the
// root, slot and trial parameters the host-side loader adds
// (slot.Name.Cmdline), so the guest cannot tell the loaders apart. The
// linux line comes last: systemd-boot ignores an entry without one, so an
// entry cut short by a power cut is never booted.
func Content(e Entry, p Params) ([]byte, error) {
	if !e.Slot.Valid() {
		return nil, fmt.Errorf("bls: entry slot %q is not a or b", e.Slot)
	}
	p.Cmdline = strings.TrimSpace(p.Cmdline) // cmdline.txt ends in a line break
	if strings.ContainsAny(p.Title+p.Cmdline+p.RootPARTUUID, "\n\r") {
		return nil, fmt.Errorf("bls: entry %s: a line break in the title, command line or PARTUUID", e.FileName())
	}
	var b bytes.Buffer
	title := p.Title
	if e.Counted {
		title += " (trial)"
	}
	fmt.Fprintf(&b, "title %s\n", title)
	fmt.Fprintf(&b, "options %s\n", e.Slot.Cmdline(p.Cmdline, p.RootPARTUUID, e.Counted))
	fmt.Fprintf(&b, "initrd /%s\n", e.Slot.BootFile(layout.InitrdFile))
	fmt.Fprintf(&b, "linux /%s\n", e.Slot.BootFile(layout.KernelFile))
	if b.Len() > MaxEntryBytes {
		return nil, fmt.Errorf("bls: entry %s: %d bytes, more than one sector (%d): shorten the kernel command line", e.FileName(), b.Len(), MaxEntryBytes)
	}
	return b.Bytes(), nil
}
