package sysmount

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRestrictMakesImageNodesInert performs the attack on a root that
// lacks nodev: a world-writable node of a real device (1:3, null, so the
// test harms nothing) is opened through the mount, then the mount is
// restricted and the same open must fail.
func TestRestrictMakesImageNodesInert(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatalf("mount tmpfs (the test needs root): %v", err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	node := filepath.Join(dir, "disk")
	if err := unix.Mknod(node, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	// Read-only like the root, so Restrict must keep it so.
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(node, os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("before Restrict: open %s = %v, want the device (the attack's premise)", node, err)
	}
	f.Close()

	if changed, err := Restrict(dir); err != nil || !changed {
		t.Fatalf("Restrict(%s) = %v, %v, want true, nil", dir, changed, err)
	}
	if _, err := os.OpenFile(node, os.O_WRONLY, 0); !errors.Is(err, unix.EACCES) {
		t.Errorf("after Restrict: open %s = %v, want EACCES (nodev)", node, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	const want = unix.ST_RDONLY | unix.ST_NOSUID | unix.ST_NODEV
	if st.Flags&want != want {
		t.Errorf("after Restrict: statfs flags %#x, want ro,nosuid,nodev (%#x) set", st.Flags, want)
	}
	if changed, err := Restrict(dir); err != nil || changed {
		t.Errorf("Restrict(%s) again = %v, %v, want false, nil", dir, changed, err)
	}
}
