package assemble

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/builder/config"
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
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
	return string(out)
}
