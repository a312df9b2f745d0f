package assemble

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/internal/vmtest"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// TestRPiImage builds the hello example for the Raspberry Pi and checks it
// with independent tools: the hybrid MBR that the Pi boot ROM reads
// (sfdisk), the boot partition's shared firmware and config.txt and each
// slot's kernel, cmdline.txt, device trees and overlays (mtools,
// fsck.vfat), and that the root is an arm64 squashfs (unsquashfs,
// debug/elf).
func TestRPiImage(t *testing.T) {
	cfg, err := config.Load("../../examples/hello/ingot.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.HasTarget(config.TargetRPi) {
		t.Fatalf("examples/hello does not list target rpi")
	}
	dir := t.TempDir()
	psk := withWiFi(t, cfg, dir)
	img := filepath.Join(dir, "hello-rpi.img")
	rep, err := Image(t.Context(), cfg, config.TargetRPi, img, WithCacheDir(filepath.Join(dir, "cache")))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel %s, firmware %s, build %s", rep.Kernel, rep.Firmware, rep.BuildID)

	mbr := run(t, "sfdisk", "--label-nested", "dos", "-d", img)
	if !regexp.MustCompile(`(?m)^\S+1 : start=\s*2048, size=\s*\d+, type=c, bootable$`).MatchString(mbr) ||
		!regexp.MustCompile(`(?m)^\S+2 : start=\s*1, size=\s*2047, type=ee$`).MatchString(mbr) {
		t.Errorf("sfdisk --label-nested dos -d: want the FAT32 boot partition first (type c, bootable) and the GPT protective entry after it:\n%s", mbr)
	}
	gptDump := run(t, "sfdisk", "-d", img)
	uuids := map[string]string{}
	var bootStart int64
	for _, m := range regexp.MustCompile(`(?m)^\S+ : start=\s*(\d+), size=\s*(\d+), type=\S+, uuid=(\S+), name="(\S+)"$`).FindAllStringSubmatch(gptDump, -1) {
		uuids[m[4]] = strings.ToLower(m[3])
		if m[4] == "boot" {
			bootStart, _ = strconv.ParseInt(m[1], 10, 64)
		}
	}
	if len(uuids) != 4 || bootStart == 0 {
		t.Fatalf("sfdisk -d: want boot, root-a, root-b and perm in the GPT:\n%s", gptDump)
	}

	at := img + "@@" + strconv.FormatInt(bootStart*512, 10)
	listing := run(t, "mdir", "-i", at, "-b", "::")
	for _, f := range []string{"bootcode.bin", "start.elf", "fixup.dat", "start4.elf", "fixup4.dat",
		"config.txt", "slot-a/", "slot-b/", "slot.json", "ingot.json"} {
		if !strings.Contains(listing, "::/"+f+"\n") {
			t.Errorf("boot partition lacks %s; mdir -b:\n%s", f, listing)
		}
	}
	// Device trees belong to a slot's kernel; none is shared.
	if strings.Contains(listing, ".dtb\n") || strings.Contains(listing, "::/overlays/") {
		t.Errorf("boot partition has shared device trees or overlays; mdir -b:\n%s", listing)
	}
	configTxt := run(t, "mtype", "-i", at, "::config.txt")
	for _, want := range []string{"arm_64bit=1\n", "enable_uart=1\n", "os_prefix=slot-a/\n", "kernel=vmlinuz\n", "cmdline=cmdline.txt\n"} {
		if !strings.Contains(configTxt, want) {
			t.Errorf("config.txt lacks %q:\n%s", want, configTxt)
		}
	}
	for sl, root := range map[string]string{"a": "root-a", "b": "root-b"} {
		cmdline := run(t, "mtype", "-i", at, "::slot-"+sl+"/cmdline.txt")
		for _, want := range []string{"root=PARTUUID=" + uuids[root], "rootfstype=squashfs", "init=/init",
			"ingot.slot=" + sl, "ingot.boot=PARTUUID=" + uuids["boot"], "ingot.perm=PARTUUID=" + uuids["perm"]} {
			if !strings.Contains(cmdline, want) {
				t.Errorf("slot-%s/cmdline.txt lacks %q:\n%s", sl, want, cmdline)
			}
		}
		slotListing := run(t, "mdir", "-i", at, "-b", "-/", "::slot-"+sl)
		for _, f := range []string{"vmlinuz", "cmdline.txt", "bcm2710-rpi-3-b.dtb", "bcm2710-rpi-zero-2-w.dtb",
			"bcm2711-rpi-4-b.dtb", "bcm2712-rpi-5-b.dtb", "overlays/README", "overlays/overlay_map.dtb", "overlays/vc4-kms-v3d.dtbo"} {
			if !strings.Contains(slotListing, "::/slot-"+sl+"/"+f+"\n") {
				t.Errorf("slot-%s lacks %s; mdir -b -/:\n%s", sl, f, slotListing)
			}
		}
	}

	// The partitions, cut out, for the file system checkers.
	part := func(name string) string {
		re := regexp.MustCompile(`(?m)start=\s*(\d+), size=\s*(\d+), type=\S+, uuid=\S+, name="` + name + `"`)
		m := re.FindStringSubmatch(gptDump)
		out := filepath.Join(dir, name+".part")
		run(t, "dd", "if="+img, "of="+out, "bs=512", "skip="+m[1], "count="+m[2], "status=none")
		return out
	}
	run(t, "fsck.vfat", "-n", part("boot"))
	initBin := filepath.Join(dir, "init")
	rootPart := part("root-a")
	out, err := exec.Command("unsquashfs", "-cat", rootPart, "init").Output()
	if err != nil {
		t.Fatalf("unsquashfs -cat root-a init: %v", err)
	}
	if err := os.WriteFile(initBin, out, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(initBin)
	if err != nil {
		t.Fatalf("/init of root-a: %v", err)
	}
	defer f.Close()
	if f.Machine != elf.EM_AARCH64 {
		t.Errorf("/init of root-a is for %v, want EM_AARCH64", f.Machine)
	}
	checkWiFi(t, rootPart, dir, psk)
}

// testPSK is the Wi-Fi passphrase of the test images.
const testPSK = "correct horse battery staple"

// withWiFi adds network.wifi to cfg, as ingot.yaml's parser would (the
// parser's own tests cover its form): a test network, its passphrase in a
// file under dir, and the firmware package of the environment. It returns
// the passphrase.
func withWiFi(t *testing.T, cfg *config.Config, dir string) string {
	t.Helper()
	pskFile := filepath.Join(dir, "wifi-psk")
	if err := os.WriteFile(pskFile, []byte(testPSK+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Network.WiFi = &config.WiFi{SSID: "ingot test", PSKFile: pskFile, FirmwareDeb: vmtest.WiFiFirmware(t)}
	return testPSK
}

// checkWiFi checks the Wi-Fi of a Pi root (a squashfs file) with
// unsquashfs: the client and its services, the driver's modules and the
// boards' firmware, and a passphrase only root can read: a process of
// another user is refused it.
func checkWiFi(t *testing.T, rootPart, dir, psk string) {
	t.Helper()
	listing := run(t, "unsquashfs", "-lls", "-d", "", rootPart)
	for _, re := range []string{
		`(?m)^-rwxr-xr-x root/root .* /usr/lib/ingot/wifi$`,
		`(?m)^-rw------- root/root .* /etc/ingot/wifi-psk$`,
		`(?m)^-rw-r--r-- root/root .* /lib/modules/[^/]+-v8/kernel/drivers/net/wireless/broadcom/brcm80211/brcmfmac/brcmfmac\.ko$`,
		`(?m)^-rw-r--r-- root/root .* /lib/modules/[^/]+-v8/kernel/drivers/net/wireless/broadcom/brcm80211/brcmutil/brcmutil\.ko$`,
		`(?m)^-rw-r--r-- root/root .* /lib/modules/[^/]+-v8/kernel/drivers/net/wireless/broadcom/brcm80211/brcmfmac/cyw/brcmfmac-cyw\.ko$`,
		// Pi 3B and Zero 2 W (43430), Pi 3B+, 4 and 5 (43455): firmware,
		// CLM blob and the boards' NVRAM.
		`(?m)^lrwxrwxrwx root/root .* /lib/firmware/brcm/brcmfmac43430-sdio\.bin -> \.\./cypress/cyfmac43430-sdio\.bin$`,
		`(?m)^-rw-r--r-- root/root .* /lib/firmware/cypress/cyfmac43430-sdio\.bin$`,
		`(?m)^-rw-r--r-- root/root .* /lib/firmware/cypress/cyfmac43430-sdio\.clm_blob$`,
		`(?m)^-rw-r--r-- root/root .* /lib/firmware/brcm/brcmfmac43430-sdio\.raspberrypi,3-model-b\.txt$`,
		`(?m)^lrwxrwxrwx root/root .* /lib/firmware/brcm/brcmfmac43430-sdio\.raspberrypi,model-zero-2-w\.txt -> brcmfmac43430-sdio\.raspberrypi,3-model-b\.txt$`,
		`(?m)^lrwxrwxrwx root/root .* /lib/firmware/brcm/brcmfmac43455-sdio\.bin -> \.\./cypress/cyfmac43455-sdio\.bin$`,
		`(?m)^-rw-r--r-- root/root .* /lib/firmware/cypress/cyfmac43455-sdio\.bin$`,
		`(?m)^-rw-r--r-- root/root .* /lib/firmware/brcm/brcmfmac43455-sdio\.raspberrypi,4-model-b\.txt$`,
	} {
		if !regexp.MustCompile(re).MatchString(listing) {
			t.Errorf("the root lacks %s; unsquashfs -lls:\n%s", re, grepLines(listing, "wifi", "firmware", "brcm"))
		}
	}
	t.Logf("wifi in the root:\n%s", grepLines(listing, "/usr/lib/ingot/wifi", "wifi-psk", "brcmfmac.ko", "43430-sdio.bin"))
	if strings.Contains(listing, "/lib/firmware/brcm/brcmfmac4356") {
		t.Errorf("the root has firmware of chips no Pi has:\n%s", grepLines(listing, "firmware"))
	}
	app := run(t, "unsquashfs", "-cat", rootPart, "etc/ingot/appliance.json")
	for _, want := range []string{`"name": "wifi"`, `"/usr/lib/ingot/wifi"`, `"ingot test"`, `"/etc/ingot/wifi-psk"`,
		`"name": "dhcp-wlan0"`, `"modules": [`, `brcmfmac/brcmfmac.ko"`} {
		if !strings.Contains(app, want) {
			t.Errorf("appliance.json lacks %s:\n%s", want, app)
		}
	}
	if strings.Contains(app, psk) || strings.Contains(listing, psk) {
		t.Errorf("the passphrase is in appliance.json or a file name")
	}
	// The attack: a process that is not root reads the passphrase file as
	// the image holds it (unsquashfs keeps owner and mode).
	out := filepath.Join(dir, "root-files")
	run(t, "unsquashfs", "-d", out, rootPart, "etc/ingot/wifi-psk")
	pskPath := filepath.Join(out, "etc/ingot/wifi-psk")
	if b, err := os.ReadFile(pskPath); err != nil || string(b) != psk+"\n" {
		t.Errorf("%s holds %q (%v), want the passphrase and a newline", spec.WiFiPSKPath, b, err)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("the read as another user needs root to switch users; this test runs as uid %d", os.Geteuid())
	}
	// Let nobody reach the file through the directories.
	for _, d := range []string{dir, out, filepath.Join(out, "etc"), filepath.Join(out, "etc/ingot")} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cat := exec.Command("cat", pskPath)
	cat.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if b, err := cat.CombinedOutput(); err == nil || !strings.Contains(string(b), "Permission denied") {
		t.Errorf("nobody read %s: %v, %q; want permission denied", spec.WiFiPSKPath, err, b)
	}
}

// grepLines returns the lines of s that contain any of words.
func grepLines(s string, words ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
	return string(out)
}
