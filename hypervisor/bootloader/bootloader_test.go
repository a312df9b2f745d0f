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
	"github.com/ingotdev/ingot/packer/format/image"
	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/format/piboot"
	"github.com/ingotdev/ingot/packer/format/slot"
	"github.com/ingotdev/ingot/packer/rootfs"
)

// writeImage packs a small image of build v1 whose kernel and initramfs
// are marker strings.
func writeImage(t *testing.T) string {
	t.Helper()
	return writeImageBuild(t, "v1")
}

// writeImageBuild is writeImage for build id.
func writeImageBuild(t *testing.T, id string) string {
	t.Helper()
	tree := rootfs.New(1700000000)
	if err := tree.Add("/init", rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o755, Content: rootfs.Bytes("x")}); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "x.img")
	_, err := disk.Write(context.Background(), img, disk.Spec{
		Name: "bl", Target: "vm-amd64", Arch: "amd64", BuildID: id,
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

// TestBootNamesTheSlotsBuild updates slot b with the boot files of build
// v2 the way push and the agent do (the files that differ, staged for b),
// and checks that each boot names the build of the slot it boots, while
// ingot.json still describes the image as built (v1): the boot of b is
// not reported as v1.
func TestBootNamesTheSlotsBuild(t *testing.T) {
	img := writeImage(t)
	if b, _, _ := prepare(t, img); b.Slot != slot.A || b.BuildID != "v1" {
		t.Fatalf("first boot: slot %s build %q, want a, v1", b.Slot, b.BuildID)
	}
	next, err := image.Open(writeImageBuild(t, "v2"))
	if err != nil {
		t.Fatal(err)
	}
	newFiles, err := next.BootFiles(slot.B)
	next.Close()
	if err != nil {
		t.Fatal(err)
	}
	old, err := image.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	oldFiles, err := old.BootFiles(slot.B)
	old.Close()
	if err != nil {
		t.Fatal(err)
	}
	withBootMounted(t, img, func(bootDir string) {
		for name, data := range newFiles {
			if bytes.Equal(data, oldFiles[name]) {
				continue
			}
			sum := sha256.Sum256(data)
			if _, err := update.StageBootFile(context.Background(), bootDir, name, slot.B, bytes.NewReader(data), int64(len(data)), hex.EncodeToString(sum[:])); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := update.ApplyBootFiles(bootDir); err != nil {
			t.Fatal(err)
		}
		if _, err := update.Commit(bootDir, slot.B); err != nil {
			t.Fatal(err)
		}
	})
	b, _, _ := prepare(t, img)
	if b.Slot != slot.B || b.BuildID != "v2" || b.Info.BuildID != "v1" {
		t.Errorf("boot after the update: slot %s build %q (ingot.json %q), want b, v2 (v1)", b.Slot, b.BuildID, b.Info.BuildID)
	}
	// The trial was never confirmed: a boots again, and says v1.
	if b, _, _ := prepare(t, img); b.Slot != slot.A || b.BuildID != "v1" {
		t.Errorf("boot after the failed trial: slot %s build %q, want a, v1", b.Slot, b.BuildID)
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

// copyRoot copies slot from's root partition over slot to's, as a
// completed update into to leaves it.
func copyRoot(t *testing.T, img string, from, to slot.Name) {
	t.Helper()
	im, err := image.OpenRW(img)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	src, err := im.Root(from)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := im.Partition(to.PartitionLabel())
	if err != nil {
		t.Fatal(err)
	}
	fd, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	if _, err := io.Copy(io.NewOffsetWriter(fd, dst.OffsetBytes()), src); err != nil {
		t.Fatal(err)
	}
}

// zeroRoot zeroes the first 4 KiB of slot n's root partition, superblock
// included, as an update into n does until its last write.
func zeroRoot(t *testing.T, img string, n slot.Name) {
	t.Helper()
	im, err := image.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	p, err := im.Partition(n.PartitionLabel())
	im.Close()
	if err != nil {
		t.Fatal(err)
	}
	fd, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	if _, err := fd.WriteAt(make([]byte, 4096), p.OffsetBytes()); err != nil {
		t.Fatal(err)
	}
}

// tearState replaces slot.json with data, as a torn write leaves it.
func tearState(t *testing.T, img string, data []byte) {
	t.Helper()
	im, err := image.OpenRW(img)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if err := im.RewriteBoot(layout.SlotFile, data); err != nil {
		t.Fatal(err)
	}
}

// readState reads slot.json back from img.
func readState(t *testing.T, img string) (slot.State, error) {
	t.Helper()
	im, err := image.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	bootFS, err := im.Boot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := bootFS.ReadFile(layout.SlotFile)
	if err != nil {
		return slot.State{}, err
	}
	return slot.Parse(data)
}

// TestUnreadableStateBootsAValidRoot performs issue 12's attack 4: an
// update into slot a failed half-way (its superblock zeroed) while b runs,
// and slot.json was torn. The loader must boot b, whose root is valid,
// not a, and say why; the state it writes back names b, so the next boot
// needs no recovery. The old loader booted a, which cannot mount its root,
// on every start.
func TestUnreadableStateBootsAValidRoot(t *testing.T) {
	garbage := bytes.Repeat([]byte{0xa5, 0x00, '{'}, slot.FileBytes/3+1)[:slot.FileBytes]
	torn := []byte(`{"active":"b","tri`)
	tests := []struct {
		name    string
		state   []byte
		zeroed  []slot.Name // roots without a superblock
		boot    slot.Name
		failed  slot.Name // the slot the recorded state names as unbootable
		wantErr []string
	}{
		{"a zeroed, garbage state", garbage, []slot.Name{slot.A}, slot.B, slot.A, nil},
		{"a zeroed, torn state", torn, []slot.Name{slot.A}, slot.B, slot.A, nil},
		{"both valid, torn state", torn, nil, slot.A, "", nil},
		{"both zeroed, garbage state", garbage, []slot.Name{slot.A, slot.B}, "", "", []string{
			"slot.json is unreadable", "slot a: ", "slot b: ", "root-a: no valid root", "root-b: no valid root", "magic"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := writeImage(t)
			copyRoot(t, img, slot.A, slot.B) // b holds a complete root, as after an update
			for _, n := range tt.zeroed {
				zeroRoot(t, img, n)
			}
			tearState(t, img, tt.state)

			b, err := Prepare(img, t.TempDir())
			if err == nil {
				t.Logf("slot %s: %s", b.Slot, b.Recovered)
			}
			if tt.wantErr != nil {
				t.Logf("error: %v", err)
				for _, w := range tt.wantErr {
					if err == nil || !strings.Contains(err.Error(), w) {
						t.Errorf("Prepare() = %v, want an error containing %q", err, w)
					}
				}
				if _, err := readState(t, img); err == nil {
					t.Error("Prepare wrote a slot.json although no slot can boot")
				}
				return
			}
			if err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			if b.Slot != tt.boot || b.Trial {
				t.Fatalf("Prepare() boots slot %s (trial %v), want %s, the first slot whose root is valid", b.Slot, b.Trial, tt.boot)
			}
			if !strings.Contains(b.Recovered, "slot.json unreadable, booted slot "+string(tt.boot)) {
				t.Errorf("Prepare().Recovered = %q, want it to say slot.json is unreadable and slot %s booted", b.Recovered, tt.boot)
			}
			if tt.failed != "" && !strings.Contains(b.Recovered, "root-"+string(tt.failed)+": no valid root") {
				t.Errorf("Prepare().Recovered = %q, want slot %s's reason", b.Recovered, tt.failed)
			}
			if !strings.Contains(b.Cmdline, layout.ParamSlot+"="+string(tt.boot)) || strings.Contains(b.Cmdline, layout.ParamTrial) {
				t.Errorf("cmdline %q, want slot %s and no trial", b.Cmdline, tt.boot)
			}
			s, err := readState(t, img)
			if err != nil || s.Active != tt.boot || s.Trial != "" || s.LastFailed == nil || s.LastFailed.Slot != tt.failed || !strings.Contains(s.LastFailed.Reason, "unreadable") {
				t.Errorf("slot.json after Prepare = %+v, %v; want %s active, no trial, last_failed naming %q and the reason", s, err, tt.boot, tt.failed)
			}
			// The state is readable again: the next boot is an ordinary one.
			b, _, _ = prepare(t, img)
			if b.Slot != tt.boot || b.Recovered != "" {
				t.Errorf("next Prepare() boots %s, recovered %q; want %s with nothing to recover", b.Slot, b.Recovered, tt.boot)
			}
		})
	}
}

// TestMissingStateStillBoots: without slot.json there is nothing to
// rewrite in place; the loader boots the valid slot all the same and says
// that the choice was not written.
func TestMissingStateStillBoots(t *testing.T) {
	img := writeImage(t)
	withBootMounted(t, img, func(bootDir string) {
		if err := os.Remove(filepath.Join(bootDir, layout.SlotFile)); err != nil {
			t.Fatal(err)
		}
	})
	b, _, _ := prepare(t, img)
	if b.Slot != slot.A || !strings.Contains(b.Recovered, "slot.json unreadable, booted slot a") || !strings.Contains(b.Recovered, "not written to slot.json") {
		t.Errorf("Prepare() without slot.json = slot %s, recovered %q; want a, saying the state was unreadable and not written", b.Slot, b.Recovered)
	}
}
