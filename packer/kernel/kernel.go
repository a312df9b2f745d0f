// Package kernel reads a Linux kernel as Debian packages it (a
// linux-image-*.deb: the vmlinuz image, its config and the modules under
// lib/modules/<version>) and works out which modules a VM needs and in which
// order to load them, from each module's own .modinfo, without depmod,
// modprobe or any host tool.
package kernel

import (
	"fmt"
	"sort"
	"strings"

	"github.com/ingotdev/ingot/internal/graph"
)

// Kernel is a kernel image with its modules.
type Kernel struct {
	// Version is the kernel release, as in uname -r and lib/modules/<Version>.
	Version string
	// Arch is the Debian architecture ("amd64", "arm64").
	Arch string
	// Image is the boot image (boot/vmlinuz-<Version>).
	Image []byte
	// Config is the kernel's build configuration (boot/config-<Version>),
	// nil when the package has none.
	Config []byte
	// Modules maps a module name to the module.
	Modules map[string]*Module
	// Builtin holds the names of modules compiled into the image
	// (modules.builtin): asking for one needs no file.
	Builtin map[string]bool
}

// Module is one loadable kernel module.
type Module struct {
	// Name is the module's name as the kernel knows it, with '_' for '-'.
	Name string
	// Path is the module's path below lib/modules/<Version>, uncompressed:
	// "kernel/drivers/virtio/virtio.ko".
	Path string
	// Depends names the modules that must be loaded first (modinfo depends=).
	Depends []string
	// Aliases are the module's modinfo alias= patterns.
	Aliases []string
	// SoftDepends are modinfo softdep= lines ("pre: crc32c"), which modprobe
	// honours and Closure does not.
	SoftDepends []string
	// Data is the uncompressed module, ready for finit_module. It is nil
	// for modules LoadDeb was told not to keep (WithModules).
	Data []byte
}

// DefaultVMModules returns the modules an ingot VM loads from its
// initramfs, for both amd64 and arm64 Debian cloud kernels: the virtio PCI
// transport with block, network and console devices, squashfs for the root,
// vsock over virtio for management, vfat with the code page and charset the
// FAT boot partition mounts with (Debian's FAT_DEFAULT_CODEPAGE=437,
// FAT_DEFAULT_IOCHARSET="ascii"), softdog as the watchdog (Debian's
// cloud kernels do not build i6300esb), and the ACPI power button with
// evdev so init sees a host's power-down request as a KEY_POWER event.
func DefaultVMModules() []string {
	return []string{
		"virtio_pci",
		"virtio_blk",
		"virtio_net",
		"virtio_console",
		"squashfs",
		"vsock",
		"vmw_vsock_virtio_transport",
		"vfat",
		"nls_cp437",
		"nls_ascii",
		"softdog",
		"button",
		"evdev",
	}
}

// CloudVMModules lists, for the guest architecture arch (GOARCH
// spelling), the disk and network drivers of other hypervisors and
// clouds, which a VM image loads beside DefaultVMModules so that it boots
// wherever a UEFI VM boots: virtio-scsi and SCSI disks (Proxmox's default
// controller, GCE), AWS ENA and Google gVNIC network cards, and on amd64
// Hyper-V/Azure (VMBus storage and network), VMware (PVSCSI, VMXNET3)
// and Xen (AWS's older instances). NVMe (AWS Nitro, GCE) is built into
// Debian's cloud kernels. The list holds only modules Debian's cloud
// kernel package for arch ships.
func CloudVMModules(arch string) []string {
	common := []string{"virtio_scsi", "sd_mod", "ena", "gve"}
	if arch == "amd64" {
		return append(common, "hv_vmbus", "hv_storvsc", "hv_netvsc", "vmw_pvscsi", "vmxnet3", "xen_blkfront", "xen_netfront")
	}
	return common
}

// Closure returns the named modules and everything they depend on,
// transitively, each after all of its dependencies. The order is
// deterministic: a depth-first walk of the names in the order given, each
// module's dependencies visited in name order. Modules built into the image
// are left out. Names may use '-' or '_'. An unknown name, a dependency on
// an unknown module, a cycle or a module whose data was not kept is an
// error.
func (k *Kernel) Closure(names ...string) ([]*Module, error) {
	roots := make([]string, len(names))
	for i, n := range names {
		roots[i] = normalizeName(n)
	}
	requiredBy := map[string]string{}
	order, cycle, err := graph.Order(roots, func(name string) ([]string, error) {
		if k.Builtin[name] {
			return nil, nil
		}
		m := k.Modules[name]
		if m == nil {
			if by := requiredBy[name]; by != "" {
				return nil, fmt.Errorf("kernel %s: module %q (needed by %q): not in the package", k.Version, name, by)
			}
			return nil, fmt.Errorf("kernel %s: module %q: not in the package and not built in", k.Version, name)
		}
		deps := make([]string, len(m.Depends))
		for i, d := range m.Depends {
			deps[i] = normalizeName(d)
			if _, ok := requiredBy[deps[i]]; !ok {
				requiredBy[deps[i]] = name
			}
		}
		sort.Strings(deps)
		return deps, nil
	})
	switch {
	case err != nil:
		return nil, err
	case cycle != nil:
		return nil, fmt.Errorf("kernel %s: module dependency cycle: %s", k.Version, strings.Join(cycle, " -> "))
	}
	var mods []*Module
	for _, name := range order {
		if k.Builtin[name] {
			continue
		}
		m := k.Modules[name]
		if m.Data == nil {
			return nil, fmt.Errorf("kernel %s: module %q (%s): data not kept; load with WithModules naming it", k.Version, name, m.Path)
		}
		mods = append(mods, m)
	}
	return mods, nil
}

// Triggers returns, for each module of the load-ordered list mods (as
// Closure returns) that the closure of always does not hold, the device
// alias patterns that make stage0 load it: its own modinfo aliases and
// those of every such module that depends on it, so a bus driver is
// loaded for the devices of the drivers that need it. Modules in the
// closure of always have no entry: they are loaded on every boot. A
// module without any pattern maps to an empty list; stage0 loads it only
// when the root disk does not appear.
func (k *Kernel) Triggers(mods []*Module, always []string) (map[string][]string, error) {
	base, err := k.Closure(always...)
	if err != nil {
		return nil, err
	}
	loaded := map[string]bool{}
	for _, m := range base {
		loaded[m.Name] = true
	}
	sets := map[string]map[string]bool{}
	// Dependents come after their dependencies in mods: walking backwards
	// sees every dependent of a module before the module itself.
	for i := len(mods) - 1; i >= 0; i-- {
		m := mods[i]
		if loaded[m.Name] {
			continue
		}
		set := sets[m.Name]
		if set == nil {
			set = map[string]bool{}
			sets[m.Name] = set
		}
		for _, a := range m.Aliases {
			set[a] = true
		}
		for _, d := range m.Depends {
			d = normalizeName(d)
			if loaded[d] || k.Builtin[d] {
				continue
			}
			if sets[d] == nil {
				sets[d] = map[string]bool{}
			}
			for a := range set {
				sets[d][a] = true
			}
		}
	}
	out := make(map[string][]string, len(sets))
	for name, set := range sets {
		list := make([]string, 0, len(set))
		for a := range set {
			list = append(list, a)
		}
		sort.Strings(list)
		out[name] = list
	}
	return out, nil
}
