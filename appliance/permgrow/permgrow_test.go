package permgrow

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestExt4Blocks reads the size of filesystems mke2fs made, with and
// without the 64bit feature, and refuses what is not ext4.
func TestExt4Blocks(t *testing.T) {
	for _, c := range []struct {
		name       string
		args       []string
		blocks     uint64
		blockBytes uint64
	}{
		{"4k", []string{"-b", "4096", "-O", "^64bit"}, 16384, 4096},
		{"4k 64bit", []string{"-b", "4096", "-O", "64bit"}, 16384, 4096},
		{"1k", []string{"-b", "1024", "-O", "^64bit"}, 65536, 1024},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "fs.img")
			args := append([]string{"-q", "-F", "-t", "ext4"}, c.args...)
			args = append(args, p, "64M")
			if out, err := exec.Command("mke2fs", args...).CombinedOutput(); err != nil {
				t.Fatalf("mke2fs %v: %v\n%s", args, err, out)
			}
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			blocks, size, err := ext4Blocks(f)
			if err != nil || blocks != c.blocks || size != c.blockBytes {
				t.Fatalf("ext4Blocks = %d blocks of %d, %v; want %d of %d", blocks, size, err, c.blocks, c.blockBytes)
			}
		})
	}
	p := filepath.Join(t.TempDir(), "zeros")
	if err := os.WriteFile(p, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, _, err := ext4Blocks(f); !errors.Is(err, errNotExt4) {
		t.Fatalf("ext4Blocks(zeros) = %v, want errNotExt4", err)
	}
}
