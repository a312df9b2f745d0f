// Package image opens an ingot disk image, an image file on the host or
// the disk an appliance boots from, and finds its parts by the names of
// package layout: a GPT partition, the FAT boot filesystem, a slot's root
// partition and the boot files a slot boots with. The update client, the
// host boot loader, flash and the agent all find partitions through it.
package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/ingotdev/ingot/packer/format/fat"
	"github.com/ingotdev/ingot/packer/format/gpt"
	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/format/piboot"
	"github.com/ingotdev/ingot/packer/format/slot"
	"github.com/ingotdev/ingot/packer/format/squashfs"
)

// Image is a disk image with a GPT.
type Image struct {
	r    io.ReaderAt
	name string // for errors: the path, or what the caller named r
	// close closes what Open opened; nil after New.
	close func() error
	// rw is the file OpenRW opened, for RewriteBoot; nil otherwise.
	rw *os.File
	// Table is the image's partition table.
	Table gpt.Table
}

// Open opens the image file or disk device at path read-only.
func Open(path string) (*Image, error) { return open(path, os.O_RDONLY) }

// OpenRW opens the image at path for reading and writing, so RewriteBoot
// can persist a file on its boot partition.
func OpenRW(path string) (*Image, error) { return open(path, os.O_RDWR) }

func open(path string, flag int) (*Image, error) {
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	// A seek to the end is the size of a regular file and of a block
	// device alike (Stat reports 0 for a device).
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("image: %s: size: %w", path, err)
	}
	im, err := New(f, size, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	im.close = f.Close
	if flag == os.O_RDWR {
		im.rw = f
	}
	return im, nil
}

// New reads the GPT of the sizeBytes-long image in r; name says which
// image it is in errors. Without a GPT it fails.
func New(r io.ReaderAt, sizeBytes int64, name string) (*Image, error) {
	t, err := gpt.Read(r, sizeBytes)
	if err != nil {
		return nil, fmt.Errorf("image: %s: %w", name, err)
	}
	return &Image{r: r, name: name, Table: t}, nil
}

// Close closes the file Open opened; after New it does nothing.
func (im *Image) Close() error {
	if im.close == nil {
		return nil
	}
	return im.close()
}

// Partition returns the partition called name in Table (a pointer into
// it, so a caller that rewrites the table can change it in place).
func (im *Image) Partition(name string) (*gpt.Partition, error) {
	for i := range im.Table.Partitions {
		if im.Table.Partitions[i].Name == name {
			return &im.Table.Partitions[i], nil
		}
	}
	return nil, fmt.Errorf("image: %s: no %q partition in the GPT", im.name, name)
}

// section returns the bytes of the partition called name.
func (im *Image) section(name string) (*io.SectionReader, error) {
	p, err := im.Partition(name)
	if err != nil {
		return nil, err
	}
	return io.NewSectionReader(im.r, p.OffsetBytes(), p.SizeBytes()), nil
}

// Root returns the whole partition of slot n's root.
func (im *Image) Root(n slot.Name) (*io.SectionReader, error) {
	if !n.Valid() {
		return nil, fmt.Errorf("image: %s: slot %q is not a or b", im.name, n)
	}
	return im.section(n.PartitionLabel())
}

// RootSquashfs returns the root squashfs in slot n's partition, up to its
// padded end (squashfs.Section): what an update sends and a release
// stores.
func (im *Image) RootSquashfs(n slot.Name) (*io.SectionReader, error) {
	part, err := im.Root(n)
	if err != nil {
		return nil, err
	}
	sr, err := squashfs.Section(part, part.Size())
	if err != nil {
		return nil, fmt.Errorf("image: %s: root partition %s: %w", im.name, n.PartitionLabel(), err)
	}
	return sr, nil
}

// CheckRoot checks that slot n's partition holds a complete root: a
// squashfs superblock that squashfs.ParseWithin accepts for the
// partition's size (an interrupted update leaves it zeroed).
func (im *Image) CheckRoot(n slot.Name) error {
	if err := im.checkRoot(n); err != nil {
		return fmt.Errorf("image: %s: %w", im.name, err)
	}
	return nil
}

// CheckSlot checks that slot n can boot: CheckRoot, and each file it boots
// with (SlotFiles) is on the boot partition.
func (im *Image) CheckSlot(n slot.Name) error {
	if err := im.checkSlot(n); err != nil {
		return fmt.Errorf("image: %s: %w", im.name, err)
	}
	return nil
}

// checkRoot is CheckRoot; its errors do not name the image.
func (im *Image) checkRoot(n slot.Name) error {
	if !n.Valid() {
		return fmt.Errorf("slot %q is not a or b", n)
	}
	part, err := im.Root(n)
	if err != nil {
		return err
	}
	b := make([]byte, squashfs.SuperblockBytes)
	if _, err := part.ReadAt(b, 0); err != nil {
		return fmt.Errorf("%s: superblock: %w", n.PartitionLabel(), err)
	}
	if _, err := squashfs.ParseWithin(b, part.Size()); err != nil {
		return fmt.Errorf("%s: no valid root: %w", n.PartitionLabel(), err)
	}
	return nil
}

