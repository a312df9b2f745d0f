package fat

import (
	"bufio"
	"context"
	"crypto/md5"
	"encoding/hex"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// vmModules are loaded in this order by the test guest: virtio-blk for the
// disk, vfat with the code pages it loads at mount time.
var vmModules = []string{
	"virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci", "virtio_blk",
	"fat", "vfat", "nls_cp437", "nls_ascii",
}

// vmInit runs in the guest: mount the volume with Linux's vfat driver, list
// every file with its MD5, then write through the driver so the host can
// check that the reader understands what Linux writes.
const vmInit = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /mnt
mount -t proc proc /proc
mount -t devtmpfs dev /dev
for m in ` + "MODULES" + `; do insmod /modules/$m.ko || echo "insmod $m failed"; done
for i in $(seq 100); do [ -b /dev/vda ] && break; sleep 0.1; done
if mount -t vfat -o utf8,shortname=mixed /dev/vda /mnt; then
  echo INGOT-VFAT-BEGIN
  cd /mnt
  find . -type d | sort | while read -r d; do echo "D $d"; done
  find . -type f | sort | while read -r f; do echo "F $(md5sum < "$f" | cut -d' ' -f1) $f"; done
  echo INGOT-VFAT-END
  cd /
  echo "written by linux" > "/mnt/Written By Linux.txt"
  mkdir -p /mnt/linuxdir/sub
  cp /mnt/cmdline.txt "/mnt/linuxdir/sub/a rather long copied name.TXT"
  rm /mnt/initrd.img
  umount /mnt && echo INGOT-VFAT-UNMOUNTED
fi
sync
poweroff -f
`

func TestVMLinuxVFAT(t *testing.T) {
	deb := os.Getenv("INGOT_KERNEL_DEB")
	if deb == "" {
		t.Fatal("INGOT_KERNEL_DEB is not set: it must name a Debian linux-image .deb (make test sets it; scripts/fetch-kernel.sh amd64 downloads one)")
	}
	kernel, initrd := vmBootFiles(t, deb)

	files := testFiles()
	img := writeImage(t, testVolumeBytes, files, WithVolumeLabel("ingot"))
	rw, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	newSlot := []byte(`{"active":"b","trial":"b","tries_left":2}`)
	if err := Rewrite(rw, testVolumeBytes, "slot.json", newSlot); err != nil {
		t.Fatalf("Rewrite: %v", err)
	}
	want := wantTree(files)
	want["slot.json"] = newSlot

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64",
		"-M", "q35", "-accel", "tcg", "-m", "256", "-nographic", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 quiet",
		"-drive", "file="+img+",format=raw,if=virtio")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("qemu: %v\n%s", err, out)
	}
	console := strings.ReplaceAll(string(out), "\r\n", "\n")
	begin, end := strings.Index(console, "INGOT-VFAT-BEGIN\n"), strings.Index(console, "INGOT-VFAT-END")
	if begin < 0 || end < begin || !strings.Contains(console, "INGOT-VFAT-UNMOUNTED") {
		t.Fatalf("guest did not mount, list and unmount the volume; console:\n%s", console)
	}
	got := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(console[begin+len("INGOT-VFAT-BEGIN\n") : end]))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "D ./"):
			got[line[len("D ./"):]] = "dir"
		case strings.HasPrefix(line, "F ") && len(line) > 2+32+3:
			got[line[2+32+3:]] = line[2 : 2+32]
		}
	}
	wantSums := map[string]string{}
	for p, b := range want {
		if b == nil {
			wantSums[p] = "dir"
			continue
		}
		sum := md5.Sum(b)
		wantSums[p] = hex.EncodeToString(sum[:])
	}
	for p, w := range wantSums {
		if got[p] != w {
			t.Errorf("Linux vfat: %q = %q, want %q", p, got[p], w)
		}
	}
	for p := range got {
		if _, ok := wantSums[p]; !ok {
			t.Errorf("Linux vfat shows unexpected %q", p)
		}
	}

	// What Linux wrote must be clean for fsck and readable by the reader.
	fsck(t, img)
	fsys, err := Open(rw, testVolumeBytes)
	if err != nil {
		t.Fatalf("Open after Linux wrote: %v", err)
	}
	after := map[string][]byte{}
	if err := walkAll(fsys, after); err != nil {
		t.Fatalf("reading what Linux wrote: %v", err)
	}
	want["Written By Linux.txt"] = []byte("written by linux\n")
	want["linuxdir"] = nil
	want["linuxdir/sub"] = nil
	want["linuxdir/sub/a rather long copied name.TXT"] = want["cmdline.txt"]
	delete(want, "initrd.img")
	diffTrees(t, "reader after Linux wrote", after, want)
}

// vmBootFiles unpacks the kernel package and builds a busybox initramfs
// holding vmInit and the modules it loads.
func vmBootFiles(t *testing.T, deb string) (kernel, initrd string) {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "deb")
	if out, err := exec.Command("dpkg-deb", "-x", deb, root).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x %s: %v\n%s", deb, err, out)
	}
	kernels, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(kernels) != 1 {
		t.Fatalf("%s: want one boot/vmlinuz-*, found %v", deb, kernels)
	}
	ramfs := filepath.Join(dir, "initramfs")
	for _, d := range []string{"bin", "modules"} {
		if err := os.MkdirAll(filepath.Join(ramfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("busybox (static) not found: %v", err)
	}
	copyFile(t, busybox, filepath.Join(ramfs, "bin", "busybox"), 0o755)
	found := map[string]string{}
	filepath.WalkDir(filepath.Join(root, "lib", "modules"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".ko") {
			found[strings.TrimSuffix(d.Name(), ".ko")] = p
		}
		return err
	})
	for _, m := range vmModules {
		if found[m] == "" {
			t.Fatalf("%s: module %s.ko not found", deb, m)
		}
		copyFile(t, found[m], filepath.Join(ramfs, "modules", m+".ko"), 0o644)
	}
	if err := os.WriteFile(filepath.Join(ramfs, "init"), []byte(strings.Replace(vmInit, "MODULES", strings.Join(vmModules, " "), 1)), 0o755); err != nil {
		t.Fatal(err)
	}
	initrd = filepath.Join(dir, "initrd.cpio")
	cpio := exec.Command("sh", "-c", "find . | cpio -o -H newc --quiet > "+initrd)
	cpio.Dir = ramfs
	if out, err := cpio.CombinedOutput(); err != nil {
		t.Fatalf("cpio: %v\n%s", err, out)
	}
	return kernels[0], initrd
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}
