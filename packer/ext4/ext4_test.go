package ext4

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const testSizeBytes = 64 << 20

var (
	buildTime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	oldTime   = time.Date(2019, 1, 2, 3, 4, 5, 0, time.UTC) // before buildTime: kept
)

// makeSource creates the same tree each time it is called; only ctimes and
// atimes (set by the kernel) differ between calls.
func makeSource(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	write := func(p string, b []byte) {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	write("hello/greeting.txt", []byte("hello from perm\n"))
	write("hello/data/big.bin", bytes.Repeat([]byte("0123456789abcdef"), 1<<16))
	write("empty", nil)
	write(`we"ird name with spaces`, []byte("quoted\n"))
	write("old.txt", []byte("old mtime\n"))
	if err := os.Mkdir(filepath.Join(dir, "emptydir"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("hello/greeting.txt", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "hello/greeting.txt"), filepath.Join(dir, "hardlink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(dir, "old.txt"), oldTime, oldTime); err != nil {
		t.Fatal(err)
	}
	return dir
}

func makeImage(t *testing.T, src string, opts ...Option) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "perm.img")
	if err := Make(context.Background(), img, testSizeBytes, src, opts...); err != nil {
		t.Fatalf("Make: %v", err)
	}
	return img
}

func tool(t *testing.T, name string, args ...string) string {
	t.Helper()
	path, err := LookTool(name)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(path, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func sha(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

func TestMakeDeterministic(t *testing.T) {
	opts := []Option{WithLabel("perm"), WithUUID("6e1f0a52-8c3b-4d2e-9f10-0123456789ab"), WithTime(buildTime)}
	first := makeImage(t, makeSource(t), opts...)
	// A second copy of the source made at least a second later has other
	// ctimes and atimes, as a second build would.
	time.Sleep(1100 * time.Millisecond)
	second := makeImage(t, makeSource(t), opts...)
	if a, b := sha(t, first), sha(t, second); a != b {
		t.Errorf("Make twice from the same tree: sha256 %x and %x differ", a, b)
	}
}

func TestMakeContents(t *testing.T) {
	const uuid = "6e1f0a52-8c3b-4d2e-9f10-0123456789ab"
	img := makeImage(t, makeSource(t), WithLabel("perm"), WithUUID(uuid), WithTime(buildTime))
	tool(t, "e2fsck", "-fn", img)

	head := tool(t, "dumpe2fs", "-h", img)
	for _, want := range []string{
		"Filesystem volume name:   perm",
		"Filesystem UUID:          " + uuid,
		"Directory Hash Seed:      " + uuid,
		"Filesystem features:      has_journal",
		"Block size:               4096",
		"Inode size:	          256",
		"Filesystem created:       Mon May  6 07:08:09 2024",
	} {
		if !strings.Contains(head, want) {
			t.Errorf("dumpe2fs -h lacks %q:\n%s", want, head)
		}
	}
	if got := tool(t, "debugfs", "-R", "cat /hello/greeting.txt", img); !strings.Contains(got, "hello from perm\n") {
		t.Errorf("debugfs cat /hello/greeting.txt = %q", got)
	}
	ls := tool(t, "debugfs", "-R", "ls -l /", img)
	for _, want := range []string{"lost+found", "hello", "emptydir", `we"ird name with spaces`, "link", "hardlink", "old.txt"} {
		if !strings.Contains(ls, want) {
			t.Errorf("debugfs ls -l / lacks %q:\n%s", want, ls)
		}
	}
	build := fmt.Sprintf("0x%08x:00000000", buildTime.Unix())
	old := fmt.Sprintf("0x%08x:00000000", oldTime.Unix())
	for _, tc := range []struct {
		path string
		want []string
	}{
		{"/hello/greeting.txt", []string{"User:     0   Group:     0", "Links: 2", "ctime: " + build, "atime: " + build, "mtime: " + build, "Mode:  0640"}},
		{"/old.txt", []string{"mtime: " + old, "ctime: " + build}},
		{"/emptydir", []string{"Mode:  0700", "Type: directory"}},
		{"/link", []string{"Type: symlink", `Fast link dest: "hello/greeting.txt"`}},
		{"/hello/data/big.bin", []string{"Size: 1048576"}},
	} {
		st := tool(t, "debugfs", "-R", "stat "+tc.path, img)
		for _, w := range tc.want {
			if !strings.Contains(st, w) {
				t.Errorf("debugfs stat %s lacks %q:\n%s", tc.path, w, st)
			}
		}
	}
}

func TestMakeEmpty(t *testing.T) {
	for name, src := range map[string]string{"no source": "", "empty dir": t.TempDir()} {
		t.Run(name, func(t *testing.T) {
			img := makeImage(t, src)
			tool(t, "e2fsck", "-fn", img)
			ls := tool(t, "debugfs", "-R", "ls /", img)
			if !strings.Contains(ls, "lost+found") || strings.Count(ls, "  ") > 8 {
				t.Errorf("debugfs ls / = %q, want only . .. lost+found", ls)
			}
			again := makeImage(t, src)
			if sha(t, img) != sha(t, again) {
				t.Errorf("Make(%s) twice gives different bytes", name)
			}
		})
	}
}

func TestMakeReplacesFile(t *testing.T) {
	img := filepath.Join(t.TempDir(), "perm.img")
	if err := os.WriteFile(img, bytes.Repeat([]byte{0xAA}, 3*testSizeBytes/2), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Make(context.Background(), img, testSizeBytes, ""); err != nil {
		t.Fatalf("Make over an existing file: %v", err)
	}
	if st, err := os.Stat(img); err != nil || st.Size() != testSizeBytes {
		t.Fatalf("image size = %v, %v, want %d", st.Size(), err, testSizeBytes)
	}
	if sha(t, img) != sha(t, makeImage(t, "")) {
		t.Errorf("Make over an existing file differs from Make of a new one")
	}
}

func TestMakeErrors(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	newline := t.TempDir()
	if err := os.WriteFile(filepath.Join(newline, "a\nb"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "x.img")
	for _, tc := range []struct {
		name string
		size int64
		src  string
		opts []Option
		want string
	}{
		{"odd size", testSizeBytes + 1, "", nil, "multiple of 4096"},
		{"tiny size", 4 << 20, "", nil, "at least"},
		{"label", testSizeBytes, "", []Option{WithLabel("seventeen-chars!!")}, "longer than 16"},
		{"uuid", testSizeBytes, "", []Option{WithUUID("not-a-uuid")}, "UUID"},
		{"seed", testSizeBytes, "", []Option{WithHashSeed("6e1f0a52-8c3b-4d2e-9f10-0123456789aX")}, "hash seed"},
		{"epoch zero", testSizeBytes, "", []Option{WithTime(time.Unix(0, 0))}, "after 1970"},
		{"missing source", testSizeBytes, filepath.Join(dir, "nope"), nil, "no such file"},
		{"source not dir", testSizeBytes, notDir, nil, "not a directory"},
		{"newline name", testSizeBytes, newline, nil, "line breaks"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Make(context.Background(), img, tc.size, tc.src, tc.opts...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Make() = %v, want error containing %q", err, tc.want)
			}
		})
	}
	// mke2fs's own complaint reaches the caller.
	big := filepath.Join(dir, "big")
	if err := os.MkdirAll(big, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(big, "f"), bytes.Repeat([]byte{1}, 10<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	err := Make(context.Background(), img, 8<<20, big)
	if err == nil || !strings.Contains(err.Error(), "mke2fs -t ext4") || !strings.Contains(err.Error(), "Could not allocate block") {
		t.Errorf("Make(too small for source) = %v, want mke2fs's stderr", err)
	}
	if _, err := os.Stat(img); !os.IsNotExist(err) {
		t.Errorf("after a failed Make, Stat(image) = %v, want not exist", err)
	}
}

func TestMakeCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Make(ctx, filepath.Join(t.TempDir(), "x.img"), testSizeBytes, ""); err == nil {
		t.Errorf("Make(canceled) = nil, want error")
	}
}
