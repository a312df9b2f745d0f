package assemble

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/internal/vmtest"
	"github.com/ingotdev/ingot/packer/format/image"
)

// raspi3bSDBytes is the SD card QEMU's raspi3b gets: its SD model wants a
// power of two, and the hello image is smaller.
const raspi3bSDBytes = 1 << 30

// TestVMRaspi3b boots the hello appliance's Raspberry Pi image on QEMU's
// raspi3b machine (TCG): the kernel and device tree the firmware would
// load, from the image's boot partition, and the image as the SD card.
// The kernel mounts slot a's squashfs root by PARTUUID, as on a Pi, and
// ingot-init runs as stage1: it mounts perm, starts the service and the
// agent's TLS listener. QEMU emulates no Pi firmware (the test gives it
// the kernel, as config.txt would) and its watchdog resets the machine the
// moment the driver arms it, so the test keeps that one driver out with
// initcall_blacklist. The console is the mini UART (ttyS0), QEMU's second
// serial port. The image has network.wifi: stage1 loads the brcmfmac
// modules, and since QEMU has no Wi-Fi chip the Wi-Fi client must log that
// there is no Wi-Fi device.
func TestVMRaspi3b(t *testing.T) {
	cfg, err := config.Load("../../examples/hello/ingot.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	withWiFi(t, cfg, dir)
	img := filepath.Join(dir, "sd.img")
	if _, err := Image(t.Context(), cfg, config.TargetRPi, img, WithCacheDir(filepath.Join(dir, "cache"))); err != nil {
		t.Fatal(err)
	}
	kernel, dtb, cmdline := raspiBootFiles(t, img, dir)
	if err := os.Truncate(img, raspi3bSDBytes); err != nil {
		t.Fatal(err)
	}

	v := vmtest.Boot(t, &qemu.Machine{Arch: "arm64", Board: qemu.BoardRaspi3b, Kernel: kernel, DTB: dtb,
		Cmdline: strings.TrimSpace(cmdline) + " initcall_blacklist=bcm2835_wdt_driver_init",
		Disk:    img, ResetOnReboot: true})
	v.WaitFor(t, 4*time.Minute,
		"init: ingot-init stage1 (linux/arm64)",
		"init: perm: /dev/mmcblk0p4 mounted on /perm",
		"hello: started pid",
		"agent listening on tcp",
		"serving on :8080",
		// QEMU's raspi3b has no Wi-Fi chip: the driver loads, and the
		// client says that there is no Wi-Fi device instead of failing
		// silently.
		"init: modules: loaded brcmfmac.ko",
		"init: modules: loaded brcmfmac-cyw.ko",
		"wifi: no Wi-Fi device: there is no wlan0 (interfaces: ",
		"none is wireless); waiting for one",
		"dhcp-wlan0: started pid",
	)
	for _, l := range strings.Split(v.Console.String(), "\n") {
		if strings.Contains(l, "wifi") || strings.Contains(l, "wlan0") || strings.Contains(l, "modules:") || strings.Contains(l, "brcmfmac") {
			t.Logf("console: %s", l)
		}
	}
	if strings.Count(v.Console.String(), "Booting Linux") > 1 {
		t.Errorf("the machine rebooted during the test")
	}
}

// raspiBootFiles extracts what the Pi firmware would load from the image's
// boot partition, following config.txt as the firmware does: os_prefix,
// then kernel= and cmdline= and the Pi 3 device tree under that prefix.
func raspiBootFiles(t *testing.T, img, dir string) (kernel, dtb, cmdline string) {
	t.Helper()
	im, err := image.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	bootFS, err := im.Boot()
	if err != nil {
		t.Fatal(err)
	}
	read := func(name string) []byte {
		b, err := fs.ReadFile(bootFS, name)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	settings := map[string]string{}
	for _, line := range strings.Split(string(read("config.txt")), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			settings[k] = v
		}
	}
	prefix := settings["os_prefix"]
	if prefix == "" || settings["kernel"] == "" || settings["cmdline"] == "" {
		t.Fatalf("config.txt lacks os_prefix=, kernel= or cmdline=: %q", settings)
	}
	kernel, dtb = filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "bcm2710-rpi-3-b.dtb")
	if err := os.WriteFile(kernel, read(prefix+settings["kernel"]), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dtb, read(prefix+"bcm2710-rpi-3-b.dtb"), 0o644); err != nil {
		t.Fatal(err)
	}
	return kernel, dtb, string(read(prefix + settings["cmdline"]))
}
