package kmod

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// OnDemand loads the modules only some machines need — the drivers of
// other hypervisors' and clouds' disks and network cards — when a device
// that calls for one is present, as udev would: a module is loaded once
// the modalias of a device under /sys/bus/*/devices matches one of its
// patterns (modinfo alias=, with * ? and [...] as in modules.alias).
type OnDemand struct {
	sysDir  string
	load    func(path string) error
	pending []demand
	// matched counts the modules loaded because a device called for one.
	matched int
}

type demand struct {
	path     string
	patterns []string
}

// Loaded is a module OnDemand loaded and the device that called for it
// (empty when LoadRest loaded it without one).
type Loaded struct {
	Path   string
	Device string
}

// NewOnDemand returns an OnDemand for those of modules (in load order)
// that patterns names; the other modules are not its business.
func NewOnDemand(modules []string, patterns map[string][]string) *OnDemand {
	d := &OnDemand{sysDir: "/sys", load: Load}
	for _, m := range modules {
		if p, ok := patterns[m]; ok {
			d.pending = append(d.pending, demand{path: m, patterns: p})
		}
	}
	return d
}

// Pending returns how many modules are not loaded yet.
func (d *OnDemand) Pending() int { return len(d.pending) }

// LoadMatching loads, in load order, each pending module that a present
// device calls for. It reads the devices again after every load, since a
// bus driver brings the devices its own drivers match (Hyper-V's VMBus
// its disks, a SCSI host its disks). A module that fails to load is not
// tried again.
func (d *OnDemand) LoadMatching() ([]Loaded, []error) {
	if len(d.pending) == 0 {
		// stage0 calls this before every look for the root: nothing to
		// match, no sysfs walk.
		return nil, nil
	}
	var loaded []Loaded
	var errs []error
	aliases := d.modaliases()
	for i := 0; i < len(d.pending); {
		m := d.pending[i]
		dev, ok := matchAny(m.patterns, aliases)
		if !ok {
			i++
			continue
		}
		d.pending = slices.Delete(d.pending, i, i+1)
		if err := d.load(m.path); err != nil {
			errs = append(errs, err)
			continue
		}
		loaded = append(loaded, Loaded{Path: m.path, Device: dev})
		d.matched++
		aliases = d.modaliases()
		// A module loaded now may bring devices for one skipped before.
		i = 0
	}
	return loaded, errs
}

// Finish is called once the root disk is found, before the initramfs and
// its modules go away. If a device called for any module, this is not a
// plain virtio machine, and the devices of other drivers may still be
// appearing (Hyper-V offers its network card on VMBus after its disk, a
// SCSI host goes on scanning): it loads every pending module, as a boot
// did before modules were loaded on demand. Otherwise it loads none.
func (d *OnDemand) Finish() ([]Loaded, []error) {
	if d.matched == 0 {
		return nil, nil
	}
	return d.LoadRest()
}

// LoadRest loads every pending module, in load order.
func (d *OnDemand) LoadRest() ([]Loaded, []error) {
	var loaded []Loaded
	var errs []error
	for _, m := range d.pending {
		if err := d.load(m.path); err != nil {
			errs = append(errs, err)
			continue
		}
		loaded = append(loaded, Loaded{Path: m.path})
	}
	d.pending = nil
	return loaded, errs
}

// modaliases returns the modalias of every device on every bus. Devices
// come and go while drivers probe; one that cannot be read is skipped.
func (d *OnDemand) modaliases() []string {
	files, _ := filepath.Glob(filepath.Join(d.sysDir, "bus", "*", "devices", "*", "modalias"))
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if a := strings.TrimSpace(string(b)); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// matchAny returns the first modalias that one of patterns matches. A
// pattern path.Match cannot parse matches everything: loading a driver
// too many costs less than missing the root disk.
func matchAny(patterns, aliases []string) (string, bool) {
	for _, p := range patterns {
		for _, a := range aliases {
			ok, err := path.Match(p, a)
			if ok || err != nil {
				return a, true
			}
		}
	}
	return "", false
}

// String describes what l loaded, for the console.
func (l Loaded) String() string {
	if l.Device == "" {
		return fmt.Sprintf("module %s: loaded without a device", l.Path)
	}
	return fmt.Sprintf("module %s: loaded for device %s", l.Path, l.Device)
}
