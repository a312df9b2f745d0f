package assemble

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/internal/vmtest"
	"github.com/ingotdev/ingot/packer/format/image"
	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/format/slot"
	"github.com/ingotdev/ingot/packer/vdisk"
)

// TestVMUEFIAmd64 builds examples/hello for vm-amd64 with -format qcow2
// and boots the qcow2 the way a hypervisor without ingot does: plain QEMU
// q35 with OVMF as pflash and the image as a virtio disk. OVMF starts systemd-boot from the
// removable-media path, systemd-boot the active slot's entry; the guest
// gets its address by DHCP and answers HTTP through a user-net forward.
// No ingot process runs on the host. It then makes slot.json unreadable
// and boots again (issue 12).
func TestVMUEFIAmd64(t *testing.T) { testUEFIHello(t, config.TargetVMAmd64) }

// TestVMUEFIArm64 does the same for vm-arm64 under qemu-system-aarch64
// -M virt with AAVMF; the console is the PL011.
func TestVMUEFIArm64(t *testing.T) {
	vmtest.Kernel(t, "arm64")
	testUEFIHello(t, config.TargetVMArm64)
}

func testUEFIHello(t *testing.T, target config.Target) {
	cfg := helloConfig(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "hello.img")
	rep, err := Image(t.Context(), cfg, target, img, WithCacheDir(filepath.Join(dir, "cache")), WithFormats(vdisk.QCOW2))
	if err != nil {
		t.Fatal(err)
	}
	v := bootUEFI(t, target.Arch(), rep.Disks[0], "qcow2", dir)
	body := getUntil(t, v, fmt.Sprintf("http://127.0.0.1:%d/", v.Machine.Forwards[0].HostPort), 10*time.Minute)
	if !strings.Contains(body, "hello from ingot") || !strings.Contains(body, rep.BuildID) {
		t.Fatalf("GET / = %q, want the greeting and build id %s", body, rep.BuildID)
	}
	console := v.Console.String()
	// systemd-boot hands the kernel its initrd as initrd=\PATH: proof that
	// the entry, not a direct kernel boot, started it.
	for _, want := range []string{`initrd=\initrd.img.a`, "ingot.slot=a", "hello: "} {
		if !strings.Contains(console, want) {
			t.Errorf("console has no %q", want)
		}
	}
	if strings.Contains(console, "ingot.ip=") {
		t.Errorf("the UEFI boot passed a static address; the guest must use DHCP")
	}

	// Issue 12: with slot.json unreadable the UEFI path still boots a
	// slot whose root is valid (the entries name only checked slots), and
	// that boot writes slot.json again, as slot.Recover does for the
	// host-side loader. (On the raw image, which the test can rewrite.)
	v.Kill()
	garbage := []byte(strings.Repeat("\xff", 512))
	im, err := image.OpenRW(img)
	if err != nil {
		t.Fatal(err)
	}
	err = im.RewriteBoot(layout.SlotFile, garbage)
	im.Close()
	if err != nil {
		t.Fatal(err)
	}
	v = bootUEFI(t, target.Arch(), img, "raw", dir)
	getUntil(t, v, fmt.Sprintf("http://127.0.0.1:%d/", v.Machine.Forwards[0].HostPort), 10*time.Minute)
	v.WaitFor(t, time.Minute, "was unreadable")
	v.Kill()
	im, err = image.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	fsys, err := im.Boot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := fsys.ReadFile(layout.SlotFile)
	if err != nil {
		t.Fatal(err)
	}
	st, err := slot.Parse(b)
	if err != nil || st.Active != slot.A || st.LastFailed == nil {
		t.Errorf("slot.json after the boot with an unreadable one: %+v, %v; want a active with the reason", st, err)
	}
}

// TestVMUEFIDiskBuses boots hello through OVMF from a virtio-scsi disk
// (Proxmox's default controller, GCE) and from an NVMe disk (AWS Nitro,
// GCE): systemd-boot is found by the firmware's drivers, stage0 loads the
// cloud drivers (kernel.CloudVMModules) that the devices call for and
// finds the root by PARTUUID on either.
func TestVMUEFIDiskBuses(t *testing.T) {
	cfg := helloConfig(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "hello.img")
	if _, err := Image(t.Context(), cfg, config.TargetVMAmd64, img, WithCacheDir(filepath.Join(dir, "cache"))); err != nil {
		t.Fatal(err)
	}
	for _, bus := range []string{"virtio-scsi", "nvme"} {
		t.Run(bus, func(t *testing.T) {
			fw, err := qemu.UEFI("amd64", t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			v := vmtest.Boot(t, &qemu.Machine{
				Arch: "amd64", MemoryMiB: 512, Disk: img, DiskBus: bus, Firmware: fw,
				Forwards: []qemu.Forward{{Proto: "tcp", HostPort: vmtest.FreePort(t), GuestPort: 8080}},
			})
			body := getUntil(t, v, fmt.Sprintf("http://127.0.0.1:%d/", v.Machine.Forwards[0].HostPort), 10*time.Minute)
			if !strings.Contains(body, "hello from ingot") {
				t.Fatalf("GET / = %q", body)
			}
			// The SCSI drivers are loaded on demand, for the controller
			// and its disk, not by the fallback for a missing root; then,
			// on a machine whose devices called for drivers, the others.
			// With NVMe (built in) no on-demand driver loads at all.
			con := v.Console.String()
			switch bus {
			case "virtio-scsi":
				if !strings.Contains(con, "virtio_scsi.ko: loaded for device virtio:d00000008") ||
					!strings.Contains(con, "sd_mod.ko: loaded for device scsi:t-0x00") || strings.Contains(con, "root not found after") ||
					!strings.Contains(con, "loaded the other") {
					t.Errorf("console does not show virtio_scsi and sd_mod loaded for their devices, then the rest:\n%s", con)
				}
			case "nvme":
				if strings.Contains(con, "loaded for device") || strings.Contains(con, "loaded the other") {
					t.Errorf("console shows on-demand drivers loaded for an NVMe disk:\n%s", con)
				}
			}
			v.Kill()
		})
	}
}

// bootUEFI starts QEMU with UEFI firmware (a private variable store in
// dir) and the disk img in QEMU's format (raw, qcow2, vpc, vmdk),
// forwarding a free host port to the guest's port 8080.
func bootUEFI(t *testing.T, arch, img, format, dir string) *vmtest.VM {
	t.Helper()
	fw, err := qemu.UEFI(arch, dir)
	if err != nil {
		t.Fatal(err)
	}
	return vmtest.Boot(t, &qemu.Machine{
		Arch: arch, MemoryMiB: 512, Disk: img, DiskFormat: format, Firmware: fw,
		Forwards: []qemu.Forward{{Proto: "tcp", HostPort: vmtest.FreePort(t), GuestPort: 8080}},
	})
}

// getUntil polls url until it answers 200 and returns the body; QEMU
// ending or the timeout fails the test.
func getUntil(t *testing.T, v *vmtest.VM, url string, timeout time.Duration) string {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		resp, err := client.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return string(b)
			}
		}
		select {
		case <-v.Exited():
			t.Fatalf("QEMU stopped before %s answered", url)
		case <-time.After(time.Second):
		}
	}
	t.Fatalf("%s did not answer within %v", url, timeout)
	return ""
}
