package fat

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

// memImage is an in-memory volume.
type memImage []byte

func (m memImage) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m)) {
		return 0, fmt.Errorf("write of %d bytes at %d outside %d", len(p), off, len(m))
	}
	return copy(m[off:], p), nil
}
func (m memImage) ReadAt(p []byte, off int64) (int, error) { return bytes.NewReader(m).ReadAt(p, off) }

// pattern returns n bytes that differ per seed and position, so that a
// misplaced cluster shows up as a content mismatch.
func pattern(seed string, n int) []byte {
	b := make([]byte, 0, n+sha256.Size)
	block := sha256.Sum256([]byte(seed))
	for len(b) < n {
		b = append(b, block[:]...)
		block = sha256.Sum256(block[:])
	}
	return b[:n]
}

const testVolumeBytes = 64 << 20

// testFiles covers what boot partitions hold plus the awkward cases.
func testFiles() []File {
	files := []File{
		BytesFile("vmlinuz", pattern("vmlinuz", 5<<20+123)),
		BytesFile("initrd.img", pattern("initrd", 1<<20+1)),
		BytesFile("cmdline.txt", []byte("console=ttyS0 ingot.boot=PARTUUID=x\n")),
		BytesFile("slot.json", []byte(`{"active":"a","trial":"","tries_left":0}`)),
		BytesFile("config.txt", []byte("arm_64bit=1\n")),
		BytesFile("README.TXT", []byte("exact 8.3 name\n")),
		BytesFile("empty", nil),
		BytesFile("overlays/bcm2710-rpi-3-b.dtb", pattern("dtb", 30000)),
		BytesFile("overlays/bcm2710-rpi-3-b-plus.dtb", pattern("dtb+", 31000)),
		BytesFile("overlays/README", []byte("overlays\n")),
		{Path: "emptydir", Dir: true},
		{Path: "a/b", Dir: true}, // explicit parent of an implicit child
		BytesFile("a/b/c/d/deep file with spaces.txt", []byte("deep\n")),
		BytesFile("unicode/grüße-ünïcødé-日本語.txt", []byte("unicode\n")),
		BytesFile("unicode/😀.bin", []byte{0}),
		BytesFile(".hidden-dot", []byte("dot\n")),
		BytesFile("abcdefghijklm", []byte("13 units, no terminator\n")),
		BytesFile(strings.Repeat("n", 255), []byte("longest name\n")),
		BytesFile("onecluster", pattern("onecluster", 512)),
		BytesFile("x+y,z;w=[1]", []byte("short-name-invalid characters\n")),
	}
	// Enough long names that the directory spans many clusters.
	for i := 0; i < 300; i++ {
		files = append(files, BytesFile(fmt.Sprintf("many/file-%03d-with-a-long-name.dat", i), pattern(fmt.Sprint(i), i)))
	}
	return files
}

// wantTree is what a reader should find: path -> content, dirs as nil.
func wantTree(files []File) map[string][]byte {
	want := map[string][]byte{}
	for _, f := range files {
		parts := strings.Split(f.Path, "/")
		for i := 1; i < len(parts); i++ {
			want[strings.Join(parts[:i], "/")] = nil
		}
		if f.Dir {
			want[f.Path] = nil
			continue
		}
		b := []byte{}
		if f.Content != nil {
			rc, _ := f.Content.Open()
			b, _ = io.ReadAll(rc)
		}
		want[f.Path] = b
	}
	return want
}

func writeImage(t *testing.T, size int64, files []File, opts ...Option) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fat.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := Write(context.Background(), f, size, files, opts...); err != nil {
		t.Fatalf("Write: %v", err)
	}
	return path
}

func fsck(t *testing.T, img string) {
	t.Helper()
	out, err := exec.Command("fsck.vfat", "-n", "-V", img).CombinedOutput()
	// A clean volume gives the banner, the two passes and the summary;
	// anything else is a complaint, even when the exit status is 0.
	if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); err != nil || len(lines) != 4 {
		t.Errorf("fsck.vfat -n -V %s: %v\n%s", img, err, out)
	}
}

