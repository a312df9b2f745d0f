package cpio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/ingotdev/ingot/packer/rootfs"
)

const testModTime = 1700000000

// testTree holds one of every kind, a hard link group whose first member
// precedes the file in walk order, and file sizes that are not multiples of
// the 4-byte alignment.
func testTree(t *testing.T) *rootfs.Tree {
	t.Helper()
	tr := rootfs.New(testModTime)
	add := func(p string, e rootfs.Entry) {
		t.Helper()
		if e.ModTime == 0 {
			e.ModTime = testModTime + 1
		}
		if err := tr.Add(p, e); err != nil {
			t.Fatal(err)
		}
	}
	hello := "hello, initramfs\n"
	add("/a-link", rootfs.Entry{Kind: rootfs.KindHardlink, Target: "/etc/hello.txt"})
	add("/dev", rootfs.Entry{Kind: rootfs.KindDir, Mode: 0o755})
	add("/dev/console", rootfs.Entry{Kind: rootfs.KindCharDevice, Mode: 0o600, DevMajor: 5, DevMinor: 1})
	add("/dev/sda", rootfs.Entry{Kind: rootfs.KindBlockDevice, Mode: 0o660, GID: 6, DevMajor: 8, DevMinor: 0})
	add("/empty", rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o600})
	add("/etc", rootfs.Entry{Kind: rootfs.KindDir, Mode: 0o750, GID: 5})
	add("/etc/hard1", rootfs.Entry{Kind: rootfs.KindHardlink, Target: "/etc/hello.txt"})
	add("/etc/hello.txt", rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o644, UID: 1000, GID: 1001,
		ModTime: testModTime + 7, Size: int64(len(hello)), Content: rootfs.Bytes(hello)})
	add("/fifo", rootfs.Entry{Kind: rootfs.KindFIFO, Mode: 0o644})
	add("/link", rootfs.Entry{Kind: rootfs.KindSymlink, Mode: 0o777, Target: "etc/hello.txt"})
	add("/setuid", rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o4755, Size: 3, Content: rootfs.Bytes("abc")})
	add("/slink", rootfs.Entry{Kind: rootfs.KindHardlink, Target: "/link"})
	add("/sock", rootfs.Entry{Kind: rootfs.KindSocket, Mode: 0o755})
	return tr
}

func writeTree(t *testing.T, tr *rootfs.Tree) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteTree(&buf, tr); err != nil {
		t.Fatalf("WriteTree: %v", err)
	}
	return buf.Bytes()
}

func TestWriteTreeRoundTrip(t *testing.T) {
	got, err := readArchive(writeTree(t, testTree(t)))
	if err != nil {
		t.Fatalf("readArchive: %v", err)
	}
	const m1 = testModTime + 1
	want := []rawEntry{
		{Name: ".", Ino: 1, Mode: ModeDir | 0o755, NLink: 4, MTime: testModTime},
		{Name: "a-link", Ino: 2, Mode: ModeRegular | 0o644, UID: 1000, GID: 1001, NLink: 3, MTime: testModTime + 7},
		{Name: "dev", Ino: 3, Mode: ModeDir | 0o755, NLink: 2, MTime: m1},
		{Name: "dev/console", Ino: 4, Mode: ModeCharDevice | 0o600, NLink: 1, MTime: m1, RDevMajor: 5, RDevMinor: 1},
		{Name: "dev/sda", Ino: 5, Mode: ModeBlockDevice | 0o660, GID: 6, NLink: 1, MTime: m1, RDevMajor: 8},
		{Name: "empty", Ino: 6, Mode: ModeRegular | 0o600, NLink: 1, MTime: m1},
		{Name: "etc", Ino: 7, Mode: ModeDir | 0o750, GID: 5, NLink: 2, MTime: m1},
		{Name: "etc/hard1", Ino: 2, Mode: ModeRegular | 0o644, UID: 1000, GID: 1001, NLink: 3, MTime: testModTime + 7},
		{Name: "etc/hello.txt", Ino: 2, Mode: ModeRegular | 0o644, UID: 1000, GID: 1001, NLink: 3, MTime: testModTime + 7,
			Size: 17, Data: "hello, initramfs\n"},
		{Name: "fifo", Ino: 8, Mode: ModeFIFO | 0o644, NLink: 1, MTime: m1},
		{Name: "link", Ino: 9, Mode: ModeSymlink | 0o777, NLink: 1, MTime: m1, Size: 13, Data: "etc/hello.txt"},
		{Name: "setuid", Ino: 10, Mode: ModeRegular | 0o4755, NLink: 1, MTime: m1, Size: 3, Data: "abc"},
		{Name: "slink", Ino: 11, Mode: ModeSymlink | 0o777, NLink: 1, MTime: m1, Size: 13, Data: "etc/hello.txt"},
		{Name: "sock", Ino: 12, Mode: ModeSocket | 0o755, NLink: 1, MTime: m1},
		{Name: TrailerName, NLink: 1},
	}
	if len(got) != len(want) {
		t.Fatalf("readArchive(WriteTree(tree)) has %d entries, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g := got[i]
		g.HeaderOffset, g.DataOffset = 0, 0
		if g != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, g, want[i])
		}
	}
}

