package bootloader

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/appliance/update"
	"github.com/ingotdev/ingot/packer/disk"
	"github.com/ingotdev/ingot/packer/fat"
	fatformat "github.com/ingotdev/ingot/packer/format/fat"
	"github.com/ingotdev/ingot/packer/format/gpt"
	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/format/piboot"
	"github.com/ingotdev/ingot/packer/format/slot"
	"github.com/ingotdev/ingot/packer/rootfs"
)

// writeImage packs a small image whose kernel and initramfs are marker
// strings.
func writeImage(t *testing.T) string {
	t.Helper()
	tree := rootfs.New(1700000000)
	if err := tree.Add("/init", rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o755, Content: rootfs.Bytes("x")}); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "x.img")
	_, err := disk.Write(context.Background(), img, disk.Spec{
		Name: "bl", Target: "vm-amd64", Arch: "amd64", BuildID: "v1",
		Kernel: []byte("kernel v1"), Initrd: []byte("initrd v1"), Cmdline: "console=ttyS0",
		Root: tree, ModTime: 1700000000,
		BootBytes: 40 << 20, RootSlotBytes: 4 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func prepare(t *testing.T, img string) (*Boot, string, string) {
	t.Helper()
	dir := t.TempDir()
	b, err := Prepare(img, dir)
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	k, _ := os.ReadFile(b.Kernel)
	i, _ := os.ReadFile(b.Initrd)
	return b, string(k), string(i)
}

// TestKernelBelongsToItsSlot installs a new kernel with an update for slot
// b the way the agent does (on the mounted boot partition), and checks
// that the trial boot of b gets it while the fallback to a, after the
// trial fails, gets the old kernel back: a bad kernel cannot outlive its
// trial.
func TestKernelBelongsToItsSlot(t *testing.T) {
	img := writeImage(t)
	b, k, i := prepare(t, img)
	if b.Slot != slot.A || b.Trial || k != "kernel v1" || i != "initrd v1" {
		t.Fatalf("first boot: slot %s trial %v kernel %q initrd %q, want a, false, v1, v1", b.Slot, b.Trial, k, i)
	}
	if !strings.Contains(b.Cmdline, "console=ttyS0") || !strings.Contains(b.Cmdline, layout.ParamSlot+"=a") {
		t.Errorf("cmdline %q lacks the packer's words or the slot", b.Cmdline)
	}

	withBootMounted(t, img, func(bootDir string) {
		kernel := []byte("kernel v2")
		sum := sha256.Sum256(kernel)
		if _, err := update.StageBootFile(context.Background(), bootDir, layout.KernelFile, slot.B, bytes.NewReader(kernel), int64(len(kernel)), hex.EncodeToString(sum[:])); err != nil {
			t.Fatal(err)
		}
		if _, err := update.ApplyBootFiles(bootDir); err != nil {
			t.Fatal(err)
		}
		if _, err := update.Commit(bootDir, slot.B); err != nil {
			t.Fatal(err)
		}
	})

	b, k, i = prepare(t, img)
	if b.Slot != slot.B || !b.Trial || k != "kernel v2" || i != "initrd v1" {
		t.Fatalf("trial boot: slot %s trial %v kernel %q initrd %q, want b, true, kernel v2, initrd v1", b.Slot, b.Trial, k, i)
	}
	// The trial never confirmed: the next boot falls back to a, with a's
	// kernel.
	b, k, _ = prepare(t, img)
	if b.Slot != slot.A || b.Trial || k != "kernel v1" {
		t.Fatalf("boot after a failed trial: slot %s trial %v kernel %q, want a, false, kernel v1", b.Slot, b.Trial, k)
	}
}

// TestSharedBootFilesStillBoot covers images written before slots had
// their own kernels: the boot loader falls back to the shared names.
func TestSharedBootFilesStillBoot(t *testing.T) {
	img := writeImage(t)
	withBootMounted(t, img, func(bootDir string) {
		for _, name := range []string{layout.KernelFile, layout.InitrdFile, layout.CmdlineFile} {
			for _, sl := range []slot.Name{slot.A, slot.B} {
				old := filepath.Join(bootDir, sl.BootFile(name))
				if sl == "a" {
					if err := os.Rename(old, filepath.Join(bootDir, name)); err != nil {
						t.Fatal(err)
					}
					continue
				}
				if err := os.Remove(old); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
	b, k, i := prepare(t, img)
	if b.Slot != slot.A || k != "kernel v1" || i != "initrd v1" || !strings.Contains(b.Cmdline, "console=ttyS0") {
		t.Errorf("boot from shared files: slot %s kernel %q initrd %q cmdline %q", b.Slot, k, i, b.Cmdline)
	}
}

// withBootMounted copies the files of img's boot partition into a
// directory, runs f on it as the appliance works on the mounted partition,
// and writes the directory back as the partition's FAT file system (this
// host's kernel may lack vfat, so the test does not mount).
func withBootMounted(t *testing.T, img string, f func(dir string)) {
	t.Helper()
	fd, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	st, _ := fd.Stat()
	table, err := gpt.Read(fd, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	p := table.Partitions[0]
	section := fatformat.NewSection(fd, p.OffsetBytes(), p.SizeBytes())
	bootFS, err := fatformat.Open(section, section.Size())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	entries, err := fs.ReadDir(bootFS, ".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := fs.ReadFile(bootFS, e.Name())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f(dir)
	entries, err = os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []fat.File
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, fat.BytesFile(e.Name(), data))
	}
	if err := fat.Write(context.Background(), io.NewOffsetWriter(fd, p.OffsetBytes()), p.SizeBytes(), files); err != nil {
		t.Fatal(err)
	}
}

// TestRaspberryPiImageRefused: a Pi image gets a clear refusal, and its
// slot.json is left as it was.
func TestRaspberryPiImageRefused(t *testing.T) {
	img := writeImage(t)
	withBootMounted(t, img, func(bootDir string) {
		if err := os.WriteFile(filepath.Join(bootDir, piboot.ConfigFile), []byte("os_prefix=slot-a/\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		// A trial pending: Prepare would spend its try.
		if err := slot.Save(bootDir, slot.State{Active: slot.A, Trial: slot.B, TriesLeft: 1}); err != nil {
			t.Fatal(err)
		}
	})
	before, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Prepare(img, t.TempDir()); err == nil || !strings.Contains(err.Error(), "is a Raspberry Pi image") || !strings.Contains(err.Error(), "ingot flash") {
		t.Errorf("Prepare(Pi image) = %v, want a refusal pointing at ingot flash", err)
	}
	if after, _ := os.ReadFile(img); !bytes.Equal(before, after) {
		t.Error("Prepare changed the Pi image")
	}
}
