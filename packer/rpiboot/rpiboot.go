// Package rpiboot makes the boot partition of a Raspberry Pi image: the
// firmware from github.com/gokrazy/firmware, the kernel and device trees
// from github.com/gokrazy/kernel.rpi (both Go modules, fetched and
// version-pinned through the Go module proxy like any module), and
// config.txt, in the layout package piboot switches at run time: each
// root slot has a directory with its kernel, cmdline.txt, device trees
// and overlays, which config.txt's os_prefix= line selects.
//
// The kernel starts ingot-init directly from the squashfs root (root=,
// rootfstype=squashfs, init=/init): kernel.rpi has squashfs, ext4, vfat,
// the SD/MMC host and the Ethernet drivers built in, so there is no
// initramfs.
package rpiboot

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/ingotdev/ingot/packer/fat"
	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/format/piboot"
	"github.com/ingotdev/ingot/packer/format/slot"
)

// The Go modules a Pi image is made from.
const (
	KernelModule   = "github.com/gokrazy/kernel.rpi"
	FirmwareModule = "github.com/gokrazy/firmware"
)

// Module is a downloaded Go module.
type Module struct {
	Path, Version string
	// Dir is the module's extracted tree in the module cache.
	Dir string
}

// Download resolves module path at version ("" for latest) through the Go
// module proxy with `go mod download -json` and returns where the go
// command extracted it; a second call with the pinned version needs no
// network.
func Download(ctx context.Context, goCmd, modPath, version string) (Module, error) {
	if version == "" {
		version = "latest"
	}
	cmd := exec.CommandContext(ctx, goCmd, "mod", "download", "-json", modPath+"@"+version)
	// Outside any module, so the project's go.mod neither constrains nor
	// records the download.
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GO111MODULE=on")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var m struct {
		Path, Version, Dir, Error string
	}
	if jerr := json.Unmarshal(out, &m); jerr == nil && m.Error != "" {
		return Module{}, fmt.Errorf("rpiboot: go mod download %s@%s: %s", modPath, version, m.Error)
	}
	if err != nil {
		return Module{}, fmt.Errorf("rpiboot: go mod download %s@%s: %w: %s", modPath, version, err, strings.TrimSpace(stderr.String()))
	}
	if err := json.Unmarshal(out, &m); err != nil || m.Dir == "" {
		return Module{}, fmt.Errorf("rpiboot: go mod download %s@%s: unexpected output %q", modPath, version, out)
	}
	return Module{Path: m.Path, Version: m.Version, Dir: m.Dir}, nil
}

// Config returns config.txt booting slot n. It stays below the size
// piboot rewrites atomically. os_prefix makes the firmware load the
// kernel, the command line, the device tree and the overlays from the
// slot's directory.
func Config(name string, n slot.Name) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "# ingot appliance %s: Raspberry Pi firmware configuration.\n", name)
	b.WriteString("# The os_prefix= line selects the root slot; ingot rewrites it.\n")
	b.WriteString("arm_64bit=1\n")
	b.WriteString("enable_uart=1\n")
	b.WriteString("disable_splash=1\n")
	fmt.Fprintf(&b, "os_prefix=%s\n", piboot.PrefixDir(n))
	fmt.Fprintf(&b, "kernel=%s\n", layout.KernelFile)
	fmt.Fprintf(&b, "cmdline=%s\n", layout.CmdlineFile)
	return []byte(b.String())
}

// overlaysReadme marks a slot's overlays directory as the one to use (the
// firmware falls back to a shared /overlays without it).
const overlaysReadme = "Device tree overlays of this root slot's kernel, written by ingot.\n" +
	"The firmware loads overlays from here because this file exists.\n"

// CmdlineParams are the partitions a slot's command line names.
type CmdlineParams struct {
	Slot slot.Name
	// Root is the PARTUUID of the slot's root partition; Boot and Perm
	// those of the boot and perm partitions (Perm empty without perm).
	Root, Boot, Perm string
}

// Cmdline returns slot's cmdline.txt: the kernel mounts the squashfs root
// itself and starts /init (ingot-init as stage1). The serial consoles are
// the mini UART of Pi 3, 4 and Zero 2 W (ttyS0) and the PL011 (ttyAMA0),
// which QEMU's raspi3b machine connects.
func Cmdline(p CmdlineParams) string {
	words := []string{
		"console=ttyAMA0,115200", "console=ttyS0,115200",
		"root=PARTUUID=" + p.Root, "rootfstype=squashfs", "ro", "rootwait", "init=/init", "panic=10",
		// Raspberry Pi kernels leave the memory controller off by default;
		// resources: memory limits need it.
		"cgroup_enable=memory",
		layout.ParamSlot + "=" + string(p.Slot), layout.ParamBoot + "=PARTUUID=" + p.Boot,
	}
	if p.Perm != "" {
		words = append(words, layout.ParamPerm+"=PARTUUID="+p.Perm)
	}
	return strings.Join(words, " ") + "\n"
}

