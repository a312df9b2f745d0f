// Package fattest holds what the tests of the FAT writer (packer/fat) and
// of the FAT format (packer/format/fat) share: the files of the test
// volume, an in-memory volume, and the checks with fsck.vfat, mtools and
// a walk of the reader.
package fattest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
)

// VolumeBytes is the size of the test volume.
const VolumeBytes = 64 << 20

// Image is an in-memory volume.
type Image []byte

// WriteAt writes within the image.
func (m Image) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m)) {
		return 0, fmt.Errorf("write of %d bytes at %d outside %d", len(p), off, len(m))
	}
	return copy(m[off:], p), nil
}

// ReadAt reads within the image.
func (m Image) ReadAt(p []byte, off int64) (int, error) { return bytes.NewReader(m).ReadAt(p, off) }

// Pattern returns n bytes that differ per seed and position, so that a
// misplaced cluster shows up as a content mismatch.
func Pattern(seed string, n int) []byte {
	b := make([]byte, 0, n+sha256.Size)
	block := sha256.Sum256([]byte(seed))
	for len(b) < n {
		b = append(b, block[:]...)
		block = sha256.Sum256(block[:])
	}
	return b[:n]
}

// File is a file (Data, nil for empty) or a directory of the test volume.
type File struct {
	Path string
	Dir  bool
	Data []byte
}

// Files covers what boot partitions hold plus the awkward cases.
func Files() []File {
	files := []File{
		{Path: "vmlinuz", Data: Pattern("vmlinuz", 5<<20+123)},
		{Path: "initrd.img", Data: Pattern("initrd", 1<<20+1)},
		{Path: "cmdline.txt", Data: []byte("console=ttyS0 ingot.boot=PARTUUID=x\n")},
		{Path: "slot.json", Data: []byte(`{"active":"a","trial":"","tries_left":0}`)},
		{Path: "config.txt", Data: []byte("arm_64bit=1\n")},
		{Path: "README.TXT", Data: []byte("exact 8.3 name\n")},
		{Path: "empty"},
		{Path: "overlays/bcm2710-rpi-3-b.dtb", Data: Pattern("dtb", 30000)},
		{Path: "overlays/bcm2710-rpi-3-b-plus.dtb", Data: Pattern("dtb+", 31000)},
		{Path: "overlays/README", Data: []byte("overlays\n")},
		{Path: "emptydir", Dir: true},
		{Path: "a/b", Dir: true}, // explicit parent of an implicit child
		{Path: "a/b/c/d/deep file with spaces.txt", Data: []byte("deep\n")},
		{Path: "unicode/grüße-ünïcødé-日本語.txt", Data: []byte("unicode\n")},
		{Path: "unicode/😀.bin", Data: []byte{0}},
		{Path: ".hidden-dot", Data: []byte("dot\n")},
		{Path: "abcdefghijklm", Data: []byte("13 units, no terminator\n")},
		{Path: strings.Repeat("n", 255), Data: []byte("longest name\n")},
		{Path: "onecluster", Data: Pattern("onecluster", 512)},
		{Path: "x+y,z;w=[1]", Data: []byte("short-name-invalid characters\n")},
	}
	// Enough long names that the directory spans many clusters.
	for i := 0; i < 300; i++ {
		files = append(files, File{Path: fmt.Sprintf("many/file-%03d-with-a-long-name.dat", i), Data: Pattern(fmt.Sprint(i), i)})
	}
	return files
}

// Tree is what a reader should find: path -> content, directories as nil.
func Tree(files []File) map[string][]byte {
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
		want[f.Path] = append([]byte{}, f.Data...)
	}
	return want
}

// WalkAll reads every directory and file of fsys into got, giving up after
// a bounded number of entries so that a test can never hang on it.
func WalkAll(fsys fs.FS, got map[string][]byte) error {
	visited := 0
	return fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if visited++; visited > 5000 {
			return errors.New("walk too long")
		}
		if p == "." {
			return nil
		}
		if d.IsDir() {
			got[p] = nil
			return nil
		}
		b, err := fs.ReadFile(fsys, p)
		got[p] = b
		return err
	})
}

// DiffTrees reports every difference between two trees in the Tree form.
func DiffTrees(t *testing.T, who string, got, want map[string][]byte) {
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

// Fsck checks the volume in the file img with fsck.vfat.
func Fsck(t *testing.T, img string) {
	t.Helper()
	out, err := exec.Command("fsck.vfat", "-n", "-V", img).CombinedOutput()
	// A clean volume gives the banner, the two passes and the summary;
	// anything else is a complaint, even when the exit status is 0.
	if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); err != nil || len(lines) != 4 {
		t.Errorf("fsck.vfat -n -V %s: %v\n%s", img, err, out)
	}
}

// Mtools runs an mtools command and returns its output.
func Mtools(t *testing.T, args ...string) []byte {
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
