// Package disk assembles a whole appliance image: a GPT disk with the FAT
// boot partition (kernel, initramfs, command line, slot state), two root
// slots of which A holds the squashfs root, and the ext4 perm partition.
// The output file appears only when everything succeeded; a failed build
// leaves no partial image behind.
package disk

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/renameio/v2"
	"github.com/ingotdev/ingot/packer/ext4"
	"github.com/ingotdev/ingot/packer/fat"
	"github.com/ingotdev/ingot/packer/format/bls"
	fatformat "github.com/ingotdev/ingot/packer/format/fat"
	"github.com/ingotdev/ingot/packer/format/gpt"
	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/format/mbr"
	"github.com/ingotdev/ingot/packer/format/piboot"
	"github.com/ingotdev/ingot/packer/format/slot"
	"github.com/ingotdev/ingot/packer/rootfs"
	"github.com/ingotdev/ingot/packer/squashfs"
)

// Default partition sizes. Images are sparse, so unused space costs no disk.
const (
	DefaultBootBytes     = 64 << 20
	DefaultRootSlotBytes = 256 << 20
	DefaultPermBytes     = 64 << 20
)

// Spec is everything an image is made of.
type Spec struct {
	Name    string // appliance name; seeds the deterministic GUIDs
	Target  string // e.g. vm-amd64
	Arch    string // GOARCH of the guest
	BuildID string
	Release uint64 // spec.Appliance.Release, recorded in layout.InfoFile
	Kernel  []byte // kernel image (vmlinuz)
	Initrd  []byte // compressed initramfs
	// EFILoader, when set, is the UEFI boot loader (systemd-boot) that the
	// packer puts at the removable-media path for Arch, with its
	// loader.conf and a Boot Loader Specification entry for the active
	// slot (package bls): the image then boots under any UEFI firmware,
	// without ingot's host-side loader.
	EFILoader []byte
	// Cmdline is the kernel command line before the partition arguments
	// the packer adds (console, panic behaviour, ...).
	Cmdline string
	Root    *rootfs.Tree
	// ModTime stamps every generated file (SOURCE_DATE_EPOCH semantics).
	ModTime int64

	BootBytes     int64
	RootSlotBytes int64
	// PermBytes is the size of the perm partition; 0 builds an image
	// without one.
	PermBytes int64
	// SquashfsOptions tune the root filesystem (compression, block size).
	SquashfsOptions []squashfs.Option

	// BootFiles, when set, makes the boot partition's operating-system
	// files for a firmware that boots the disk itself (the Raspberry Pi's)
	// instead of Kernel, Initrd and Cmdline for ingot's host-side loader.
	// It gets the partition table, whose GUIDs command lines name.
	// slot.json and ingot.json are added either way.
	BootFiles func(table gpt.Table) ([]fat.File, error)
	// HybridMBR mirrors the boot partition as the first MBR entry (FAT32,
	// bootable) beside the GPT, for boot ROMs that read only the MBR.
	// Linux still reads the GPT, so PARTUUIDs stay GPT GUIDs.
	HybridMBR bool
}

// Partition names, in disk order.
var partitionNames = []string{layout.BootPartition, layout.RootAPartition, layout.RootBPartition, layout.PermPartition}

// PartitionGUID returns the deterministic GUID of the named partition of
// appliance name.
func PartitionGUID(name, partition string) gpt.GUID {
	return gpt.GUIDFromName("ingot/partition/"+name, partition)
}

// Report describes a written image.
type Report struct {
	ImageBytes int64
	RootBytes  int64 // bytes of the root squashfs in slot A
	Partitions []gpt.Partition
}

// Write builds the image described by s into the file out.
func Write(ctx context.Context, out string, s Spec) (*Report, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	// renameio, the one atomic writer of host files: the image appears
	// under its name whole and synced, or not at all.
	tmp, err := renameio.NewPendingFile(out, renameio.WithTempDir(filepath.Dir(out)))
	if err != nil {
		return nil, fmt.Errorf("disk: %w", err)
	}
	defer tmp.Cleanup()
	rep, err := write(ctx, tmp.File, s)
	if err != nil {
		return nil, err
	}
	if err := tmp.CloseAtomicallyReplace(); err != nil {
		return nil, fmt.Errorf("disk: %s: %w", out, err)
	}
	return rep, nil
}