// Files lists the boot partition of a Pi image: the firmware and
// config.txt booting slot a, shared; and for each slot, in its os_prefix
// directory, the kernel, the command line (cmdline(slot)), the device
// trees and the overlays, which belong together: an update that brings a
// new kernel brings its device trees, and a rollback boots the old kernel
// with the old ones.
func Files(name string, kernel, firmware Module, cmdline func(slot.Name) string) ([]fat.File, error) {
	var files []fat.File
	fw, err := matching(firmware.Dir, func(n string) bool {
		return n == "bootcode.bin" || strings.HasSuffix(n, ".elf") || strings.HasSuffix(n, ".dat")
	})
	if err != nil {
		return nil, err
	}
	if !slices.Contains(fw, "bootcode.bin") || !slices.Contains(fw, "start.elf") || !slices.Contains(fw, "start4.elf") {
		return nil, fmt.Errorf("rpiboot: %s@%s: no bootcode.bin, start.elf and start4.elf in %s", firmware.Path, firmware.Version, firmware.Dir)
	}
	add := func(p, src string) error {
		f, err := hostFile(p, src)
		if err == nil {
			files = append(files, f)
		}
		return err
	}
	for _, n := range fw {
		if err := add(n, filepath.Join(firmware.Dir, n)); err != nil {
			return nil, err
		}
	}
	trees, err := DeviceTrees(kernel)
	if err != nil {
		return nil, err
	}
	vmlinuz := filepath.Join(kernel.Dir, layout.KernelFile)
	for _, sl := range []slot.Name{slot.A, slot.B} {
		prefix := piboot.PrefixDir(sl)
		if err := add(prefix+layout.KernelFile, vmlinuz); err != nil {
			return nil, fmt.Errorf("%s@%s: %w", kernel.Path, kernel.Version, err)
		}
		files = append(files, fat.BytesFile(prefix+layout.CmdlineFile, []byte(cmdline(sl))))
		for _, t := range trees {
			if err := add(prefix+t, filepath.Join(kernel.Dir, filepath.FromSlash(t))); err != nil {
				return nil, err
			}
		}
		files = append(files, fat.BytesFile(prefix+layout.OverlaysReadme, []byte(overlaysReadme)))
	}
	files = append(files, fat.BytesFile(piboot.ConfigFile, Config(name, slot.A)))
	return files, nil
}

// DeviceTrees lists the device tree files of the kernel module that a
// slot boots with (layout.DeviceTreeFile names, sorted): its *.dtb and
// overlays/*.dtbo and overlays/overlay_map.dtb. Other files of the module
// are not for the firmware.
func DeviceTrees(kernel Module) ([]string, error) {
	all, err := layout.DeviceTreeFiles(os.DirFS(kernel.Dir), ".")
	if err != nil {
		return nil, fmt.Errorf("rpiboot: %s@%s: %w", kernel.Path, kernel.Version, err)
	}
	// Each slot gets ingot's own overlays/README, whatever the module has.
	trees := slices.DeleteFunc(all, func(n string) bool { return n == layout.OverlaysReadme })
	if !slices.ContainsFunc(trees, func(n string) bool { return !strings.Contains(n, "/") }) {
		return nil, fmt.Errorf("rpiboot: %s@%s: no device trees (*.dtb) in %s", kernel.Path, kernel.Version, kernel.Dir)
	}
	return trees, nil
}

// matching lists the regular files directly in dir whose names pass keep,
// sorted.
func matching(dir string, keep func(string) bool) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("rpiboot: %w", err)
	}
	var out []string
	for _, e := range entries {
		if e.Type().IsRegular() && keep(e.Name()) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

// hostFile is a boot partition file read from the build machine when the
// partition is written; the file must exist now, its size goes into the
// directory entry.
func hostFile(p, src string) (fat.File, error) {
	st, err := os.Stat(src)
	if err != nil {
		return fat.File{}, fmt.Errorf("rpiboot: %w", err)
	}
	return fat.File{Path: path.Clean(p), Size: st.Size(), Content: hostContent(src)}, nil
}

type hostContent string

func (h hostContent) Open() (io.ReadCloser, error) { return os.Open(string(h)) }

// Lock is what an appliance directory pins, in ingot.lock beside
// ingot.yaml: "KEY VALUE" lines, "MODULE VERSION" for the Pi's Go modules,
// "deb:NAME PATH SIZE SHA256 [SNAPSHOT]" for Debian packages (a value may
// hold spaces; package builder/debfetch reads it).
type Lock map[string]string

// LockFile is the lock's name in the appliance directory.
const LockFile = "ingot.lock"

// ReadLock reads dir's lock; a missing one is empty.
func ReadLock(dir string) (Lock, error) {
	f, err := os.Open(filepath.Join(dir, LockFile))
	if errors.Is(err, fs.ErrNotExist) {
		return Lock{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("rpiboot: %w", err)
	}
	defer f.Close()
	l := Lock{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			return nil, fmt.Errorf("rpiboot: %s:%d: want KEY VALUE", filepath.Join(dir, LockFile), n)
		}
		l[fields[0]] = strings.Join(fields[1:], " ")
	}
	return l, sc.Err()
}

// Write writes the lock to dir when it differs from what is there.
func (l Lock) Write(dir string) error {
	var b strings.Builder
	b.WriteString("# What ingot builds this appliance's images from (Go modules, Debian packages); ingot build writes this.\n")
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s %s\n", k, l[k])
	}
	p := filepath.Join(dir, LockFile)
	if old, err := os.ReadFile(p); err == nil && string(old) == b.String() {
		return nil
	}
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("rpiboot: %w", err)
	}
	return nil
}