func TestWriteTreeDeterministic(t *testing.T) {
	for _, c := range []Compression{None, Gzip, Zstd} {
		var a, b bytes.Buffer
		if err := WriteCompressedTree(&a, testTree(t), c); err != nil {
			t.Fatalf("WriteCompressedTree(%s): %v", c, err)
		}
		if err := WriteCompressedTree(&b, testTree(t), c); err != nil {
			t.Fatalf("WriteCompressedTree(%s): %v", c, err)
		}
		if !bytes.Equal(a.Bytes(), b.Bytes()) {
			t.Errorf("WriteCompressedTree(%s) differs between two runs on the same tree", c)
		}
	}
}

// TestCompressedDecodes checks that the standard tools, not only the Go
// libraries, decode the compressed archives back to the plain one.
func TestCompressedDecodes(t *testing.T) {
	plain := writeTree(t, testTree(t))
	for _, tc := range []struct {
		c    Compression
		tool []string
		dec  func(io.Reader) ([]byte, error)
	}{
		{Gzip, []string{"gzip", "-dc"}, func(r io.Reader) ([]byte, error) {
			zr, err := gzip.NewReader(r)
			if err != nil {
				return nil, err
			}
			return io.ReadAll(zr)
		}},
		{Zstd, []string{"zstd", "-dc"}, func(r io.Reader) ([]byte, error) {
			zr, err := zstd.NewReader(r)
			if err != nil {
				return nil, err
			}
			defer zr.Close()
			return io.ReadAll(zr)
		}},
	} {
		var buf bytes.Buffer
		if err := WriteCompressedTree(&buf, testTree(t), tc.c); err != nil {
			t.Fatalf("WriteCompressedTree(%s): %v", tc.c, err)
		}
		got, err := tc.dec(bytes.NewReader(buf.Bytes()))
		if err != nil || !bytes.Equal(got, plain) {
			t.Errorf("Go %s decode = %d bytes, %v; want the %d plain bytes", tc.c, len(got), err, len(plain))
		}
		cmd := exec.Command(tc.tool[0], tc.tool[1:]...)
		cmd.Stdin = bytes.NewReader(buf.Bytes())
		out, err := cmd.Output()
		if err != nil || !bytes.Equal(out, plain) {
			t.Errorf("%s on %s archive = %d bytes, %v; want the %d plain bytes", tc.tool, tc.c, len(out), err, len(plain))
		}
	}
}

