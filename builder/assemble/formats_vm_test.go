package assemble

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ingotdev/ingot/internal/vmtest"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/hypervisor/bootloader"
	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/vdisk"
)

// TestVMFormatsBoot boots hello from its qcow2, VHD and VMDK copies, as a
// hypervisor that imported them would: through OVMF and the image's own
// systemd-boot, QEMU reading the disk through its qcow2, vpc and vmdk
// drivers (each under a qcow2 overlay, since QEMU cannot write a
// stream-optimized VMDK in place and the copies should stay as built).
// The appliance must find its root and perm by PARTUUID on the converted
// disk and answer over HTTP. The raw image's direct kernel boot, as ingot
// run does it, is checked on the qcow2 copy too.
func TestVMFormatsBoot(t *testing.T) {
	cfg := helloConfig(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "hello-vm-amd64.img")
	formats := []vdisk.Format{vdisk.QCOW2, vdisk.VHD, vdisk.VMDK}
	rep, err := Image(t.Context(), cfg, config.TargetVMAmd64, img, WithCacheDir(filepath.Join(dir, "cache")), WithFormats(formats...))
	if err != nil {
		t.Fatal(err)
	}
	qemuName := map[vdisk.Format]string{vdisk.QCOW2: "qcow2", vdisk.VHD: "vpc", vdisk.VMDK: "vmdk"}
	for i, f := range formats {
		t.Run(string(f), func(t *testing.T) {
			disk := rep.Disks[i]
			overlay := filepath.Join(dir, string(f)+"-overlay.qcow2")
			if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", disk, "-F", qemuName[f], overlay).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img create overlay: %v\n%s", err, out)
			}
			runDir, err := os.MkdirTemp("", "fmt")
			must(t, err)
			t.Cleanup(func() { os.RemoveAll(runDir) })
			m := &qemu.Machine{
				Arch: "amd64", MemoryMiB: 512, Disk: overlay, DiskFormat: "qcow2", RunDir: runDir,
				Forwards: []qemu.Forward{{Proto: "tcp", HostPort: vmtest.FreePort(t), GuestPort: 8080}},
			}
			if f == vdisk.QCOW2 {
				// ingot run's direct kernel boot: the loader writes
				// slot.json's decision into the image it reads, so it
				// reads a copy of the raw image.
				raw := filepath.Join(dir, string(f)+"-loader.img")
				copyFile(t, img, raw)
				b, err := bootloader.Prepare(raw, runDir, layout.ParamIP+"="+qemu.GuestNetwork)
				if err != nil {
					t.Fatal(err)
				}
				m.Kernel, m.Initrd, m.Cmdline = b.Kernel, b.Initrd, b.Cmdline
			} else if m.Firmware, err = qemu.UEFI("amd64", runDir); err != nil {
				t.Fatal(err)
			}
			v := vmtest.Boot(t, m)
			v.WaitFor(t, 5*time.Minute, "init: perm: /dev/vda4 mounted on /perm")
			body := getUntil(t, v, fmt.Sprintf("http://127.0.0.1:%d/", m.Forwards[0].HostPort), 2*time.Minute)
			if !strings.Contains(body, "hello from ingot") || !strings.Contains(body, rep.BuildID) {
				t.Fatalf("hello from the %s disk answered %q, want the greeting and build %s", f, body, rep.BuildID)
			}
			if c := v.Console.String(); strings.Contains(c, "I/O error") || strings.Contains(c, "warning: perm") {
				t.Errorf("the guest on the %s disk reported errors:\n%s", f, v.Console.Tail(4000))
			}
		})
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "--sparse=always", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp %s %s: %v\n%s", src, dst, err, out)
	}
}