func (s *Spec) validate() error {
	switch {
	case s.Name == "":
		return fmt.Errorf("disk: spec: empty appliance name")
	case s.BootFiles == nil && len(s.Kernel) == 0:
		return fmt.Errorf("disk: spec: no kernel")
	case s.BootFiles == nil && len(s.Initrd) == 0:
		return fmt.Errorf("disk: spec: no initramfs")
	case s.Root == nil:
		return fmt.Errorf("disk: spec: no root tree")
	}
	if s.BootBytes == 0 {
		s.BootBytes = DefaultBootBytes
	}
	if s.RootSlotBytes == 0 {
		s.RootSlotBytes = DefaultRootSlotBytes
	}
	return nil
}

func write(ctx context.Context, f *os.File, s Spec) (*Report, error) {
	sizes := []int64{s.BootBytes, s.RootSlotBytes, s.RootSlotBytes}
	if s.PermBytes > 0 {
		sizes = append(sizes, s.PermBytes)
	}
	diskBytes := gpt.DiskBytes(sizes...)
	if err := f.Truncate(diskBytes); err != nil {
		return nil, fmt.Errorf("disk: size image: %w", err)
	}
	extents, err := gpt.Layout(diskBytes, sizes...)
	if err != nil {
		return nil, fmt.Errorf("disk: %w", err)
	}
	table := gpt.Table{DiskGUID: gpt.GUIDFromName("ingot/disk", s.Name)}
	for i, e := range extents {
		typ := gpt.TypeLinuxFilesystem
		if i == 0 {
			typ = gpt.TypeEFISystem
		}
		table.Partitions = append(table.Partitions, gpt.Partition{
			Name: partitionNames[i], Type: typ, GUID: PartitionGUID(s.Name, partitionNames[i]),
			FirstLBA: e.FirstLBA, LastLBA: e.LastLBA,
		})
	}
	var gopts []gpt.Option
	if s.HybridMBR {
		gopts = append(gopts, gpt.WithHybridMBR(gpt.Hybrid{Number: 1, Type: mbr.TypeFAT32LBA, Bootable: true}))
	}
	if err := gpt.Write(f, diskBytes, table, gopts...); err != nil {
		return nil, fmt.Errorf("disk: %w", err)
	}
	rep := &Report{ImageBytes: diskBytes, Partitions: table.Partitions}

	rootPart := table.Partitions[1]
	rootBytes, err := writeRoot(ctx, f, rootPart, s)
	if err != nil {
		return nil, err
	}
	rep.RootBytes = rootBytes

	if s.PermBytes > 0 {
		if err := writePerm(ctx, f, table.Partitions[3], s); err != nil {
			return nil, err
		}
	}
	if err := writeBoot(ctx, f, table.Partitions[0], table, s); err != nil {
		return nil, err
	}
	return rep, nil
}

// limitedWriteSeeker confines squashfs output to the root slot, so a root
// that outgrows its slot is an error rather than a write over slot B.
type limitedWriteSeeker struct {
	w        *io.OffsetWriter
	limit    int64
	pos, max int64
}

func (l *limitedWriteSeeker) Write(p []byte) (int, error) {
	if l.pos+int64(len(p)) > l.limit {
		return 0, fmt.Errorf("root filesystem exceeds the root slot of %d bytes (raise root_size in ingot.yaml)", l.limit)
	}
	n, err := l.w.WriteAt(p, l.pos)
	l.pos += int64(n)
	l.max = max(l.max, l.pos)
	return n, err
}

func (l *limitedWriteSeeker) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += l.pos
	case io.SeekEnd:
		off += l.max
	default:
		return 0, fmt.Errorf("seek: bad whence %d", whence)
	}
	if off < 0 {
		return 0, fmt.Errorf("seek: negative offset %d", off)
	}
	l.pos = off
	return off, nil
}