func TestWriteFsck(t *testing.T) {
	for _, size := range []int64{MinSizeBytes, testVolumeBytes, 300 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			fsck(t, writeImage(t, size, testFiles(), WithVolumeLabel("ingot-boot")))
		})
	}
}

// treeOf reads a host directory into the wantTree form.
func treeOf(t *testing.T, root string) map[string][]byte {
	t.Helper()
	got := map[string][]byte{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			got[filepath.ToSlash(rel)] = nil
			return nil
		}
		b, err := os.ReadFile(p)
		got[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func diffTrees(t *testing.T, who string, got, want map[string][]byte) {
	t.Helper()
	var problems []string
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("missing %q", p))
		case (w == nil) != (g == nil):
			problems = append(problems, fmt.Sprintf("%q: dir/file mismatch", p))
		case !bytes.Equal(g, w):
			problems = append(problems, fmt.Sprintf("%q: %d bytes, want %d bytes (content differs)", p, len(g), len(w)))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			problems = append(problems, fmt.Sprintf("unexpected %q", p))
		}
	}
	sort.Strings(problems)
	if len(problems) > 0 {
		t.Errorf("%s tree differs:\n%s", who, strings.Join(problems, "\n"))
	}
}

func mtools(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1", "TZ=UTC", "LC_ALL=C.UTF-8")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("%s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
	}
	return out
}

func TestWriteMtools(t *testing.T) {
	files := testFiles()
	stamp := time.Date(2023, 4, 5, 6, 7, 8, 0, time.UTC)
	img := writeImage(t, testVolumeBytes, files, WithVolumeLabel("ingot-boot"), WithTime(stamp), WithVolumeID(0x1234abcd))

	info := string(mtools(t, "minfo", "-i", img, "::"))
	for _, want := range []string{"sector size: 512 bytes", "fats: 2", "media descriptor byte: 0xf8", "big size: 131072 sectors", "serial number: 1234ABCD", `disk label="INGOT-BOOT "`, `disk type="FAT32   "`, "backup boot sector=6", "infoSector location=1"} {
		if !strings.Contains(info, want) {
			t.Errorf("minfo output lacks %q:\n%s", want, info)
		}
	}
	listing := string(mtools(t, "mdir", "-/", "-b", "-i", img, "::"))
	for _, want := range []string{"::/slot.json\n", "::/overlays/bcm2710-rpi-3-b.dtb\n", "::/cmdline.txt\n", "::/emptydir/\n", "::/a/b/c/d/deep file with spaces.txt\n"} {
		if !strings.Contains(listing, want) {
			t.Errorf("mdir -/ -b lacks %q:\n%s", want, listing)
		}
	}
	if got := mtools(t, "mtype", "-i", img, "::overlays/bcm2710-rpi-3-b.dtb"); !bytes.Equal(got, pattern("dtb", 30000)) {
		t.Errorf("mtype ::overlays/bcm2710-rpi-3-b.dtb: %d bytes, content differs", len(got))
	}
	out := t.TempDir()
	mtools(t, "mcopy", "-s", "-m", "-i", img, "::*", "::.hidden-dot", out)
	want := wantTree(files)
	// mtools 4.0.32 turns each half of a UTF-16 surrogate pair into '_';
	// the reader test and the Linux VM test check that name.
	want["unicode/__.bin"] = want["unicode/😀.bin"]
	delete(want, "unicode/😀.bin")
	diffTrees(t, "mcopy", treeOf(t, out), want)
	st, err := os.Stat(filepath.Join(out, "vmlinuz"))
	if err != nil || !st.ModTime().Equal(stamp) {
		t.Errorf("mcopy -m vmlinuz mtime = %v, %v, want %v", st.ModTime(), err, stamp)
	}
}

