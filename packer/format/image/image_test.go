package image_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/packer/disk"
	"github.com/ingotdev/ingot/packer/format/image"
	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/format/slot"
	"github.com/ingotdev/ingot/packer/rootfs"
)

func writeImage(t *testing.T) string {
	t.Helper()
	tree := rootfs.New(1700000000)
	if err := tree.Add("/init", rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o755, Content: rootfs.Bytes("x")}); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "x.img")
	if _, err := disk.Write(context.Background(), img, disk.Spec{
		Name: "im", Target: "vm-amd64", Arch: "amd64", BuildID: "v1",
		Kernel: []byte("kernel v1"), Initrd: []byte("initrd v1"), Cmdline: "console=ttyS0",
		Root: tree, ModTime: 1700000000, BootBytes: 40 << 20, RootSlotBytes: 4 << 20,
	}); err != nil {
		t.Fatal(err)
	}
	return img
}

func TestOpen(t *testing.T) {
	path := writeImage(t)
	im, err := image.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	for _, name := range []string{layout.BootPartition, layout.RootAPartition, layout.RootBPartition} {
		if p, err := im.Partition(name); err != nil || p.Name != name {
			t.Errorf("Partition(%q) = %+v, %v", name, p, err)
		}
	}
	if _, err := im.Partition("nope"); err == nil || !strings.Contains(err.Error(), `no "nope" partition`) {
		t.Errorf("Partition(nope) = %v, want a missing-partition error", err)
	}
	if r, err := im.Root(slot.B); err != nil || r.Size() != 4<<20 {
		t.Errorf("Root(b) = %v, %v; want the 4 MiB partition", r, err)
	}
	if _, err := im.Root("c"); err == nil {
		t.Error("Root(c) succeeded")
	}
	files, err := im.BootFiles(slot.B)
	if err != nil {
		t.Fatal(err)
	}
	if string(files[layout.KernelFile]) != "kernel v1" || string(files[layout.InitrdFile]) != "initrd v1" || !strings.Contains(string(files[layout.CmdlineFile]), "console=ttyS0") {
		t.Errorf("BootFiles(b) = %q", files)
	}
	if err := im.RewriteBoot(layout.SlotFile, slot.Initial().Marshal()); err == nil || !strings.Contains(err.Error(), "OpenRW") {
		t.Errorf("RewriteBoot on a read-only image = %v, want an error", err)
	}
}

func TestRewriteBoot(t *testing.T) {
	path := writeImage(t)
	im, err := image.OpenRW(path)
	if err != nil {
		t.Fatal(err)
	}
	want := slot.State{Active: slot.B}.Marshal()
	if err := im.RewriteBoot(layout.SlotFile, want); err != nil {
		t.Fatal(err)
	}
	im.Close()
	im, err = image.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	bootFS, err := im.Boot()
	if err != nil {
		t.Fatal(err)
	}
	got, err := bootFS.ReadFile(layout.SlotFile)
	if err != nil || string(got) != string(want) {
		t.Errorf("slot.json after RewriteBoot = %q, %v; want %q", got, err, want)
	}
}

// TestDecide: a new image's slot b holds no root; Decide follows a
// readable slot.json, and with an unreadable one picks a slot by CheckSlot.
func TestDecide(t *testing.T) {
	path := writeImage(t)
	im, err := image.OpenRW(path)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if err := im.CheckSlot(slot.A); err != nil {
		t.Errorf("CheckSlot(a) on a new image = %v", err)
	}
	if err := im.CheckSlot(slot.B); err == nil || !strings.Contains(err.Error(), "root-b: no valid root: squashfs: offset 0: magic") || !strings.Contains(err.Error(), path) {
		t.Errorf("CheckSlot(b) on a new image = %v, want the image, the partition and the magic", err)
	}
	if err := im.CheckRoot("c"); err == nil {
		t.Error("CheckRoot(c) succeeded")
	}
	d, err := im.Decide()
	if err != nil || d.Boot != slot.A || d.Changed || d.Recovered != "" {
		t.Errorf("Decide() on a new image = %+v, %v; want a, unchanged", d, err)
	}
	// slot.json says b, but it is readable: the rules follow it (the
	// loaders check roots only when the state cannot be trusted).
	if err := im.RewriteBoot(layout.SlotFile, slot.State{Active: slot.B}.Marshal()); err != nil {
		t.Fatal(err)
	}
	if d, err := im.Decide(); err != nil || d.Boot != slot.B || d.Recovered != "" {
		t.Errorf("Decide() with b active = %+v, %v; want b", d, err)
	}
	if err := im.RewriteBoot(layout.SlotFile, []byte("{\"active\":")); err != nil {
		t.Fatal(err)
	}
	d, err = im.Decide()
	if err != nil || d.Boot != slot.A || !strings.Contains(d.Recovered, "booted slot a") || d.Next.Active != slot.A {
		t.Errorf("Decide() with a torn slot.json = %+v, %v; want a, recovered", d, err)
	}
}
