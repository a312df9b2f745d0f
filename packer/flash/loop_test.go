//go:build linux

package flash

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The tests in this file use loop devices as stand-in cards: they need
// root (CI runs as root) and losetup, mount and mke2fs.

// attachLoop attaches file to a free loop device, with partition scanning
// when partscan is set, and detaches it when the test ends.
func attachLoop(t *testing.T, file string, partscan bool) string {
	t.Helper()
	args := []string{"-f", "--show"}
	if partscan {
		args = append(args, "-P")
	}
	out, err := exec.Command("losetup", append(args, file)...).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup %s: %v: %s", strings.Join(args, " "), err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// partitionNodes makes the partition device nodes of dev from the table
// partx reads (BLKPG), like the kernel's own scan after BLKRRPART does;
// kernels built without partition parsers (CONFIG_EFI_PARTITION unset,
// as in some CI VMs) scan nothing themselves.
func partitionNodes(t *testing.T, dev string) {
	t.Helper()
	if out, err := exec.Command("partx", "-u", dev).CombinedOutput(); err != nil {
		t.Fatalf("partx -u %s: %v: %s", dev, err, out)
	}
}

// mountDev mounts dev on a temporary directory until the test ends.
func mountDev(t *testing.T, dev string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", dev, dir).CombinedOutput(); err != nil {
		t.Fatalf("mount %s: %v: %s", dev, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// TestFlashLoopDevice flashes a loop device with partition scanning, as a
// card reader would be: the kernel sees the grown table afterwards and
// perm's device node holds a clean ext4 filesystem.
func TestFlashLoopDevice(t *testing.T) {
	img, imageBytes := testImage(t)
	dev := attachLoop(t, emptyFile(t, testTargetBytes), true)
	var asked Target
	rep, err := Flash(t.Context(), img, dev, WithConfirm(func(tg Target, n int64) (bool, error) {
		asked = tg
		return Ask(strings.NewReader("y\n"), io.Discard)(tg, n)
	}))
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Base(dev)
	if !asked.Block || asked.Name != name || asked.SizeBytes != testTargetBytes || !strings.HasPrefix(asked.Model, "loop device backed by ") {
		t.Errorf("confirmation got %+v, want block device %s of %d bytes, a loop device", asked, name, testTargetBytes)
	}
	checkFlashed(t, img, imageBytes, dev, testTargetBytes, rep)

	// The grown table as a kernel reads it.
	partitionNodes(t, dev)
	sectors := readTrim("/sys/block/" + name + "/" + name + "p4/size")
	if want := strconv.FormatInt(rep.Perm.SizeBytes/512, 10); sectors != want {
		t.Errorf("/sys/block/%s/%sp4/size = %q, want %s sectors", name, name, sectors, want)
	}
	runTool(t, "e2fsck", "-fn", dev+"p4")
}

func TestFlashRefusesBlockDevices(t *testing.T) {
	img, imageBytes := testImage(t)

	// A loop device with a filesystem mounted on the whole device.
	fsFile := emptyFile(t, testTargetBytes)
	runTool(t, "mke2fs", "-q", "-t", "ext4", fsFile)
	mountedDev := attachLoop(t, fsFile, false)
	mnt := mountDev(t, mountedDev)

	// A loop device holding a flashed image with perm (partition 4)
	// mounted.
	cardFile := emptyFile(t, testTargetBytes)
	if _, err := Flash(t.Context(), img, cardFile); err != nil {
		t.Fatal(err)
	}
	cardDev := attachLoop(t, cardFile, true)
	partitionNodes(t, cardDev)
	permMnt := mountDev(t, cardDev+"p4")

	smallDev := attachLoop(t, emptyFile(t, imageBytes-1<<20), false)
	freeFile := emptyFile(t, testTargetBytes)
	freeDev := attachLoop(t, freeFile, false)

	tests := []struct {
		name, target string
		opts         []Option
		wantRefused  string // "" for ErrDeclined
	}{
		{"mounted", mountedDev, nil, "is mounted on " + mnt},
		{"partition mounted", cardDev, nil, filepath.Base(cardDev) + "p4 is mounted on " + permMnt},
		{"system disk", mountedDev, []Option{WithSystemPaths(mnt)}, "it holds the running system (" + mnt + " is on it)"},
		{"system disk through a partition", cardDev, []Option{WithSystemPaths("/", permMnt)}, "it holds the running system"},
		{"a partition", cardDev + "p1", nil, "it is the partition " + filepath.Base(cardDev) + "p1 of " + cardDev},
		{"too small", smallDev, nil, "smaller than the"},
		{"answered n", freeDev, []Option{WithConfirm(Ask(strings.NewReader("n\n"), io.Discard))}, ""},
		{"backing file of a loop device", freeFile, nil, "it is the backing file of " + freeDev},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Flash(t.Context(), img, tc.target, tc.opts...)
			checkRefused(t, err, tc.wantRefused)
		})
	}

	t.Run("busy", func(t *testing.T) {
		// Another program holding the device exclusively: the kernel
		// refuses the exclusive open even though nothing is mounted.
		fd, err := unix.Open(freeDev, unix.O_RDONLY|unix.O_EXCL, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		_, err = Flash(t.Context(), img, freeDev)
		checkRefused(t, err, "busy")
	})

	// Nothing was written to the devices that were refused.
	for _, f := range []string{freeFile} {
		if got, want := sha256File(t, f, testTargetBytes), sha256File(t, emptyFile(t, testTargetBytes), testTargetBytes); got != want {
			t.Errorf("%s was written to", f)
		}
	}
	if _, err := os.Stat(filepath.Join(mnt, "lost+found")); err != nil {
		t.Errorf("the mounted filesystem was damaged: %v", err)
	}
}