func TestReadBack(t *testing.T) {
	files := testFiles()
	img := make(memImage, testVolumeBytes)
	stamp := time.Date(2024, 2, 29, 23, 59, 58, 0, time.UTC)
	if err := Write(context.Background(), img, int64(len(img)), files, WithVolumeLabel("boot"), WithTime(stamp)); err != nil {
		t.Fatalf("Write: %v", err)
	}
	fsys, err := Open(img, int64(len(img)))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if fsys.Label() != "BOOT" {
		t.Errorf("Label() = %q, want BOOT", fsys.Label())
	}
	got := map[string][]byte{}
	err = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == "." {
			return err
		}
		if d.IsDir() {
			got[p] = nil
			return nil
		}
		b, err := fs.ReadFile(fsys, p)
		got[p] = b
		info, _ := d.Info()
		if !info.ModTime().Equal(stamp) {
			t.Errorf("%s: ModTime() = %v, want %v", p, info.ModTime(), stamp)
		}
		return err
	})
	if err != nil {
		t.Fatalf("WalkDir: %v", err)
	}
	diffTrees(t, "reader", got, wantTree(files))

	// Case-insensitive and 8.3 lookups, as the Pi firmware does them.
	for _, name := range []string{"SLOT.JSON", "slot~1.jso", "Overlays/BCM271~2.DTB", "cmdline.txt"} {
		if _, err := fsys.Stat(name); err != nil {
			t.Errorf("Stat(%q) = %v", name, err)
		}
	}
	var names []string
	for p := range wantTree(files) {
		names = append(names, p)
	}
	sort.Strings(names)
	if err := fstest.TestFS(fsys, names[:40]...); err != nil {
		t.Errorf("fstest.TestFS: %v", err)
	}
}

func TestDeterministic(t *testing.T) {
	files := testFiles()
	reversed := append([]File(nil), files...)
	for i, j := 0, len(reversed)-1; i < j; i, j = i+1, j-1 {
		reversed[i], reversed[j] = reversed[j], reversed[i]
	}
	var sums [][32]byte
	for _, fl := range [][]File{files, files, reversed} {
		img := make(memImage, testVolumeBytes)
		if err := Write(context.Background(), img, int64(len(img)), fl, WithVolumeLabel("boot")); err != nil {
			t.Fatalf("Write: %v", err)
		}
		sums = append(sums, sha256.Sum256(img))
	}
	if sums[0] != sums[1] || sums[0] != sums[2] {
		t.Errorf("Write is not deterministic: sha256 %x, %x, %x (last with files reversed)", sums[0], sums[1], sums[2])
	}
}

func TestClusterSize(t *testing.T) {
	if MinSizeBytes != 34089472 {
		t.Errorf("MinSizeBytes = %d, want 34089472", MinSizeBytes)
	}
	for _, tc := range []struct {
		size         int64
		clusterBytes int
		want         int64
	}{
		{MinSizeBytes, 0, 512},
		{64 << 20, 0, 512},
		{100 << 20, 0, 1024},
		{256 << 20, 0, 2048},
		{300 << 20, 0, 4096},
		{8 << 30, 0, 4096},
		{1 << 30, 8192, 8192},
		{64 << 20, 512, 512},
	} {
		g, err := planGeometry(tc.size, tc.clusterBytes)
		if err != nil {
			t.Errorf("planGeometry(%d, %d) = %v", tc.size, tc.clusterBytes, err)
			continue
		}
		if g.clusterBytes() != tc.want {
			t.Errorf("planGeometry(%d, %d) cluster = %d bytes, want %d", tc.size, tc.clusterBytes, g.clusterBytes(), tc.want)
		}
		if g.clusterCount < minClusters || g.dataStartBytes()%g.clusterBytes() != 0 ||
			g.dataStartBytes()+int64(g.clusterCount)*g.clusterBytes() > tc.size {
			t.Errorf("planGeometry(%d, %d) = %+v: bad layout", tc.size, tc.clusterBytes, g)
		}
	}
	for _, tc := range []struct {
		size         int64
		clusterBytes int
		want         string
	}{
		{MinSizeBytes - 512, 0, "too small for FAT32"},
		{32 << 20, 0, "too small for FAT32"},
		{64 << 20, 1024, "needs at least 65525"},
		{64 << 20, 3000, "power of two"},
		{64 << 20, 65536, "power of two"},
	} {
		if _, err := planGeometry(tc.size, tc.clusterBytes); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("planGeometry(%d, %d) = %v, want error containing %q", tc.size, tc.clusterBytes, err, tc.want)
		}
	}
}