func writeRoot(ctx context.Context, f *os.File, p gpt.Partition, s Spec) (int64, error) {
	w := &limitedWriteSeeker{w: io.NewOffsetWriter(f, p.OffsetBytes()), limit: p.SizeBytes()}
	if err := squashfs.Write(ctx, w, s.Root, s.SquashfsOptions...); err != nil {
		return 0, fmt.Errorf("disk: root slot a: %w", err)
	}
	return w.max, nil
}

func writePerm(ctx context.Context, f *os.File, p gpt.Partition, s Spec) error {
	dir, err := os.MkdirTemp("", "ingot-perm-")
	if err != nil {
		return fmt.Errorf("disk: perm: %w", err)
	}
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(filepath.Join(src, "log"), 0o755); err != nil {
		return fmt.Errorf("disk: perm: %w", err)
	}
	for _, d := range []string{src, filepath.Join(src, "log")} {
		t := time.Unix(s.ModTime, 0)
		if err := os.Chtimes(d, t, t); err != nil {
			return fmt.Errorf("disk: perm: %w", err)
		}
	}
	img := filepath.Join(dir, "perm.ext4")
	uuid := gpt.GUIDFromName("ingot/perm-fs", s.Name)
	if err := ext4.Make(ctx, img, p.SizeBytes(), src,
		ext4.WithLabel("perm"), ext4.WithUUID(uuid.String()), ext4.WithTime(time.Unix(s.ModTime, 0).UTC())); err != nil {
		return fmt.Errorf("disk: perm: %w", err)
	}
	in, err := os.Open(img)
	if err != nil {
		return fmt.Errorf("disk: perm: %w", err)
	}
	defer in.Close()
	if err := copySparse(io.NewOffsetWriter(f, p.OffsetBytes()), in); err != nil {
		return fmt.Errorf("disk: perm: copy into image: %w", err)
	}
	return nil
}

// copySparse copies r to w skipping all-zero blocks, which keeps the image
// file sparse where the source was (mostly empty ext4 is mostly zeros).
func copySparse(w io.WriterAt, r io.Reader) error {
	const blockBytes = 64 << 10
	buf := make([]byte, blockBytes)
	zero := make([]byte, blockBytes)
	var off int64
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, werr := w.WriteAt(buf[:n], off); werr != nil {
				return werr
			}
		}
		off += int64(n)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func writeBoot(ctx context.Context, f *os.File, p gpt.Partition, table gpt.Table, s Spec) error {
	info, err := json.MarshalIndent(layout.Info{Name: s.Name, Target: s.Target, Arch: s.Arch, BuildID: s.BuildID, Release: s.Release}, "", "  ")
	if err != nil {
		return fmt.Errorf("disk: boot: %w", err)
	}
	words := strings.Fields(s.Cmdline)
	if s.BuildID != "" {
		if strings.ContainsAny(s.BuildID, " \t\n\"") {
			return fmt.Errorf("disk: build id %q: not a kernel parameter value", s.BuildID)
		}
		words = append(words, layout.ParamBuild+"="+s.BuildID)
	}
	words = append(words, layout.ParamBoot+"=PARTUUID="+table.Partitions[0].GUID.String())
	if s.PermBytes > 0 {
		words = append(words, layout.ParamPerm+"=PARTUUID="+table.Partitions[3].GUID.String())
	}
	var files []fat.File
	digests := layout.Digests{Files: map[string]layout.FileDigest{}}
	if s.BootFiles != nil {
		if files, err = s.BootFiles(table); err != nil {
			return fmt.Errorf("disk: boot partition: %w", err)
		}
		if err := digestSlotDirs(digests, files); err != nil {
			return fmt.Errorf("disk: boot partition: %w", err)
		}
	} else {
		// Both slots get the kernel, initramfs and command line: slot b's
		// copies are what an update replaces when it changes them, so the
		// first update of an unchanged kernel sends none.
		cmdline := []byte(strings.Join(words, " ") + "\n")
		for _, bf := range []struct {
			name string
			data []byte
		}{{layout.KernelFile, s.Kernel}, {layout.InitrdFile, s.Initrd}, {layout.CmdlineFile, cmdline}} {
			fd := bytesDigest(bf.data) // once for both slots' copies
			for _, sl := range []slot.Name{slot.A, slot.B} {
				files = append(files, fat.BytesFile(sl.BootFile(bf.name), bf.data))
				digests.Files[sl.BootFile(bf.name)] = fd
			}
		}
	}
	if s.EFILoader != nil {
		efi, err := efiFiles(s, table, strings.Join(words, " "))
		if err != nil {
			return fmt.Errorf("disk: boot partition: %w", err)
		}
		files = append(files, efi...)
	}
	files = append(files,
		fat.BytesFile(layout.SlotFile, slot.Initial().Marshal()),
		fat.BytesFile(layout.InfoFile, append(info, '\n')),
		fat.BytesFile(layout.DigestsFile, digests.Marshal()),
		fat.BytesFile(layout.LastUpdateFile, layout.EmptyLastUpdate()))
	w := io.NewOffsetWriter(f, p.OffsetBytes())
	if err := fat.Write(ctx, w, p.SizeBytes(), files,
		fatformat.WithTime(time.Unix(s.ModTime, 0).UTC()), fatformat.WithVolumeLabel("INGOT-BOOT"),
		fatformat.WithVolumeID(volumeID(s.Name)), fatformat.WithHiddenSectors(uint32(p.FirstLBA))); err != nil {
		return fmt.Errorf("disk: boot partition: %w", err)
	}
	return nil
}

