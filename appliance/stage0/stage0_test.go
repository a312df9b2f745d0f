package stage0

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestRemoveContentsStaysOnDevice(t *testing.T) {
	root := t.TempDir()
	for _, p := range []string{"init", "etc/ingot/stage0.json", "lib/modules/6.1/kernel/a.ko", "newroot/keep"} {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/nowhere", filepath.Join(root, "etc/link")); err != nil {
		t.Fatal(err)
	}
	// A tmpfs on newroot stands for the mounted root slot: a different
	// device, which must be left alone.
	newroot := filepath.Join(root, "newroot")
	if err := unix.Mount("tmpfs", newroot, "tmpfs", 0, ""); err != nil {
		t.Fatalf("mount tmpfs (the test needs root): %v", err)
	}
	defer unix.Unmount(newroot, unix.MNT_DETACH)
	if err := os.WriteFile(filepath.Join(newroot, "init"), []byte("stage1"), 0o755); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(root, &st); err != nil {
		t.Fatal(err)
	}
	if err := removeContents(root, uint64(st.Dev)); err != nil {
		t.Fatalf("removeContents() = %v", err)
	}
	var left []string
	filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err == nil && p != root {
			rel, _ := filepath.Rel(root, p)
			left = append(left, rel)
		}
		return nil
	})
	sort.Strings(left)
	if want := []string{"newroot", "newroot/init"}; strings.Join(left, ",") != strings.Join(want, ",") {
		t.Errorf("left after removeContents: %q, want %q", left, want)
	}
}

func TestLogger(t *testing.T) {
	var b bytes.Buffer
	logger{w: &b}.Printf("root %s", "x")
	if got := b.String(); got != "ingot stage0: root x\n" {
		t.Errorf("Printf() wrote %q", got)
	}
}

// TestMountRootNosuidNodev checks the flags of the root slot's mount: the
// root carries every image service's files, and without nosuid and nodev a
// non-root service could open a 0666 device node or run a setuid-root
// program an image ships (issue 12, attack 5).
func TestMountRootNosuidNodev(t *testing.T) {
	var calls []string
	var gotFlags uintptr
	rec := func(source, target, fstype string, flags uintptr, data string) error {
		calls = append(calls, source+" "+target+" "+fstype)
		gotFlags = flags
		return nil
	}
	if err := mountRoot(rec, "/dev/vda2"); err != nil {
		t.Fatalf("mountRoot() = %v", err)
	}
	if want := "/dev/vda2 " + newRoot + " squashfs"; len(calls) != 1 || calls[0] != want {
		t.Fatalf("mountRoot() mounted %q, want [%q]", calls, want)
	}
	for _, f := range []struct {
		name string
		flag uintptr
	}{{"MS_RDONLY", unix.MS_RDONLY}, {"MS_NOSUID", unix.MS_NOSUID}, {"MS_NODEV", unix.MS_NODEV}} {
		if gotFlags&f.flag == 0 {
			t.Errorf("mountRoot() flags = %#x, lacks %s", gotFlags, f.name)
		}
	}
	fail := func(string, string, string, uintptr, string) error { return unix.EINVAL }
	if err := mountRoot(fail, "/dev/vda2"); err == nil || !strings.Contains(err.Error(), "/dev/vda2") {
		t.Errorf("mountRoot(failing) = %v, want an error naming the device", err)
	}
}
