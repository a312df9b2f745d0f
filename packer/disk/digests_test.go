package disk_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"testing"

	"github.com/ingotdev/ingot/packer/disk"
	"github.com/ingotdev/ingot/packer/fat"
	"github.com/ingotdev/ingot/packer/format/gpt"
	"github.com/ingotdev/ingot/packer/format/image"
	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/format/slot"
	"github.com/ingotdev/ingot/packer/rootfs"
)

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// buildDigests writes an image of spec (a tiny root added) and returns
// its boot partition's digest record and the files each slot boots with.
func buildDigests(t *testing.T, spec disk.Spec) (layout.Digests, *image.Image) {
	t.Helper()
	tree := rootfs.New(1700000000)
	if err := tree.Add("/init", rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o755, Content: rootfs.Bytes("x")}); err != nil {
		t.Fatal(err)
	}
	spec.Name, spec.Target, spec.Arch, spec.BuildID = "dg", "vm-amd64", "amd64", "v1"
	spec.Root, spec.ModTime, spec.BootBytes, spec.RootSlotBytes = tree, 1700000000, 40<<20, 4<<20
	path := filepath.Join(t.TempDir(), "x.img")
	if _, err := disk.Write(context.Background(), path, spec); err != nil {
		t.Fatal(err)
	}
	im, err := image.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { im.Close() })
	bootFS, err := im.Boot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := bootFS.ReadFile(layout.DigestsFile)
	if err != nil {
		t.Fatalf("built image has no %s: %v", layout.DigestsFile, err)
	}
	d, err := layout.ParseDigests(data)
	if err != nil {
		t.Fatal(err)
	}
	return d, im
}

// checkDigests checks that d vouches for exactly the files both slots of
// im boot with, each with its true size and SHA-256.
func checkDigests(t *testing.T, d layout.Digests, im *image.Image) {
	t.Helper()
	bootFS, err := im.Boot()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]layout.FileDigest{}
	for _, sl := range []slot.Name{slot.A, slot.B} {
		paths, err := image.SlotFiles(bootFS, sl)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range paths {
			b, err := bootFS.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			want[p] = layout.FileDigest{Size: int64(len(b)), SHA256: hexSum(b)}
		}
	}
	if len(d.Files) != len(want) {
		t.Errorf("%s has %d entries, want %d: %v", layout.DigestsFile, len(d.Files), len(want), d.Files)
	}
	for p, fd := range want {
		if d.Files[p] != fd {
			t.Errorf("%s[%s] = %+v, want %+v", layout.DigestsFile, p, d.Files[p], fd)
		}
	}
}

// TestBootDigests: a VM image records the digests of both slots' kernel,
// initramfs and command line, so the first update hashes nothing.
func TestBootDigests(t *testing.T) {
	d, im := buildDigests(t, disk.Spec{Kernel: []byte("kernel v1"), Initrd: []byte("initrd v1"), Cmdline: "console=ttyS0"})
	if len(d.Files) != 6 {
		t.Errorf("VM image: %d entries, want 6 (3 files × 2 slots): %v", len(d.Files), d.Files)
	}
	checkDigests(t, d, im)
}

// TestBootDigestsFirmware: an image whose boot files a firmware reads
// (the Pi's) records the files of each slot's directory and no others.
func TestBootDigestsFirmware(t *testing.T) {
	files := func(gpt.Table) ([]fat.File, error) {
		var fs []fat.File
		for _, sl := range []string{"a", "b"} {
			fs = append(fs,
				fat.BytesFile("slot-"+sl+"/"+layout.KernelFile, []byte("pi kernel")),
				fat.BytesFile("slot-"+sl+"/"+layout.CmdlineFile, []byte("root=x ingot.slot="+sl)),
				fat.BytesFile("slot-"+sl+"/bcm2711-rpi-4-b.dtb", []byte("tree")),
				fat.BytesFile("slot-"+sl+"/"+layout.OverlaysReadme, []byte("readme")),
				fat.BytesFile("slot-"+sl+"/overlays/vc4.dtbo", []byte("overlay")))
		}
		return append(fs, fat.BytesFile("config.txt", []byte("os_prefix=slot-a/\n")), fat.BytesFile("start4.elf", []byte("fw"))), nil
	}
	d, im := buildDigests(t, disk.Spec{BootFiles: files})
	if len(d.Files) != 10 {
		t.Errorf("Pi image: %d entries, want 10 (5 files × 2 slots): %v", len(d.Files), d.Files)
	}
	checkDigests(t, d, im)
}