// shortContent yields fewer bytes than its File claims.
type shortContent struct{}

func (shortContent) Open() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("abc")), nil }

type failingContent struct{}

func (failingContent) Open() (io.ReadCloser, error) { return nil, errors.New("no such host file") }

func TestWriteErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files []File
		opts  []Option
		want  string
	}{
		{"absolute path", []File{BytesFile("/x", nil)}, nil, "not a valid relative slash path"},
		{"dotdot", []File{BytesFile("a/../x", nil)}, nil, "not a valid relative slash path"},
		{"dot", []File{{Path: ".", Dir: true}}, nil, "not a valid relative slash path"},
		{"twice", []File{BytesFile("x", nil), BytesFile("x", nil)}, nil, "given twice"},
		{"case twins", []File{BytesFile("Foo", nil), BytesFile("foo", nil)}, nil, "differ only in case"},
		{"file as dir", []File{BytesFile("x", nil), BytesFile("x/y", nil)}, nil, "is a file, not a directory"},
		{"dir as file", []File{BytesFile("x/y", nil), BytesFile("x", nil)}, nil, "both as a file and as a directory"},
		{"file as explicit dir", []File{BytesFile("x", nil), {Path: "x", Dir: true}}, nil, "both as a file and as a directory"},
		{"bad char", []File{BytesFile("a:b", nil)}, nil, "not allowed"},
		{"trailing dot", []File{BytesFile("a.", nil)}, nil, "ends with a dot"},
		{"short content", []File{{Path: "x", Size: 10, Content: shortContent{}}}, nil, "content has 3 bytes, File.Size says 10"},
		{"long content", []File{{Path: "x", Size: 2, Content: shortContent{}}}, nil, "content longer than File.Size"},
		{"open fails", []File{{Path: "x", Size: 2, Content: failingContent{}}}, nil, "no such host file"},
		{"no content", []File{{Path: "x", Size: 2}}, nil, "no content"},
		{"dir with content", []File{{Path: "x", Dir: true, Size: 2}}, nil, "has a size or content"},
		{"negative size", []File{{Path: "x", Size: -1}}, nil, "size -1"},
		{"too big", []File{{Path: "x", Size: 1 << 32, Content: shortContent{}}}, nil, "FAT holds 0 to"},
		{"full", []File{{Path: "x", Size: testVolumeBytes, Content: shortContent{}}}, nil, `"x" does not fit`},
		{"label too long", nil, []Option{WithVolumeLabel("twelve chars")}, "longer than 11"},
		{"label char", nil, []Option{WithVolumeLabel("a.b")}, "not allowed"},
		{"cluster size", nil, []Option{WithClusterBytes(4096)}, "needs at least 65525"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Write(context.Background(), make(memImage, testVolumeBytes), testVolumeBytes, tc.files, tc.opts...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Write() = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestWriteCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Write(ctx, make(memImage, testVolumeBytes), testVolumeBytes, testFiles()); !errors.Is(err, context.Canceled) {
		t.Errorf("Write(canceled) = %v, want context.Canceled", err)
	}
}

func TestFullDirectory(t *testing.T) {
	// 21845 names of 13 units take 2 entries each: 43690 entries fit;
	// 40000 names of 14 units take 3 each: 120000 do not.
	var files []File
	for i := 0; i < 40000; i++ {
		files = append(files, File{Path: fmt.Sprintf("d/n%013d", i)})
	}
	err := Write(context.Background(), make(memImage, testVolumeBytes), testVolumeBytes, files)
	if err == nil || !strings.Contains(err.Error(), `directory "d": 120002 entries, at most 65536`) {
		t.Errorf("Write(40000 long names in one dir) = %v, want too many entries", err)
	}
}
