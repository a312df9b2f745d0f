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
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	format "github.com/ingotdev/ingot/packer/format/fat"
	"github.com/ingotdev/ingot/packer/internal/fattest"
)

// The test volume and checks shared with packer/format/fat's tests.
type memImage = fattest.Image

const testVolumeBytes = fattest.VolumeBytes

var (
	pattern   = fattest.Pattern
	walkAll   = fattest.WalkAll
	diffTrees = fattest.DiffTrees
	fsck      = fattest.Fsck
	mtools    = fattest.Mtools
)

// testFiles returns fattest.Files as Files.
func testFiles() []File {
	var files []File
	for _, f := range fattest.Files() {
		if f.Dir {
			files = append(files, File{Path: f.Path, Dir: true})
		} else {
			files = append(files, BytesFile(f.Path, f.Data))
		}
	}
	return files
}

// wantTree is what a reader should find: path -> content, dirs as nil.
func wantTree(files []File) map[string][]byte {
	var all []fattest.File
	for _, f := range files {
		var b []byte
		if f.Content != nil {
			rc, _ := f.Content.Open()
			b, _ = io.ReadAll(rc)
		}
		all = append(all, fattest.File{Path: f.Path, Dir: f.Dir, Data: b})
	}
	return fattest.Tree(all)
}

func writeImage(t *testing.T, size int64, files []File, opts ...format.Option) string {
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

func TestWriteFsck(t *testing.T) {
	for _, size := range []int64{format.MinSizeBytes, testVolumeBytes, 300 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			fsck(t, writeImage(t, size, testFiles(), format.WithVolumeLabel("ingot-boot")))
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

func TestWriteMtools(t *testing.T) {
	files := testFiles()
	stamp := time.Date(2023, 4, 5, 6, 7, 8, 0, time.UTC)
	img := writeImage(t, testVolumeBytes, files, format.WithVolumeLabel("ingot-boot"), format.WithTime(stamp), format.WithVolumeID(0x1234abcd))

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
	if err := Write(context.Background(), img, int64(len(img)), files, format.WithVolumeLabel("boot"), format.WithTime(stamp)); err != nil {
		t.Fatalf("Write: %v", err)
	}
	fsys, err := format.Open(img, int64(len(img)))
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
		if err := Write(context.Background(), img, int64(len(img)), fl, format.WithVolumeLabel("boot")); err != nil {
			t.Fatalf("Write: %v", err)
		}
		sums = append(sums, sha256.Sum256(img))
	}
	if sums[0] != sums[1] || sums[0] != sums[2] {
		t.Errorf("Write is not deterministic: sha256 %x, %x, %x (last with files reversed)", sums[0], sums[1], sums[2])
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
		opts  []format.Option
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
		{"label too long", nil, []format.Option{format.WithVolumeLabel("twelve chars")}, "longer than 11"},
		{"label char", nil, []format.Option{format.WithVolumeLabel("a.b")}, "not allowed"},
		{"cluster size", nil, []format.Option{format.WithClusterBytes(4096)}, "needs at least 65525"},
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

// tinyVolume is a valid FAT32-shaped volume of 74 sectors, too small for
// other FAT32 implementations but fine for the reader, so that fuzzing
// mutates something small.
func tinyVolume(t testing.TB) memImage {
	g := format.Geometry{
		BytesPerSector: 512, SectorsPerCluster: 1, ReservedSectors: 8,
		NumFATs: 2, FATSectors: 1, TotalSectors: 74, ClusterCount: 64,
		RootCluster: 2, FSInfoSector: 1,
	}
	img := make(memImage, int(g.TotalSectors)*512)
	files := []File{
		BytesFile("slot.json", []byte(`{"active":"a"}`)),
		BytesFile("dir/long file name.txt", pattern("x", 1500)),
		BytesFile("EXACT.TXT", nil),
	}
	o, _ := format.NewOptions(format.WithVolumeLabel("tiny"))
	if err := writeVolume(context.Background(), img, g, files, o); err != nil {
		t.Fatalf("writeVolume: %v", err)
	}
	return img
}

func TestTinyVolume(t *testing.T) {
	img := tinyVolume(t)
	fsys, err := format.Open(img, int64(len(img)))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	got := map[string][]byte{}
	if err := walkAll(fsys, got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || string(got["slot.json"]) != `{"active":"a"}` || len(got["dir/long file name.txt"]) != 1500 {
		t.Errorf("tiny volume reads as %v", got)
	}
}

func FuzzOpen(f *testing.F) {
	img := tinyVolume(f)
	f.Add([]byte(img))
	for _, off := range []int{13, 36, 44, 8*512 + 8, 10 * 512} {
		b := bytes.Clone(img)
		b[off] ^= 0xff
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fsys, err := format.Open(memImage(b), int64(len(b)))
		if err != nil {
			return
		}
		_ = walkAll(fsys, map[string][]byte{})
		for _, p := range []string{"slot.json", "SLOT.JSON", "dir/long file name.txt"} {
			if f, err := fsys.Open(p); err == nil {
				buf := make([]byte, 100)
				if rf, ok := f.(interface {
					ReadAt([]byte, int64) (int, error)
				}); ok {
					rf.ReadAt(buf, 1000)
				}
				f.Close()
			}
		}
		rw := append(memImage(nil), b...)
		_ = format.Rewrite(rw, int64(len(rw)), "slot.json", []byte(fmt.Sprint(len(b))))
	})
}