// TestGNUCpioList checks the archive against GNU cpio's own reader.
func TestGNUCpioList(t *testing.T) {
	cmd := exec.Command("cpio", "-itv", "--quiet")
	cmd.Stdin = bytes.NewReader(writeTree(t, testTree(t)))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -itv: %v: %s", err, stderr.Bytes())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	// cpio -itv prints "mode links owner group size date name [-> target]";
	// take the mode and everything from the name on.
	var got []string
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 9 {
			t.Fatalf("cpio -itv line %q: too few fields", l)
		}
		nameAt := 8
		if f[0][0] == 'c' || f[0][0] == 'b' {
			nameAt++ // "major, minor" instead of a size
		}
		got = append(got, f[0]+" "+strings.Join(f[nameAt:], " "))
	}
	want := []string{
		"drwxr-xr-x .",
		"-rw-r--r-- a-link",
		"drwxr-xr-x dev",
		"crw------- dev/console",
		"brw-rw---- dev/sda",
		"-rw------- empty",
		"drwxr-x--- etc",
		"-rw-r--r-- etc/hard1",
		"-rw-r--r-- etc/hello.txt",
		"prw-r--r-- fifo",
		"lrwxrwxrwx link -> etc/hello.txt",
		"-rwsr-xr-x setuid",
		"lrwxrwxrwx slink -> etc/hello.txt",
		"srwxr-xr-x sock",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("cpio -itv = \n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestGNUCpioExtract extracts as root (CI runs as root), so owners and
// device nodes are real, and checks what lands on disk.
func TestGNUCpioExtract(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatalf("TestGNUCpioExtract needs root to create devices and set owners; CI runs as root")
	}
	dir := t.TempDir()
	cmd := exec.Command("cpio", "-idmu", "--quiet", "--no-absolute-filenames")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(writeTree(t, testTree(t)))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -idmu: %v: %s", err, out)
	}
	type want struct {
		mode     os.FileMode
		uid, gid uint32
		rdev     uint64
		data     string
		target   string
	}
	for p, w := range map[string]want{
		"a-link":        {mode: 0o644, uid: 1000, gid: 1001, data: "hello, initramfs\n"},
		"etc/hard1":     {mode: 0o644, uid: 1000, gid: 1001, data: "hello, initramfs\n"},
		"etc/hello.txt": {mode: 0o644, uid: 1000, gid: 1001, data: "hello, initramfs\n"},
		"etc":           {mode: os.ModeDir | 0o750, gid: 5},
		"dev/console":   {mode: os.ModeDevice | os.ModeCharDevice | 0o600, rdev: 5<<8 | 1},
		"dev/sda":       {mode: os.ModeDevice | 0o660, gid: 6, rdev: 8 << 8},
		"empty":         {mode: 0o600},
		"fifo":          {mode: os.ModeNamedPipe | 0o644},
		"link":          {mode: os.ModeSymlink | 0o777, target: "etc/hello.txt"},
		"slink":         {mode: os.ModeSymlink | 0o777, target: "etc/hello.txt"},
		"setuid":        {mode: os.ModeSetuid | 0o755, data: "abc"},
		"sock":          {mode: os.ModeSocket | 0o755},
	} {
		fi, err := os.Lstat(filepath.Join(dir, p))
		if err != nil {
			t.Errorf("extracted %s: %v", p, err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode() != w.mode || st.Uid != w.uid || st.Gid != w.gid {
			t.Errorf("extracted %s: mode %v owner %d:%d, want %v %d:%d", p, fi.Mode(), st.Uid, st.Gid, w.mode, w.uid, w.gid)
		}
		if w.rdev != 0 && st.Rdev != w.rdev {
			t.Errorf("extracted %s: rdev %#x, want %#x", p, st.Rdev, w.rdev)
		}
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(filepath.Join(dir, p))
			if err != nil || string(b) != w.data {
				t.Errorf("extracted %s: content %q, %v; want %q", p, b, err, w.data)
			}
		}
		if w.target != "" {
			if got, err := os.Readlink(filepath.Join(dir, p)); got != w.target {
				t.Errorf("extracted %s: link target %q, %v; want %q", p, got, err, w.target)
			}
		}
		if !fi.IsDir() && fi.ModTime().Unix() < testModTime {
			t.Errorf("extracted %s: mtime %v not preserved", p, fi.ModTime())
		}
	}
	var inos []uint64
	for _, p := range []string{"a-link", "etc/hard1", "etc/hello.txt"} {
		fi, err := os.Stat(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		inos = append(inos, st.Ino)
		if st.Nlink != 3 {
			t.Errorf("extracted %s: %d links, want 3", p, st.Nlink)
		}
	}
	if inos[0] != inos[1] || inos[1] != inos[2] {
		t.Errorf("extracted hard links have inodes %v, want one inode", inos)
	}
}

func TestWriterErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(w *Writer) error
		want string
	}{
		{"short data", func(w *Writer) error {
			if err := w.WriteHeader(&Header{Name: "f", Mode: ModeRegular | 0o644, Size: 4}); err != nil {
				return err
			}
			w.Write([]byte("ab"))
			return w.Close()
		}, `cpio: entry "f": 2 bytes of data missing`},
		{"long data", func(w *Writer) error {
			if err := w.WriteHeader(&Header{Name: "f", Mode: ModeRegular | 0o644, Size: 1}); err != nil {
				return err
			}
			_, err := w.Write([]byte("ab"))
			return err
		}, `cpio: entry "f": cpio: write too long`},
		{"dir with data", func(w *Writer) error {
			return w.WriteHeader(&Header{Name: "d", Mode: ModeDir | 0o755, Size: 1})
		}, `cpio: entry "d": mode 040755 cannot carry 1 data bytes`},
		{"no type", func(w *Writer) error {
			return w.WriteHeader(&Header{Name: "x", Mode: 0o644})
		}, `cpio: entry "x": mode 0644 has no valid file type`},
		{"negative time", func(w *Writer) error {
			return w.WriteHeader(&Header{Name: "x", Mode: ModeFIFO, ModTime: -1})
		}, `cpio: entry "x": modification time -1 outside 0..4294967295`},
		{"trailer name", func(w *Writer) error {
			return w.WriteHeader(&Header{Name: TrailerName, Mode: ModeFIFO})
		}, `cpio: entry name "TRAILER!!!" is reserved for the trailer`},
		{"after close", func(w *Writer) error {
			w.Close()
			return w.WriteHeader(&Header{Name: "x", Mode: ModeFIFO})
		}, `cpio: entry "x": write after Close`},
	} {
		err := tc.run(NewWriter(io.Discard))
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s: error = %v, want %q", tc.name, err, tc.want)
		}
	}
}