// efiFiles are the UEFI boot path's files: systemd-boot at the
// removable-media path, loader.conf, and the entries bls.Plan makes for
// the initial slot state (the active slot a).
func efiFiles(s Spec, table gpt.Table, cmdline string) ([]fat.File, error) {
	loader, err := bls.RemovablePath(s.Arch)
	if err != nil {
		return nil, err
	}
	files := []fat.File{fat.BytesFile(loader, s.EFILoader), fat.BytesFile(bls.LoaderConf, bls.LoaderConfig())}
	for _, e := range bls.Plan(nil, slot.Initial()).Write {
		root := table.Partitions[1] // root-a
		if e.Slot == slot.B {
			root = table.Partitions[2]
		}
		b, err := bls.Content(e, bls.Params{Title: "ingot " + s.Name, Cmdline: cmdline, RootPARTUUID: root.GUID.String()})
		if err != nil {
			return nil, err
		}
		files = append(files, fat.BytesFile(bls.EntriesDir+"/"+e.FileName(), b))
	}
	return files, nil
}

// bytesDigest is the layout.DigestsFile entry of a file holding b.
func bytesDigest(b []byte) layout.FileDigest {
	sum := sha256.Sum256(b)
	return layout.FileDigest{Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:])}
}

// digestSlotDirs records in d the digest of each file of files in a
// slot's directory (piboot.PrefixDir): what a firmware-booted slot boots
// with. The firmware's own files and config.txt are no slot's.
func digestSlotDirs(d layout.Digests, files []fat.File) error {
	for _, f := range files {
		if f.Dir || !strings.HasPrefix(f.Path, piboot.PrefixDir(slot.A)) && !strings.HasPrefix(f.Path, piboot.PrefixDir(slot.B)) {
			continue
		}
		h := sha256.New()
		var n int64
		if f.Content != nil {
			r, err := f.Content.Open()
			if err != nil {
				return fmt.Errorf("%s: %w", f.Path, err)
			}
			n, err = io.Copy(h, r)
			r.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", f.Path, err)
			}
		}
		if n != f.Size {
			return fmt.Errorf("%s: %d bytes, the file list says %d", f.Path, n, f.Size)
		}
		d.Files[f.Path] = layout.FileDigest{Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}
	}
	return nil
}

func volumeID(name string) uint32 {
	g := gpt.GUIDFromName("ingot/boot-fs", name)
	return uint32(g[0])<<24 | uint32(g[1])<<16 | uint32(g[2])<<8 | uint32(g[3])
}
