package flash

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The tests in this file perform issue 12's attack 6: the path the user
// confirmed names another disk by the time Flash writes. Flash must write
// only the device or file it inspected and described, and refuse when the
// path no longer names it.

// markedFile returns a file of size bytes that starts with a recognisable
// pattern, so that any write to it shows.
func markedFile(t *testing.T, size int64) string {
	t.Helper()
	p := emptyFile(t, size)
	if err := os.WriteFile(p, bytes.Repeat([]byte("another card "), 1<<16), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

// identityOf is how a refusal names what path names: the device number of
// a block device, the inode and filesystem of a file.
func identityOf(t *testing.T, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		return "block device " + devNum(st.Rdev)
	}
	return fmt.Sprintf("inode %d on device %s", st.Ino, devNum(st.Dev))
}

// checkSwapRefused checks that Flash refused because path changed from
// what (the identity confirmed) to now.
func checkSwapRefused(t *testing.T, err error, path, was, now string) {
	t.Helper()
	var re *RefusedError
	if !errors.As(err, &re) || re.Path != path || !strings.Contains(re.Reason, was) || !strings.Contains(re.Reason, now) {
		t.Errorf("Flash = %v, want a refusal of %s naming what it confirmed (%s) and what it names now (%s)", err, path, was, now)
	}
}

// TestFlashRefusesSwappedFile renames another file over the target while
// the question is asked. The swapped-in file, which nobody confirmed, must
// stay as it was, and so must the confirmed one, whose path no longer
// names it.
func TestFlashRefusesSwappedFile(t *testing.T) {
	img, _ := testImage(t)
	target := emptyFile(t, testTargetBytes)
	// A second name keeps the confirmed file reachable after the rename.
	confirmed := target + ".confirmed"
	if err := os.Link(target, confirmed); err != nil {
		t.Fatal(err)
	}
	other := markedFile(t, testTargetBytes)
	emptySum, otherSum := sha256File(t, target, testTargetBytes), sha256File(t, other, testTargetBytes)
	was, now := identityOf(t, target), identityOf(t, other)

	_, err := Flash(t.Context(), img, target, WithConfirm(func(Target, int64) (bool, error) {
		return true, os.Rename(other, target)
	}))
	checkSwapRefused(t, err, target, was, now)
	if got := sha256File(t, target, testTargetBytes); got != otherSum {
		t.Errorf("the file swapped in at %s was written to: SHA-256 %s, was %s", target, got, otherSum)
	}
	if got := sha256File(t, confirmed, testTargetBytes); got != emptySum {
		t.Errorf("the confirmed file was written to after its path changed: SHA-256 %s, was %s", got, emptySum)
	}
}

// TestFlashRefusesSwappedLink points the confirmed path, a symlink as
// under /dev/disk/by-id, at another card while the question is asked.
func TestFlashRefusesSwappedLink(t *testing.T) {
	img, _ := testImage(t)
	fileA, fileB := emptyFile(t, testTargetBytes), markedFile(t, testTargetBytes)
	devA, devB := attachLoop(t, fileA, false), attachLoop(t, fileB, false)
	sumA, sumB := sha256File(t, fileA, testTargetBytes), sha256File(t, fileB, testTargetBytes)
	dir := t.TempDir()
	link := filepath.Join(dir, "card")
	if err := os.Symlink(devA, link); err != nil {
		t.Fatal(err)
	}

	_, err := Flash(t.Context(), img, link, WithConfirm(func(Target, int64) (bool, error) {
		tmp := filepath.Join(dir, "card.new")
		if err := os.Symlink(devB, tmp); err != nil {
			return false, err
		}
		return true, os.Rename(tmp, link)
	}))
	checkSwapRefused(t, err, link, identityOf(t, devA), identityOf(t, devB))
	if got := sha256File(t, fileB, testTargetBytes); got != sumB {
		t.Errorf("%s, which the link named after the question, was written to", devB)
	}
	if got := sha256File(t, fileA, testTargetBytes); got != sumA {
		t.Errorf("%s was written to after the link stopped naming it", devA)
	}
}

// TestFlashKeepsConfirmedDevice gives the confirmed device's number to
// another disk while the question is asked, as the kernel gives a removed
// card's /dev/sdX to the next card inserted: the loop device is detached
// and attached to another file. The path and the device number stay the
// same, so only the descriptor opened before the question can tell them
// apart; it keeps the confirmed disk from being released, and the other
// disk must stay as it was.
func TestFlashKeepsConfirmedDevice(t *testing.T) {
	img, imageBytes := testImage(t)
	fileA, fileB := emptyFile(t, testTargetBytes), markedFile(t, testTargetBytes)
	out, err := exec.Command("losetup", "-f", "--show", fileA).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup -f --show %s: %v: %s", fileA, err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		// Detach dev only while it still holds one of this test's files:
		// the kernel may have detached it and given it to someone else.
		backing := readTrim(filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file"))
		if backing == fileA || backing == fileB {
			if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
				t.Errorf("losetup -d %s: %v: %s", dev, err, out)
			}
		}
	})
	sumB := sha256File(t, fileB, testTargetBytes)

	var reattach []byte
	rep, err := Flash(t.Context(), img, dev, WithConfirm(func(Target, int64) (bool, error) {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			return false, fmt.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
		// Refused while Flash holds the device open: that is the point.
		reattach, _ = exec.Command("losetup", dev, fileB).CombinedOutput()
		return true, nil
	}))
	if got := sha256File(t, fileB, testTargetBytes); got != sumB {
		t.Errorf("%s was written to: it took %s's number after the question (losetup said %q)", fileB, dev, reattach)
	}
	if err != nil {
		t.Fatalf("Flash = %v, want the confirmed device written", err)
	}
	checkFlashed(t, img, imageBytes, fileA, testTargetBytes, rep)
}
