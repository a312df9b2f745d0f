package rootfs

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// capability is a valid security.capability value (revision 2,
// effective, CAP_NET_RAW permitted): the kernel checks what is set.
var capability = []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

// TestFromDir loads a directory holding every kind of entry (as root:
// devices and owners need it) and checks every entry.
func TestFromDir(t *testing.T) {
	dir := t.TempDir()
	at := func(p string) string { return filepath.Join(dir, p) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(at("a/b"), 0o755))
	must(os.WriteFile(at("a/file"), []byte("hello"), 0o644))
	must(os.Link(at("a/file"), at("a/b/second")))
	must(os.Link(at("a/file"), at("0-first")))
	must(os.Symlink("a/file", at("sym")))
	must(os.WriteFile(at("suid"), nil, 0o755))
	must(os.Mkdir(at("tmp"), 0o755))
	must(os.Chown(at("a/b"), 1000, 100))
	must(unix.Mknod(at("null"), unix.S_IFCHR, int(unix.Mkdev(1, 3))))
	must(unix.Mknod(at("disk"), unix.S_IFBLK, int(unix.Mkdev(259, 70000))))
	must(unix.Mknod(at("fifo"), unix.S_IFIFO, 0))
	must(unix.Lsetxattr(at("a/file"), "user.note", []byte("kept"), 0))
	// Setting a capability clears setuid bits, so modes come after; and
	// os.Chmod cannot set them from Unix mode bits.
	must(unix.Lsetxattr(at("suid"), "security.capability", capability, 0))
	for p, mode := range map[string]uint32{"suid": 0o6755, "tmp": 0o1777, "null": 0o666, "disk": 0o660, "fifo": 0o600, "": 0o750} {
		must(unix.Chmod(at(p), mode))
	}
	mtime := int64(1600000000)
	for _, p := range []string{"a/file", "a/b", "a", "sym", "suid", "tmp", "null", "disk", "fifo", ""} {
		must(unix.UtimesNanoAt(unix.AT_FDCWD, at(p), []unix.Timespec{{Sec: mtime}, {Sec: mtime}}, unix.AT_SYMLINK_NOFOLLOW))
	}

	tree, err := FromDir(dir)
	if err != nil {
		t.Fatalf("FromDir() = %v", err)
	}
	got := map[string]Entry{}
	err = tree.Walk(func(p string, e *Entry) error {
		c := *e
		if c.Kind == KindFile {
			host, ok := c.Content.(HostFile)
			if !ok || string(host) != at(strings.TrimPrefix(p, "/")) {
				t.Errorf("%s: content %#v, want HostFile of its path", p, c.Content)
			}
			c.Content = nil
		}
		got[p] = c
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Entry{
		"/":           {Kind: KindDir, Mode: 0o750, ModTime: mtime},
		"/0-first":    {Kind: KindFile, Mode: 0o644, ModTime: mtime, Size: 5, Xattrs: map[string][]byte{"user.note": []byte("kept")}},
		"/a":          {Kind: KindDir, Mode: 0o755, ModTime: mtime},
		"/a/b":        {Kind: KindDir, Mode: 0o755, UID: 1000, GID: 100, ModTime: mtime},
		"/a/b/second": {Kind: KindHardlink, Target: "/0-first"},
		"/a/file":     {Kind: KindHardlink, Target: "/0-first"},
		"/sym":        {Kind: KindSymlink, Mode: 0o777, ModTime: mtime, Target: "a/file"},
		"/suid":       {Kind: KindFile, Mode: 0o6755, ModTime: mtime, Xattrs: map[string][]byte{"security.capability": capability}},
		"/tmp":        {Kind: KindDir, Mode: 0o1777, ModTime: mtime},
		"/null":       {Kind: KindCharDevice, Mode: 0o666, ModTime: mtime, DevMajor: 1, DevMinor: 3},
		"/disk":       {Kind: KindBlockDevice, Mode: 0o660, ModTime: mtime, DevMajor: 259, DevMinor: 70000},
		"/fifo":       {Kind: KindFIFO, Mode: 0o600, ModTime: mtime},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("FromDir() entries (-want +got):\n%s", diff)
	}

	first, ok := tree.Get("/0-first")
	if !ok {
		t.Fatal("no /0-first")
	}
	rc, err := first.Content.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if b, _ := io.ReadAll(rc); string(b) != "hello" {
		t.Errorf("/0-first content = %q, want %q", b, "hello")
	}
}

func TestFromDirErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{file, filepath.Join(t.TempDir(), "missing")} {
		if _, err := FromDir(dir); err == nil || !strings.Contains(err.Error(), dir) {
			t.Errorf("FromDir(%q) = %v, want an error naming it", dir, err)
		}
	}
}
