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