// lyingContent claims one size and delivers another.
type lyingContent string

func (c lyingContent) Open() (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader(string(c))), nil
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteTreeErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		build func(tr *rootfs.Tree) error
		w     io.Writer
		want  string
	}{
		{"short content", func(tr *rootfs.Tree) error {
			return tr.Add("/f", rootfs.Entry{Kind: rootfs.KindFile, Size: 5, Content: lyingContent("abc")})
		}, nil, `cpio: "/f": content has 3 bytes, entry says 5`},
		{"long content", func(tr *rootfs.Tree) error {
			return tr.Add("/f", rootfs.Entry{Kind: rootfs.KindFile, Size: 2, Content: lyingContent("abc")})
		}, nil, `cpio: "/f": content is longer than the entry's 2 bytes`},
		{"dangling hardlink", func(tr *rootfs.Tree) error {
			return tr.Add("/h", rootfs.Entry{Kind: rootfs.KindHardlink, Target: "/nope"})
		}, nil, `cpio: hardlink "/h": target "/nope" is not in the tree`},
		{"hardlink to dir", func(tr *rootfs.Tree) error {
			if err := tr.Add("/d", rootfs.Entry{Kind: rootfs.KindDir}); err != nil {
				return err
			}
			return tr.Add("/h", rootfs.Entry{Kind: rootfs.KindHardlink, Target: "/d"})
		}, nil, `cpio: hardlink "/h": target "/d" is a directory`},
		{"hardlink loop", func(tr *rootfs.Tree) error {
			if err := tr.Add("/a", rootfs.Entry{Kind: rootfs.KindHardlink, Target: "/b"}); err != nil {
				return err
			}
			return tr.Add("/b", rootfs.Entry{Kind: rootfs.KindHardlink, Target: "/a"})
		}, nil, `cpio: hardlink "/a": more than 64 links in a chain`},
		{"time past 2106", func(tr *rootfs.Tree) error {
			return tr.Add("/f", rootfs.Entry{Kind: rootfs.KindFIFO, ModTime: 1 << 33})
		}, nil, `cpio: "/f": modification time 8589934592 does not fit newc's 32 bits`},
		{"write error", func(tr *rootfs.Tree) error { return nil }, failingWriter{},
			`cpio: flush: disk full`},
	} {
		tr := rootfs.New(0)
		if err := tc.build(tr); err != nil {
			t.Fatalf("%s: building tree: %v", tc.name, err)
		}
		w := tc.w
		if w == nil {
			w = io.Discard
		}
		err := WriteTree(w, tr)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s: WriteTree = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestWriterMixedInodes(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, h := range []Header{
		{Name: "a", Mode: ModeFIFO},
		{Name: "b", Mode: ModeFIFO, Ino: 10},
		{Name: "c", Mode: ModeFIFO},
	} {
		if err := w.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := readArchive(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	var inos []string
	for _, e := range got {
		inos = append(inos, fmt.Sprint(e.Ino))
	}
	if s := strings.Join(inos, ","); s != "1,10,11,0" {
		t.Errorf("inode numbers = %s, want 1,10,11,0", s)
	}
}
