package fat

import (
	"bufio"
	"crypto/md5"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ingotdev/ingot/internal/vmtest"
	format "github.com/ingotdev/ingot/packer/format/fat"
)

// vmModules are what the test guest loads besides their dependencies:
// virtio-blk for the disk, vfat with the code pages it loads at mount time.
var vmModules = []string{"virtio_pci", "virtio_blk", "vfat", "nls_cp437", "nls_ascii"}

// TestVMLinuxVFAT lets Linux's vfat driver read a volume this package wrote
// and rewrote (the guest runs vmtest's testinit with testinit=vfat: it
// lists every file with its MD5, then writes through the driver), and
// checks that the reader understands what Linux wrote.
func TestVMLinuxVFAT(t *testing.T) {
	guest := vmtest.NewGuest(t, "amd64", vmtest.WithModules(vmModules...))

	files := testFiles()
	img := writeImage(t, testVolumeBytes, files, format.WithVolumeLabel("ingot"))
	rw, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	newSlot := []byte(`{"active":"b","trial":"b","tries_left":2}`)
	if err := format.Rewrite(rw, testVolumeBytes, "slot.json", newSlot); err != nil {
		t.Fatalf("Rewrite: %v", err)
	}
	want := wantTree(files)
	want["slot.json"] = newSlot

	m := guest.Machine("quiet", "testinit=vfat")
	m.MemoryMiB, m.Disk = 256, img
	vm := vmtest.Boot(t, m)
	if err := vm.Wait(t, 5*time.Minute); err != nil {
		t.Fatalf("qemu: %v", err)
	}
	console := strings.ReplaceAll(vm.Console.String(), "\r\n", "\n")
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
	fsys, err := format.Open(rw, testVolumeBytes)
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
