package kernel_test

import (
	"context"
	"reflect"
	"slices"
	"testing"

	"github.com/ingotdev/ingot/internal/vmtest"
	"github.com/ingotdev/ingot/packer/kernel"
)

func TestTriggers(t *testing.T) {
	mod := func(name string, aliases []string, deps ...string) *kernel.Module {
		return &kernel.Module{Name: name, Path: "kernel/" + name + ".ko", Aliases: aliases, Depends: deps, Data: []byte{1}}
	}
	k := &kernel.Kernel{Version: "6.1", Builtin: map[string]bool{"nvme": true}, Modules: map[string]*kernel.Module{}}
	for _, m := range []*kernel.Module{
		mod("virtio", nil),
		mod("virtio_pci", []string{"pci:v00001AF4d*"}, "virtio"),
		mod("virtio_blk", []string{"virtio:d00000002v*"}, "virtio"),
		mod("scsi_mod", nil),
		mod("sd_mod", []string{"scsi:t-0x00*"}, "scsi_mod"),
		mod("virtio_scsi", []string{"virtio:d00000008v*"}, "virtio", "scsi_mod"),
		mod("hv_vmbus", []string{"acpi*:VMBUS:*"}),
		mod("hv_storvsc", []string{"vmbus:d96*"}, "hv_vmbus", "scsi_mod"),
		mod("lonely", nil),
	} {
		k.Modules[m.Name] = m
	}
	always := []string{"virtio_pci", "virtio_blk"}
	mods, err := k.Closure(append(slices.Clone(always), "virtio_scsi", "sd_mod", "hv_storvsc", "lonely", "nvme")...)
	if err != nil {
		t.Fatal(err)
	}
	got, err := k.Triggers(mods, always)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		// A shared dependency is needed by the devices of all its dependents.
		"scsi_mod":    {"scsi:t-0x00*", "virtio:d00000008v*", "vmbus:d96*"},
		"sd_mod":      {"scsi:t-0x00*"},
		"virtio_scsi": {"virtio:d00000008v*"},
		// A bus driver loads for its own device and for its drivers' devices.
		"hv_vmbus":   {"acpi*:VMBUS:*", "vmbus:d96*"},
		"hv_storvsc": {"vmbus:d96*"},
		"lonely":     {},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Triggers = %v\nwant %v", got, want)
	}
	if _, err := k.Triggers(mods, []string{"missing"}); err == nil {
		t.Error("Triggers with an unknown always-loaded module succeeded")
	}
}

// TestTriggersDebianAMD64 checks the rule on Debian's cloud kernel: the
// drivers of other clouds are loaded for their devices only, and the
// virtio drivers QEMU needs are loaded on every boot.
func TestTriggersDebianAMD64(t *testing.T) {
	p := vmtest.Kernel(t, "amd64")
	want := append(kernel.DefaultVMModules(), kernel.CloudVMModules("amd64")...)
	k, err := kernel.LoadDeb(context.Background(), p, kernel.WithModules(want...))
	if err != nil {
		t.Fatal(err)
	}
	mods, err := k.Closure(want...)
	if err != nil {
		t.Fatal(err)
	}
	trig, err := k.Triggers(mods, kernel.DefaultVMModules())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"virtio_blk", "virtio_pci", "squashfs", "vmw_vsock_virtio_transport"} {
		if _, ok := trig[name]; ok {
			t.Errorf("%s is loaded on demand; want it loaded on every boot", name)
		}
	}
	for name, alias := range map[string]string{
		"hv_vmbus":     "acpi*:VMBUS:*",
		"hv_storvsc":   "vmbus:d96",
		"xen_blkfront": "xen:vbd",
		"vmw_pvscsi":   "pci:v000015ADd000007C0",
		"virtio_scsi":  "virtio:d00000008v",
		"sd_mod":       "scsi:t-0x00",
	} {
		found := false
		for _, a := range trig[name] {
			if len(a) >= len(alias) && a[:len(alias)] == alias {
				found = true
			}
		}
		if !found {
			t.Errorf("%s triggers %q, want one starting %q", name, trig[name], alias)
		}
	}
	t.Logf("%d of %d modules on demand", len(trig), len(mods))
}
