package flash

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/ingotdev/ingot/packer/ext4"
	"github.com/ingotdev/ingot/packer/format/gpt"
	"github.com/ingotdev/ingot/packer/format/image"
	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/format/mbr"
)

const sectorBytes = gpt.SectorBytes

// ext4 superblock fields read to keep the perm filesystem's identity.
const (
	superblockOffsetBytes = 1024
	superMagicOffset      = 0x38
	superUUIDOffset       = 0x68
	superLabelOffset      = 0x78
	superLabelBytes       = 16
	ext4Magic             = 0xEF53
	// permFSBlockBytes is the ext4 block size; the filesystem covers the
	// partition rounded down to whole blocks.
	permFSBlockBytes = 4096
	permInodeBytes   = 256
)

// gptBackupSectors is the backup GPT at the end of a disk: 32 sectors of
// entries and the header.
const gptBackupSectors = 33

// Grown is the perm partition after Flash made it fill the target.
type Grown struct {
	// Partition is its number (device node suffix).
	Partition   int
	OffsetBytes int64
	SizeBytes   int64
	// Label and UUID of the new ext4 filesystem, kept from the image's.
	Label, UUID string
}

// growTable rewrites the partition table on f, which holds an image of
// imageBytes and is targetBytes long, so that its last partition, perm,
// ends at the end of the target. It reports whether perm needs a new
// filesystem; images without perm (or without a partition table) are left
// as they are.
func growTable(f *os.File, imageBytes, targetBytes int64) (Grown, bool, error) {
	im, gptErr := image.New(f, imageBytes, f.Name())
	if gptErr == nil {
		return growGPT(f, im, imageBytes, targetBytes)
	}
	m, err := mbr.Read(f)
	if errors.Is(err, mbr.ErrNoTable) {
		return Grown{}, false, nil
	}
	if err != nil {
		return Grown{}, false, fmt.Errorf("grow perm: %w", err)
	}
	return growMBR(f, m, targetBytes)
}

func growGPT(f *os.File, im *image.Image, imageBytes, targetBytes int64) (Grown, bool, error) {
	perm, err := im.Partition(layout.PermPartition)
	if err != nil {
		return Grown{}, false, nil // no perm to grow
	}
	table := im.Table
	for _, p := range table.Partitions {
		if p.FirstLBA > perm.FirstLBA {
			return Grown{}, false, fmt.Errorf("grow perm: partition %d (%q) lies after perm; only a last partition can grow", p.Number, p.Name)
		}
	}
	// A hybrid MBR (the Pi's boot partition mirrored for its boot ROM)
	// must survive the rewrite: gpt.Write regenerates sector 0.
	var hybrid []gpt.Hybrid
	if m, err := mbr.Read(f); err == nil {
		for i, e := range m.Partitions {
			if e.Type == mbr.TypeEmpty || e.Type == mbr.TypeGPTProtective {
				continue
			}
			n := 0
			for _, p := range table.Partitions {
				if p.FirstLBA == uint64(e.FirstLBA) {
					n = p.Number
				}
			}
			if n == 0 {
				return Grown{}, false, fmt.Errorf("grow perm: MBR entry %d (sector %d) mirrors no GPT partition", i+1, e.FirstLBA)
			}
			hybrid = append(hybrid, gpt.Hybrid{Number: n, Type: e.Type, Bootable: e.Bootable})
		}
	}
	g, err := permIdentity(f, perm.Number, perm.OffsetBytes())
	if err != nil {
		return Grown{}, false, err
	}
	perm.LastLBA = uint64(targetBytes/sectorBytes) - 1 - gptBackupSectors // in table
	var opts []gpt.Option
	if len(hybrid) > 0 {
		opts = append(opts, gpt.WithHybridMBR(hybrid...))
	}
	if err := gpt.Write(f, targetBytes, table, opts...); err != nil {
		return Grown{}, false, fmt.Errorf("grow perm: %w", err)
	}
	// The image's backup header now lies inside perm; wipe its signature
	// so no tool mistakes it for a table.
	if _, err := f.WriteAt(make([]byte, sectorBytes), imageBytes-sectorBytes); err != nil {
		return Grown{}, false, fmt.Errorf("grow perm: wiping the old backup GPT: %w", err)
	}
	g.SizeBytes = perm.SizeBytes()
	return g, true, nil
}

