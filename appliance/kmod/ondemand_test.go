package kmod

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// fakeSys is a sysfs with devices on buses, whose drivers add devices when
// they load, as a bus driver does.
type fakeSys struct {
	t      *testing.T
	dir    string
	brings map[string][]string // module path → "bus/name=modalias" it adds
	loaded []string
	fail   map[string]bool
}

func (f *fakeSys) add(dev string) {
	bus, rest, _ := strings.Cut(dev, "/")
	name, alias, _ := strings.Cut(rest, "=")
	d := filepath.Join(f.dir, "bus", bus, "devices", name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "modalias"), []byte(alias+"\n"), 0o444); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeSys) load(path string) error {
	f.loaded = append(f.loaded, path)
	if f.fail[path] {
		return errors.New("finit_module: no such device")
	}
	for _, dev := range f.brings[path] {
		f.add(dev)
	}
	return nil
}

func TestOnDemand(t *testing.T) {
	f := &fakeSys{t: t, dir: t.TempDir(), brings: map[string][]string{
		"/m/hv_vmbus.ko":   {"vmbus/disk0=vmbus:d96"},
		"/m/hv_storvsc.ko": {"scsi/0:0:0:0=scsi:t-0x00"},
	}}
	f.add("pci/0000:00:01.0=pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc00i00")
	f.add("acpi/VMBUS:00=acpi:VMBUS:")
	modules := []string{"/m/virtio_blk.ko", "/m/scsi_mod.ko", "/m/hv_vmbus.ko", "/m/sd_mod.ko", "/m/hv_storvsc.ko", "/m/vmw_pvscsi.ko", "/m/xen_blkfront.ko", "/m/lonely.ko"}
	d := NewOnDemand(modules, map[string][]string{
		"/m/scsi_mod.ko":     {"scsi:t-0x00*", "vmbus:d96*", "pci:v000015ADd000007C0sv*"},
		"/m/hv_vmbus.ko":     {"acpi*:VMBUS:*", "vmbus:d96*"},
		"/m/sd_mod.ko":       {"scsi:t-0x00*"},
		"/m/hv_storvsc.ko":   {"vmbus:d96*"},
		"/m/vmw_pvscsi.ko":   {"pci:v000015ADd000007C0sv*"},
		"/m/xen_blkfront.ko": {"xen:vbd"},
		"/m/lonely.ko":       {},
	})
	d.sysDir, d.load = f.dir, f.load
	if d.Pending() != 7 {
		t.Fatalf("Pending() = %d, want 7 (virtio_blk is not on demand)", d.Pending())
	}
	loaded, errs := d.LoadMatching()
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	// The VMBus device calls for hv_vmbus, whose disk calls for scsi_mod
	// and hv_storvsc, whose SCSI disk calls for sd_mod, each in load order.
	want := []Loaded{
		{"/m/hv_vmbus.ko", "acpi:VMBUS:"},
		{"/m/scsi_mod.ko", "vmbus:d96"},
		{"/m/hv_storvsc.ko", "vmbus:d96"},
		{"/m/sd_mod.ko", "scsi:t-0x00"},
	}
	if !reflect.DeepEqual(loaded, want) {
		t.Errorf("LoadMatching() = %v\nwant %v", loaded, want)
	}
	if want := []string{"/m/hv_vmbus.ko", "/m/scsi_mod.ko", "/m/hv_storvsc.ko", "/m/sd_mod.ko"}; !reflect.DeepEqual(f.loaded, want) {
		t.Errorf("load order %q, want %q", f.loaded, want)
	}
	if loaded, _ := d.LoadMatching(); len(loaded) != 0 || d.Pending() != 3 {
		t.Errorf("second LoadMatching() = %v with %d pending, want nothing new and 3 pending", loaded, d.Pending())
	}
	// Devices called for drivers: this is another cloud, whose other
	// devices may come later, so Finish loads the rest.
	f.fail = map[string]bool{"/m/xen_blkfront.ko": true}
	loaded, errs = d.Finish()
	if len(loaded) != 2 || len(errs) != 1 || d.Pending() != 0 {
		t.Errorf("Finish() = %v, %v, %d pending; want vmw_pvscsi and lonely loaded, xen_blkfront failed, none pending", loaded, errs, d.Pending())
	}
	if s := loaded[0].String(); s != "module /m/vmw_pvscsi.ko: loaded without a device" {
		t.Errorf("String() = %q", s)
	}
}

// TestOnDemandPlainVirtio: where no device calls for a driver, Finish
// loads nothing.
func TestOnDemandPlainVirtio(t *testing.T) {
	f := &fakeSys{t: t, dir: t.TempDir()}
	f.add("pci/0000:00:01.0=pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc00i00")
	d := NewOnDemand([]string{"/m/hv_vmbus.ko"}, map[string][]string{"/m/hv_vmbus.ko": {"acpi*:VMBUS:*"}})
	d.sysDir, d.load = f.dir, f.load
	d.LoadMatching()
	if loaded, errs := d.Finish(); len(loaded)+len(errs) != 0 || len(f.loaded) != 0 || d.Pending() != 1 {
		t.Errorf("Finish() on plain virtio = %v, %v, loaded %v; want nothing loaded", loaded, errs, f.loaded)
	}
}

func TestOnDemandFailureNotRetried(t *testing.T) {
	f := &fakeSys{t: t, dir: t.TempDir(), fail: map[string]bool{"/m/ena.ko": true}}
	f.add("pci/0000:00:05.0=pci:v00001D0Fd0000EC20sv00001D0Fsd00000000bc02sc00i00")
	d := NewOnDemand([]string{"/m/ena.ko"}, map[string][]string{"/m/ena.ko": {"pci:v00001D0Fd0000EC20sv*sd*bc*sc*i*"}})
	d.sysDir, d.load = f.dir, f.load
	if _, errs := d.LoadMatching(); len(errs) != 1 {
		t.Fatalf("LoadMatching() errors %v, want the one failure", errs)
	}
	d.LoadMatching()
	if len(f.loaded) != 1 {
		t.Errorf("a failed module was tried %d times, want once", len(f.loaded))
	}
}

func TestMatchAny(t *testing.T) {
	for _, tc := range []struct {
		pattern, alias string
		want           bool
	}{
		{"pci:v000015ADd000007C0sv*sd*bc*sc*i*", "pci:v000015ADd000007C0sv000015ADsd000007C0bc01sc00i00", true},
		{"pci:v000015ADd000007C0sv*sd*bc*sc*i*", "pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc00i00", false},
		{"xen:vbd", "xen:vbd", true},
		{"dmi*:svn*[Vv]Mware*", "dmi:bvnPhoenix:svnVMware,Inc.:", true},
		{"broken[", "anything", true}, // unparsable: load rather than miss the root disk
	} {
		if _, got := matchAny([]string{tc.pattern}, []string{tc.alias}); got != tc.want {
			t.Errorf("matchAny(%q, %q) = %v, want %v", tc.pattern, tc.alias, got, tc.want)
		}
	}
}