// checkSlot is CheckSlot; its errors do not name the image.
func (im *Image) checkSlot(n slot.Name) error {
	if err := im.checkRoot(n); err != nil {
		return err
	}
	bootFS, err := im.Boot()
	if err != nil {
		return err
	}
	paths, err := SlotFiles(bootFS, n)
	if err != nil {
		return fmt.Errorf("boot partition: %w", err)
	}
	for _, p := range paths {
		if _, err := fs.Stat(bootFS, p); err != nil {
			return fmt.Errorf("boot partition: slot %s: %w", n, err)
		}
	}
	return nil
}

// Decide reads slot.json from the boot partition and applies the boot
// rules (slot.State.Decide). When slot.json cannot be read or parsed, the
// slot is chosen by slot.Recover with CheckSlot, and the decision's
// Recovered says so; an error means that no slot can boot. Every loader
// that chooses the slot itself (not a Raspberry Pi's firmware) decides
// through here, so none boots a slot from unreadable state without
// checking it.
func (im *Image) Decide() (slot.Decision, error) {
	bootFS, err := im.Boot()
	if err != nil {
		return slot.Decision{}, err
	}
	data, err := bootFS.ReadFile(layout.SlotFile)
	var state slot.State
	if err == nil {
		state, err = slot.Parse(data)
	}
	if err != nil {
		d, rerr := slot.Recover(err, im.checkSlot)
		if rerr != nil {
			return slot.Decision{}, fmt.Errorf("image: %s: %w", im.name, rerr)
		}
		return d, nil
	}
	return state.Decide(), nil
}

// Boot opens the FAT filesystem of the boot partition.
func (im *Image) Boot() (*fat.FS, error) {
	sr, err := im.section(layout.BootPartition)
	if err != nil {
		return nil, err
	}
	fsys, err := fat.Open(sr, sr.Size())
	if err != nil {
		return nil, fmt.Errorf("image: %s: boot partition: %w", im.name, err)
	}
	return fsys, nil
}

// Info reads layout.InfoFile from the boot partition: what the image was
// built as.
func (im *Image) Info() (layout.Info, error) {
	var info layout.Info
	bootFS, err := im.Boot()
	if err != nil {
		return info, err
	}
	data, err := bootFS.ReadFile(layout.InfoFile)
	if err == nil {
		err = json.Unmarshal(data, &info)
	}
	if err != nil {
		return info, fmt.Errorf("image: %s: %s: %w", im.name, layout.InfoFile, err)
	}
	return info, nil
}

// RewriteBoot replaces the existing file name on the boot partition with
// data in place (fat.Rewrite, which syncs between its steps and at the
// end, so a power cut leaves the old or the new content). The image must
// have been opened with OpenRW.
func (im *Image) RewriteBoot(name string, data []byte) error {
	if im.rw == nil {
		return fmt.Errorf("image: %s: rewrite %s: not opened with OpenRW", im.name, name)
	}
	p, err := im.Partition(layout.BootPartition)
	if err != nil {
		return err
	}
	if err := fat.Rewrite(fat.NewSection(im.rw, p.OffsetBytes(), p.SizeBytes()), p.SizeBytes(), name, data); err != nil {
		return fmt.Errorf("image: %s: boot partition: %w", im.name, err)
	}
	return nil
}

// BootFiles reads the files slot n boots with (SlotFiles) from the boot
// partition.
func (im *Image) BootFiles(n slot.Name) (map[string][]byte, error) {
	bootFS, err := im.Boot()
	if err != nil {
		return nil, err
	}
	paths, err := SlotFiles(bootFS, n)
	if err != nil {
		return nil, fmt.Errorf("image: %s: boot partition: %w", im.name, err)
	}
	out := map[string][]byte{}
	for name, p := range paths {
		if out[name], err = bootFS.ReadFile(p); err != nil {
			return nil, fmt.Errorf("image: %s: boot partition: %w", im.name, err)
		}
	}
	return out, nil
}

// SlotFiles maps the names of the files slot n boots with to their paths
// in fsys, a boot filesystem (an image's, or the mounted boot partition):
// the kernel, the initramfs and the command line, each the slot's own
// copy (slot.Name.BootFile) or, on an image written before slots had
// their own, the shared file; on a Raspberry Pi (a boot filesystem with
// piboot.ConfigFile), the kernel, the command line, the device trees and
// the overlays in the slot's directory, named relative to it, and no
// initramfs. A path may name a missing file on a broken image.
func SlotFiles(fsys fs.FS, n slot.Name) (map[string]string, error) {
	if !n.Valid() {
		return nil, fmt.Errorf("slot %q is not a or b", n)
	}
	out := map[string]string{}
	if _, err := fs.Stat(fsys, piboot.ConfigFile); err == nil {
		prefix := piboot.PrefixDir(n)
		trees, err := layout.DeviceTreeFiles(fsys, prefix)
		for _, name := range append([]string{layout.KernelFile, layout.CmdlineFile}, trees...) {
			out[name] = prefix + name
		}
		return out, err
	}
	for _, name := range []string{layout.KernelFile, layout.InitrdFile, layout.CmdlineFile} {
		out[name] = n.BootFile(name)
		if _, err := fs.Stat(fsys, out[name]); errors.Is(err, fs.ErrNotExist) {
			out[name] = name
		}
	}
	return out, nil
}