// maxMBRSectors is the most an MBR entry can address.
const maxMBRSectors = 1<<32 - 1

func growMBR(f *os.File, m mbr.Table, targetBytes int64) (Grown, bool, error) {
	last := -1
	for i, p := range m.Partitions {
		if p.Type != mbr.TypeEmpty && (last < 0 || p.FirstLBA > m.Partitions[last].FirstLBA) {
			last = i
		}
	}
	if last < 0 || m.Partitions[last].Type != mbr.TypeLinux {
		return Grown{}, false, nil
	}
	p := m.Partitions[last]
	g, err := permIdentity(f, last+1, int64(p.FirstLBA)*sectorBytes)
	if err != nil {
		return Grown{}, false, err
	}
	end := min(uint64(targetBytes/sectorBytes), maxMBRSectors)
	m.Partitions[last].Sectors = uint32(end - uint64(p.FirstLBA))
	if err := mbr.Write(f, targetBytes, m); err != nil {
		return Grown{}, false, fmt.Errorf("grow perm: %w", err)
	}
	g.SizeBytes = int64(m.Partitions[last].Sectors) * sectorBytes
	return g, true, nil
}

// permIdentity reads the label and UUID of the ext4 filesystem of the
// image's perm partition, so the grown one keeps them.
func permIdentity(r io.ReaderAt, number int, offsetBytes int64) (Grown, error) {
	g := Grown{Partition: number, OffsetBytes: offsetBytes, Label: layout.PermPartition}
	sb := make([]byte, superLabelOffset+superLabelBytes)
	if _, err := r.ReadAt(sb, offsetBytes+superblockOffsetBytes); err != nil {
		return Grown{}, fmt.Errorf("grow perm: reading the superblock of partition %d: %w", number, err)
	}
	if binary.LittleEndian.Uint16(sb[superMagicOffset:]) != ext4Magic {
		// Not ext4 in the image: a new filesystem with the default label
		// and a random UUID.
		return g, nil
	}
	u := sb[superUUIDOffset : superUUIDOffset+16]
	g.UUID = fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
	if l := string(bytes.TrimRight(sb[superLabelOffset:], "\x00")); l != "" {
		g.Label = l
	}
	return g, nil
}

// makePerm makes an empty ext4 filesystem in the grown perm partition of
// the target that held has open, through mke2fs's offset so that no
// partition device node (which a regular file lacks, and a card gets only
// after the kernel re-reads its table) is needed. The appliance creates
// what it needs in perm.
func makePerm(ctx context.Context, held *os.File, g Grown) error {
	mke2fs, err := ext4.LookTool("mke2fs")
	if err != nil {
		return err
	}
	target, extra := childTarget(held)
	blocks := g.SizeBytes / permFSBlockBytes
	args := []string{"-t", "ext4", "-b", strconv.Itoa(permFSBlockBytes), "-I", strconv.Itoa(permInodeBytes), "-L", g.Label}
	if g.UUID != "" {
		args = append(args, "-U", g.UUID)
	}
	// nodiscard: the discard range of older e2fsprogs ignored offset=.
	args = append(args, "-E", "offset="+strconv.FormatInt(g.OffsetBytes, 10)+",root_owner=0:0,nodiscard", "-F", "-q",
		target, strconv.FormatInt(blocks*permFSBlockBytes/1024, 10)+"k")
	cmd := exec.CommandContext(ctx, mke2fs, args...)
	cmd.ExtraFiles = extra
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("perm (partition %d): mke2fs %s: %w: %s", g.Partition, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}
