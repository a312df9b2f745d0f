// Package layout is the on-disk contract of an ingot image, shared by the
// packer that writes it, the host-side boot loader and the guest that read
// it: partition names, boot-partition file names, and the image info file.
// It depends on the standard library only, so the guest binary can use it
// cheaply.
package layout

import (
	"errors"
	"io/fs"
	"path"
	"sort"
	"strings"
)

// Partition names in the GPT, in disk order.
const (
	BootPartition  = "boot"
	RootAPartition = "root-a"
	RootBPartition = "root-b"
	PermPartition  = "perm"
)

// Files on the FAT boot partition.
const (
	KernelFile  = "vmlinuz"
	InitrdFile  = "initrd.img"
	CmdlineFile = "cmdline.txt"
	SlotFile    = "slot.json"
	InfoFile    = "ingot.json"
)

// PerSlot reports whether each root slot has its own copy of the boot
// file name: the kernel, the initramfs and the command line belong to the
// root they boot, so an update that changes the kernel writes the new one
// for its slot only, and a rollback boots the old slot with its old kernel
// (slot.Name.BootFile names a slot's copy).
func PerSlot(name string) bool {
	return name == KernelFile || name == InitrdFile || name == CmdlineFile
}

// OverlaysDir is the directory of device tree overlays in a Raspberry Pi
// slot's directory, and OverlaysReadme the file whose presence makes the
// firmware load overlays from the slot's directory instead of a shared one.
const (
	OverlaysDir    = "overlays"
	OverlaysReadme = OverlaysDir + "/README"
)

// DeviceTreeFile reports whether name, relative to a Raspberry Pi slot's
// directory, is one of the device tree files that slot boots with, which
// belong to its kernel as much as the kernel itself: a device tree
// ("bcm2711-rpi-4-b.dtb"), an overlay ("overlays/NAME.dtbo"), the
// overlay map or OverlaysReadme. Names are restricted to letters, digits
// and ".-_", so a name can never leave the slot's directory.
func DeviceTreeFile(name string) bool {
	if rest, ok := strings.CutPrefix(name, OverlaysDir+"/"); ok {
		return name == OverlaysReadme || rest == "overlay_map.dtb" || plainName(rest) && strings.HasSuffix(rest, ".dtbo")
	}
	return plainName(name) && strings.HasSuffix(name, ".dtb")
}

// DeviceTreeFiles lists the device tree files (DeviceTreeFile names,
// relative to dir) that are regular files in dir and its OverlaysDir of
// fsys, sorted; a missing directory holds none. The build lists a kernel
// module with it, the update client an image's slot directory and the
// agent the slot directory on the boot partition.
func DeviceTreeFiles(fsys fs.FS, dir string) ([]string, error) {
	var names []string
	for _, sub := range []string{"", OverlaysDir} {
		entries, err := fs.ReadDir(fsys, path.Join(dir, sub))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if name := path.Join(sub, e.Name()); e.Type().IsRegular() && DeviceTreeFile(name) {
				names = append(names, name)
			}
		}
	}
	sort.Strings(names)
	return names, nil
}

// plainName reports whether s is a file name of letters, digits and
// ".-_" that does not start with a dot.
func plainName(s string) bool {
	if s == "" || s[0] == '.' || len(s) > 255 {
		return false
	}
	for _, r := range s {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '.' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// Info describes an image; the packer writes it to the boot partition as
// InfoFile so tools can tell what an image is without a config file.
type Info struct {
	Name    string `json:"name"`
	Target  string `json:"target"`
	Arch    string `json:"arch"`
	BuildID string `json:"build_id"`
	// Release is the image's spec.Appliance.Release (absent when 0), so
	// that a push can refuse a downgrade before it sends anything.
	Release uint64 `json:"release,omitempty"`
}

// Kernel command-line parameters that tie the boot stages together.
const (
	ParamRoot  = "ingot.root"  // PARTUUID=<guid> of the root slot to mount
	ParamSlot  = "ingot.slot"  // a or b
	ParamTrial = "ingot.trial" // 1 on a trial boot
	ParamBoot  = "ingot.boot"  // PARTUUID=<guid> of the boot partition
	ParamPerm  = "ingot.perm"  // PARTUUID=<guid> of the perm partition
	ParamIP    = "ingot.ip"    // ADDR/PREFIX,GATEWAY,DNS for a static network
	// ParamBuild is the build id of the root whose command line it is: in
	// each slot's own copy of CmdlineFile, it says which build that slot
	// boots (InfoFile describes the image as built, before any update).
	ParamBuild = "ingot.build"
)
