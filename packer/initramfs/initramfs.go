// Package initramfs lays out the stage0 initramfs of an ingot VM as a
// rootfs.Tree: ingot-stage0 as /init, the kernel modules stage0 loads before it
// can reach the root disk, and /etc/ingot/stage0.json (spec.Stage0) naming
// them in load order and saying which load only for their devices. packer/cpio turns the tree into the archive the kernel unpacks.
package initramfs

import (
	"encoding/json"
	"fmt"

	"github.com/ingotdev/ingot/packer/format/spec"
	"github.com/ingotdev/ingot/packer/kernel"
	"github.com/ingotdev/ingot/packer/rootfs"
)

// Paths inside the initramfs that stage0 relies on.
const (
	InitPath   = "/init"
	ConfigPath = spec.Stage0Path
	// ModulesDir is where the modules of a kernel version live, as on any
	// Linux system: ModulesDir + "/" + version + "/" + Module.Path.
	ModulesDir = spec.ModulesDir
)

// consoleMajor and consoleMinor are the device number of /dev/console,
// which the kernel opens as init's stdin/stdout/stderr before devtmpfs is
// mounted.
const (
	consoleMajor = 5
	consoleMinor = 1
)

// Tree returns the initramfs for kernel k: init (initSize bytes, mode 0755)
// as /init, each of mods at /lib/modules/<k.Version>/<Path> in the given
// order, which must be a load order such as k.Closure returns, and the
// spec.Stage0 listing them, with onDemand (module name → device alias
// patterns, as k.Triggers returns; nil: every module loads on every boot)
// as its OnDemand. Every entry is owned by root and dated modTime.
func Tree(k *kernel.Kernel, mods []*kernel.Module, onDemand map[string][]string, init rootfs.Content, initSize int64, modTime int64) (*rootfs.Tree, error) {
	if err := rootfs.ValidName(k.Version); err != nil {
		return nil, fmt.Errorf("initramfs: kernel version %q: %w", k.Version, err)
	}
	t := rootfs.New(modTime)
	dir := func(p string) error {
		if err := t.MkdirAll(p, 0o755, modTime); err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
		return nil
	}
	add := func(p string, e rootfs.Entry) error {
		e.ModTime = modTime
		if err := dir(parent(p)); err != nil {
			return err
		}
		if err := t.Add(p, e); err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
		return nil
	}
	// The directories stage0 mounts on before it switches to the real root;
	// creating them here saves stage0 a failure mode.
	for _, p := range []string{"/dev", "/proc", "/sys", "/newroot"} {
		if err := dir(p); err != nil {
			return nil, err
		}
	}
	if err := add("/dev/console", rootfs.Entry{Kind: rootfs.KindCharDevice, Mode: 0o600,
		DevMajor: consoleMajor, DevMinor: consoleMinor}); err != nil {
		return nil, err
	}
	if err := add(InitPath, rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o755, Size: initSize, Content: init}); err != nil {
		return nil, err
	}
	cfg := spec.Stage0{Modules: []string{}}
	named := map[string]bool{}
	for i, m := range mods {
		if m.Data == nil {
			return nil, fmt.Errorf("initramfs: module %d %q (%s): no data", i, m.Name, m.Path)
		}
		p := ModulesDir + "/" + k.Version + "/" + m.Path
		if _, err := rootfs.SplitPath(p); err != nil {
			return nil, fmt.Errorf("initramfs: module %d %q: %w", i, m.Name, err)
		}
		if err := add(p, rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o644,
			Size: int64(len(m.Data)), Content: rootfs.Bytes(m.Data)}); err != nil {
			return nil, err
		}
		cfg.Modules = append(cfg.Modules, p)
		named[m.Name] = true
		if patterns, ok := onDemand[m.Name]; ok {
			if cfg.OnDemand == nil {
				cfg.OnDemand = map[string][]string{}
			}
			cfg.OnDemand[p] = patterns
		}
	}
	for name := range onDemand {
		if !named[name] {
			return nil, fmt.Errorf("initramfs: on-demand module %q is not among the modules", name)
		}
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("initramfs: %s: %w", ConfigPath, err)
	}
	b = append(b, '\n')
	if err := add(ConfigPath, rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o644,
		Size: int64(len(b)), Content: rootfs.Bytes(b)}); err != nil {
		return nil, err
	}
	return t, nil
}

func parent(p string) string {
	for i := len(p) - 1; i > 0; i-- {
		if p[i] == '/' {
			return p[:i]
		}
	}
	return "/"
}
