package fat_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ingotdev/ingot/packer/format/fat"
	"github.com/ingotdev/ingot/packer/internal/fattest"
)

func TestRewrite(t *testing.T) {
	for _, tc := range []struct {
		name string
		path string
		data []byte
	}{
		{"same size", "slot.json", []byte(`{"active":"b","trial":"","tries_left":0}`)},
		{"smaller", "slot.json", []byte(`{}`)},
		{"larger, many clusters", "slot.json", fattest.Pattern("big slot", 70000)},
		{"to empty", "slot.json", nil},
		{"from empty", "empty", []byte("now with content\n")},
		{"nested, by 8.3 alias", "overlays/BCM271~2.DTB", []byte("replaced dtb")},
		{"big file shrinks", "vmlinuz", []byte("tiny kernel")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "fat.img")
			f, err := os.Create(img)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := f.Truncate(fattest.VolumeBytes); err != nil {
				t.Fatal(err)
			}
			writeTestVolume(t, f)
			stamp := time.Date(2030, 1, 2, 3, 4, 6, 0, time.UTC)
			if err := fat.Rewrite(f, fattest.VolumeBytes, tc.path, tc.data, fat.WithTime(stamp)); err != nil {
				t.Fatalf("Rewrite(%q): %v", tc.path, err)
			}
			fattest.Fsck(t, img)

			fsys, err := fat.Open(f, fattest.VolumeBytes)
			if err != nil {
				t.Fatalf("Open after Rewrite: %v", err)
			}
			info, err := fsys.Stat(tc.path)
			if err != nil {
				t.Fatalf("Stat(%q): %v", tc.path, err)
			}
			want := fattest.Tree(fattest.Files())
			want[strings.Replace(tc.path, "BCM271~2.DTB", "bcm2710-rpi-3-b.dtb", 1)] = append([]byte{}, tc.data...)
			got := map[string][]byte{}
			if err := fattest.WalkAll(fsys, got); err != nil {
				t.Fatalf("reading back: %v", err)
			}
			fattest.DiffTrees(t, "reader after Rewrite", got, want)
			if !info.ModTime().Equal(stamp) {
				t.Errorf("ModTime after Rewrite(WithTime(%v)) = %v", stamp, info.ModTime())
			}
			if out := fattest.Mtools(t, "mtype", "-i", img, "::"+tc.path); !bytes.Equal(out, tc.data) {
				t.Errorf("mtype %s after Rewrite: %d bytes, want %d", tc.path, len(out), len(tc.data))
			}
		})
	}
}

func TestRewriteKeepsTime(t *testing.T) {
	img := make(fattest.Image, fattest.VolumeBytes)
	stamp := time.Date(2021, 6, 7, 8, 9, 10, 0, time.UTC)
	writeTestVolume(t, img, fat.WithTime(stamp))
	if err := fat.Rewrite(img, fattest.VolumeBytes, "slot.json", []byte("x")); err != nil {
		t.Fatalf("Rewrite: %v", err)
	}
	fsys, err := fat.Open(img, fattest.VolumeBytes)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := fsys.Stat("slot.json"); err != nil || !info.ModTime().Equal(stamp) || info.Size() != 1 {
		t.Errorf("Stat after Rewrite without WithTime = %v (size %d), %v, want time %v, size 1", info.ModTime(), info.Size(), err, stamp)
	}
}

func TestRewriteInPartition(t *testing.T) {
	const offset = 1 << 20
	path := t.TempDir() + "/disk.img"
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(offset + fattest.VolumeBytes + offset); err != nil {
		t.Fatal(err)
	}
	writeTestVolume(t, io.NewOffsetWriter(f, offset), fat.WithHiddenSectors(offset/512))
	if err := fat.Rewrite(fat.NewSection(f, offset, fattest.VolumeBytes), fattest.VolumeBytes, "slot.json", []byte("partition")); err != nil {
		t.Fatalf("Rewrite: %v", err)
	}
	fsys, err := fat.Open(io.NewSectionReader(f, offset, fattest.VolumeBytes), fattest.VolumeBytes)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if b, err := fsys.ReadFile("slot.json"); err != nil || string(b) != "partition" {
		t.Errorf("ReadFile(slot.json) = %q, %v, want partition", b, err)
	}
	if out := fattest.Mtools(t, "mtype", "-i", fmt.Sprintf("%s@@%d", path, offset), "::slot.json"); string(out) != "partition" {
		t.Errorf("mtype slot.json = %q, want partition", out)
	}
	if info := string(fattest.Mtools(t, "minfo", "-i", fmt.Sprintf("%s@@%d", path, offset), "::")); !strings.Contains(info, "hidden sectors: 2048") {
		t.Errorf("minfo lacks hidden sectors: 2048:\n%s", info)
	}
	// Nothing outside the partition was touched.
	outside := make([]byte, offset)
	for _, at := range []int64{0, offset + fattest.VolumeBytes} {
		if _, err := f.ReadAt(outside, at); err != nil || !bytes.Equal(outside, make([]byte, offset)) {
			t.Errorf("bytes at %d..%d changed (%v)", at, at+offset, err)
		}
	}
}

func TestRewriteErrors(t *testing.T) {
	img := make(fattest.Image, fattest.VolumeBytes)
	writeTestVolume(t, img)
	for _, tc := range []struct {
		path string
		data []byte
		want string
	}{
		{"nope.json", nil, "file does not exist"},
		{"overlays", nil, "is a directory"},
		{"/slot.json", nil, "invalid argument"},
		{"slot.json", make([]byte, fattest.VolumeBytes), "free clusters"},
	} {
		if err := fat.Rewrite(img, fattest.VolumeBytes, tc.path, tc.data); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Rewrite(%q, %d bytes) = %v, want error containing %q", tc.path, len(tc.data), err, tc.want)
		}
	}
}

// crashAfter fails every write after the first n, like a machine that
// loses power.
type crashAfter struct {
	fattest.Image
	n int
}

var errCrash = errors.New("power lost")

func (c *crashAfter) WriteAt(p []byte, off int64) (int, error) {
	if c.n == 0 {
		return 0, errCrash
	}
	c.n--
	return c.Image.WriteAt(p, off)
}

func (c *crashAfter) Sync() error { return nil }

func TestRewriteCrash(t *testing.T) {
	base := make(fattest.Image, fattest.VolumeBytes)
	writeTestVolume(t, base)
	old := `{"active":"a","trial":"","tries_left":0}`
	next := string(fattest.Pattern("new slot", 5000)) // several clusters
	for n := 0; ; n++ {
		disk := &crashAfter{Image: append(fattest.Image(nil), base...), n: n}
		err := fat.Rewrite(disk, fattest.VolumeBytes, "slot.json", []byte(next))
		if err != nil && !errors.Is(err, errCrash) {
			t.Fatalf("Rewrite crashing after %d writes: %v", n, err)
		}
		fsys, oerr := fat.Open(disk.Image, fattest.VolumeBytes)
		if oerr != nil {
			t.Fatalf("Open after crash at write %d: %v", n, oerr)
		}
		b, rerr := fsys.ReadFile("slot.json")
		if rerr != nil || (string(b) != old && string(b) != next) {
			t.Fatalf("after crash at write %d: slot.json = %d bytes, %v; want the old or the new content", n, len(b), rerr)
		}
		if err == nil {
			if string(b) != next {
				t.Fatalf("Rewrite succeeded, slot.json has the old content")
			}
			break
		}
	}
}
