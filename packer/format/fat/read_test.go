package fat_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	fatw "github.com/ingotdev/ingot/packer/fat"
	"github.com/ingotdev/ingot/packer/format/fat"
	"github.com/ingotdev/ingot/packer/internal/fattest"
)

// writeTestVolume writes fattest.Files to w with the writer, as a volume
// of fattest.VolumeBytes.
func writeTestVolume(t testing.TB, w io.WriterAt, opts ...fat.Option) {
	t.Helper()
	var files []fatw.File
	for _, f := range fattest.Files() {
		if f.Dir {
			files = append(files, fatw.File{Path: f.Path, Dir: true})
		} else {
			files = append(files, fatw.BytesFile(f.Path, f.Data))
		}
	}
	if err := fatw.Write(context.Background(), w, fattest.VolumeBytes, files, opts...); err != nil {
		t.Fatalf("Write: %v", err)
	}
}

// TestReadForeign reads volumes made by mkfs.vfat and filled by mtools.
func TestReadForeign(t *testing.T) {
	for _, clusterSectors := range []string{"1", "4", "8"} {
		t.Run("sectors per cluster "+clusterSectors, func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "foreign.img")
			src := filepath.Join(dir, "src")
			want := map[string][]byte{
				"a":                       nil,
				"a/b":                     nil,
				"a/b/Mixed Case Name.TXT": []byte("mixed"),
				"kernel8.img":             fattest.Pattern("kernel8", 3<<20+5),
				"bcm2711-rpi-4-b.dtb":     fattest.Pattern("dtb", 50000),
				"cmdline.txt":             []byte("root=PARTUUID=1234abcd-02\n"),
				"UPPER.TXT":               []byte("upper"),
				"lower.txt":               []byte("lower"),
				"emptyfile":               {},
				"a/deleted-sibling-kept":  []byte("kept"),
				"grüße.txt":               []byte("umlaut"),
				strings.Repeat("L", 200):  []byte("long"),
			}
			for p, b := range want {
				full := filepath.Join(src, p)
				if b == nil {
					if err := os.MkdirAll(full, 0o755); err != nil {
						t.Fatal(err)
					}
					continue
				}
				if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(full, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(src, "a", "to-delete"), []byte("gone"), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("mkfs.vfat", "-F", "32", "-s", clusterSectors, "-n", "FOREIGN", "-C", img, "300000").CombinedOutput(); err != nil {
				t.Fatalf("mkfs.vfat: %v\n%s", err, out)
			}
			entries, err := os.ReadDir(src)
			if err != nil {
				t.Fatal(err)
			}
			args := []string{"mcopy", "-s", "-i", img}
			for _, e := range entries {
				args = append(args, filepath.Join(src, e.Name()))
			}
			fattest.Mtools(t, append(args, "::")...)
			fattest.Mtools(t, "mdel", "-i", img, "::a/to-delete")

			f, err := os.Open(img)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			st, _ := f.Stat()
			fsys, err := fat.Open(f, st.Size())
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if fsys.Label() != "FOREIGN" {
				t.Errorf("Label() = %q, want FOREIGN", fsys.Label())
			}
			got := map[string][]byte{}
			if err := fattest.WalkAll(fsys, got); err != nil {
				t.Fatalf("walk: %v", err)
			}
			fattest.DiffTrees(t, "reader on mkfs.vfat+mcopy volume", got, want)

			// And Rewrite on a foreign volume keeps fsck happy.
			f.Close()
			rw, err := os.OpenFile(img, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer rw.Close()
			if err := fat.Rewrite(rw, st.Size(), "cmdline.txt", fattest.Pattern("cmdline", 20000)); err != nil {
				t.Fatalf("Rewrite: %v", err)
			}
			fattest.Fsck(t, img)
			if out := fattest.Mtools(t, "mtype", "-i", img, "::cmdline.txt"); !bytes.Equal(out, fattest.Pattern("cmdline", 20000)) {
				t.Errorf("mtype cmdline.txt after Rewrite: %d bytes, content differs", len(out))
			}
		})
	}
}

// geometryOf returns the layout of a volume this package wrote.
func geometryOf(t *testing.T, img fattest.Image) fat.Geometry {
	t.Helper()
	g, err := fat.ParseBootSector(img[:512], int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// entryOffset finds the 8.3 entry of path in img.
func entryOffset(t *testing.T, img fattest.Image, path string) (int64, uint32) {
	t.Helper()
	fsys, err := fat.Open(img, int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	off, first, err := fsys.Entry(path)
	if err != nil {
		t.Fatal(err)
	}
	return off, first
}

func setFATEntry(img fattest.Image, g fat.Geometry, c, v uint32) {
	for i := uint32(0); i < g.NumFATs; i++ {
		binary.LittleEndian.PutUint32(img[g.FATOffset(i)+int64(c)*4:], v)
	}
}

func TestCorrupt(t *testing.T) {
	base := make(fattest.Image, fattest.VolumeBytes)
	writeTestVolume(t, base, fat.WithVolumeLabel("boot"))
	g := geometryOf(t, base)
	le := binary.LittleEndian
	for _, tc := range []struct {
		name    string
		corrupt func(t *testing.T, img fattest.Image)
		want    string
	}{
		{"boot signature", func(t *testing.T, img fattest.Image) { img[510] = 0 }, "0x55AA"},
		{"bytes per sector", func(t *testing.T, img fattest.Image) { le.PutUint16(img[11:], 513) }, "bytes per sector"},
		{"sectors per cluster", func(t *testing.T, img fattest.Image) { img[13] = 3 }, "sectors per cluster"},
		{"no FATs", func(t *testing.T, img fattest.Image) { img[16] = 0 }, "FATs"},
		{"FAT16", func(t *testing.T, img fattest.Image) { le.PutUint16(img[22:], 9) }, "not FAT32"},
		{"FAT size 0", func(t *testing.T, img fattest.Image) { le.PutUint32(img[36:], 0) }, "not FAT32"},
		{"FAT too small", func(t *testing.T, img fattest.Image) { le.PutUint32(img[36:], 10) }, "cannot map"},
		{"huge volume", func(t *testing.T, img fattest.Image) { le.PutUint32(img[32:], 0xFFFFFFFF) }, "more than the"},
		{"reserved fill", func(t *testing.T, img fattest.Image) { le.PutUint16(img[14:], 0xFFFF); le.PutUint32(img[32:], 1000) }, "fill the volume"},
		{"root cluster", func(t *testing.T, img fattest.Image) { le.PutUint32(img[44:], 1) }, "root cluster"},
		{"root cluster huge", func(t *testing.T, img fattest.Image) { le.PutUint32(img[44:], 0x0FFFFFF0) }, "root cluster"},
		{"version", func(t *testing.T, img fattest.Image) { le.PutUint16(img[42:], 1) }, "version"},
		{"root dir loop", func(t *testing.T, img fattest.Image) { setFATEntry(img, g, 2, 2) }, "loops back"},
		{"root dir free link", func(t *testing.T, img fattest.Image) { setFATEntry(img, g, 2, 0) }, "links to 0x0"},
		{"file chain loop", func(t *testing.T, img fattest.Image) {
			_, first := entryOffset(t, img, "vmlinuz")
			setFATEntry(img, g, first+5, first)
		}, "loops back"},
		{"file chain short", func(t *testing.T, img fattest.Image) {
			_, first := entryOffset(t, img, "vmlinuz")
			setFATEntry(img, g, first+5, fat.EOC)
		}, "ends after 6 clusters"},
		{"file chain bad cluster", func(t *testing.T, img fattest.Image) {
			_, first := entryOffset(t, img, "vmlinuz")
			setFATEntry(img, g, first, fat.Bad)
		}, "links to 0xffffff7"},
		{"file chain out of range", func(t *testing.T, img fattest.Image) {
			_, first := entryOffset(t, img, "vmlinuz")
			setFATEntry(img, g, first, g.ClusterCount+2)
		}, "links to"},
		{"file size too big", func(t *testing.T, img fattest.Image) {
			off, _ := entryOffset(t, img, "cmdline.txt")
			le.PutUint32(img[off+28:], 0xFFFFFFFF)
		}, "exceeds the volume"},
		{"file cluster out of range", func(t *testing.T, img fattest.Image) {
			off, _ := entryOffset(t, img, "cmdline.txt")
			le.PutUint16(img[off+20:], 0x0FFF)
		}, "outside 2.."},
		{"dir cluster zero", func(t *testing.T, img fattest.Image) {
			off, _ := entryOffset(t, img, "overlays")
			le.PutUint16(img[off+20:], 0)
			le.PutUint16(img[off+26:], 0)
		}, "first cluster 0"},
		{"dir loop", func(t *testing.T, img fattest.Image) {
			_, a := entryOffset(t, img, "a")
			off, _ := entryOffset(t, img, "a/b")
			le.PutUint16(img[off+20:], uint16(a>>16))
			le.PutUint16(img[off+26:], uint16(a))
		}, "directory loop"},
		{"slash in name", func(t *testing.T, img fattest.Image) {
			off, _ := entryOffset(t, img, "README.TXT")
			img[off+2] = '/'
		}, "invalid name"},
		{"volume cut short", func(t *testing.T, img fattest.Image) {}, "more than the"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := append(fattest.Image(nil), base...)
			tc.corrupt(t, img)
			size := int64(len(img))
			if tc.name == "volume cut short" {
				size -= 512
			}
			done := make(chan error, 1)
			go func() {
				fsys, err := fat.Open(img, size)
				if err == nil {
					err = fattest.WalkAll(fsys, map[string][]byte{})
				}
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("Open+walk of corrupt volume = %v, want error containing %q", err, tc.want)
				}
			case <-time.After(time.Minute):
				t.Fatalf("Open+walk of corrupt volume hangs")
			}
		})
	}
}
