// Package permgrow grows the perm partition and its mounted ext4
// filesystem to the end of the disk, at boot: cloud and hypervisor disks
// are larger than the image written to them (and `qemu-img resize` makes
// them so), as `ingot flash` already handles for SD cards on the host.
//
// The partition table is grown with gpt.Grow, whose write order keeps a
// valid primary table across a power cut at any point; the kernel learns
// the new size through the BLKPG resize-partition ioctl (the partition
// stays mounted); the filesystem is grown online with EXT4_IOC_RESIZE_FS,
// which the kernel journals step by step. Each step checks what is on the
// disk before it acts, so a boot after a cut resumes: a table already
// spanning the disk is left alone, and a filesystem smaller than its
// partition is grown.
package permgrow

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ingotdev/ingot/packer/format/gpt"
)

// Linux ioctl requests that golang.org/x/sys/unix does not name.
const (
	// blkpgIoctl is BLKPG, _IO(0x12, 105).
	blkpgIoctl = 0x1269
	// ext4ResizeFS is EXT4_IOC_RESIZE_FS, _IOW('f', 16, __u64): the new
	// block count.
	ext4ResizeFS = 0x40086610
)

// ext4 superblock fields (at byte 1024 of the filesystem).
const (
	superblockOffset   = 1024
	sbBlocksCountLo    = 0x04
	sbLogBlockSize     = 0x18
	sbMagic            = 0x38
	sbFeatureIncompat  = 0x60
	sbBlocksCountHi    = 0x150
	ext4Magic          = 0xEF53
	incompat64Bit      = 0x80
	superblockReadSize = 0x154
)

// Result says what Grow found and did.
type Result struct {
	// TableGrown is true when this call rewrote the partition table.
	TableGrown bool
	// PartitionBytes is the partition's size as the kernel sees it now.
	PartitionBytes int64
	// BlockBytes is the filesystem's block size; BlocksBefore and
	// BlocksAfter its size in blocks before and after.
	BlockBytes                uint64
	BlocksBefore, BlocksAfter uint64
}

// Grow grows partition number of the disk at diskPath (whose device node
// is partPath, an ext4 filesystem mounted at mountPoint) to the end of the
// disk, then the filesystem to the end of the partition. logf is told
// before each step that changes something.
func Grow(diskPath string, number int, partPath, mountPoint string, logf func(format string, args ...any)) (Result, error) {
	var r Result
	disk, err := os.OpenFile(diskPath, os.O_RDWR, 0)
	if err != nil {
		return r, fmt.Errorf("permgrow: %w", err)
	}
	defer disk.Close()
	diskBytes, err := disk.Seek(0, io.SeekEnd)
	if err != nil {
		return r, fmt.Errorf("permgrow: size of %s: %w", diskPath, err)
	}
	p, changed, err := gpt.Grow(disk, diskBytes-diskBytes%gpt.SectorBytes, number)
	if err != nil {
		return r, fmt.Errorf("permgrow: %s: %w", diskPath, err)
	}
	r.TableGrown = changed
	if changed {
		logf("perm: partition %d of %s now ends at the disk's end (%d MiB); telling the kernel", number, diskPath, p.SizeBytes()>>20)
		if err := resizePartition(disk, p); err != nil {
			return r, fmt.Errorf("permgrow: %s partition %d: %w", diskPath, number, err)
		}
	}

	part, err := os.Open(partPath)
	if err != nil {
		return r, fmt.Errorf("permgrow: %w", err)
	}
	defer part.Close()
	if r.PartitionBytes, err = part.Seek(0, io.SeekEnd); err != nil {
		return r, fmt.Errorf("permgrow: size of %s: %w", partPath, err)
	}
	blocks, blockBytes, err := ext4Blocks(part)
	if err != nil {
		return r, fmt.Errorf("permgrow: %s: %w", partPath, err)
	}
	r.BlockBytes, r.BlocksBefore, r.BlocksAfter = blockBytes, blocks, blocks
	want := uint64(r.PartitionBytes) / blockBytes
	if want <= blocks {
		return r, nil
	}
	logf("perm: growing ext4 on %s from %d to %d MiB", partPath, blocks*blockBytes>>20, want*blockBytes>>20)
	if err := resizeFS(mountPoint, want); err != nil {
		return r, fmt.Errorf("permgrow: ext4 on %s (%s): %w", partPath, mountPoint, err)
	}
	if r.BlocksAfter, _, err = ext4Blocks(part); err != nil {
		return r, fmt.Errorf("permgrow: %s: %w", partPath, err)
	}
	return r, nil
}

// resizePartition tells the kernel partition p's new extent (BLKPG
// resize, allowed while it is mounted).
func resizePartition(disk *os.File, p gpt.Partition) error {
	bp := unix.BlkpgPartition{Start: p.OffsetBytes(), Length: p.SizeBytes(), Pno: int32(p.Number)}
	arg := unix.BlkpgIoctlArg{Op: unix.BLKPG_RESIZE_PARTITION, Datalen: int32(unsafe.Sizeof(bp)), Data: (*byte)(unsafe.Pointer(&bp))}
	if err := ioctlPtr(disk.Fd(), blkpgIoctl, unsafe.Pointer(&arg)); err != nil {
		return fmt.Errorf("BLKPG resize to %d bytes: %w", p.SizeBytes(), err)
	}
	return nil
}

// resizeFS grows the ext4 filesystem mounted at mountPoint to blocks.
func resizeFS(mountPoint string, blocks uint64) error {
	d, err := os.Open(mountPoint)
	if err != nil {
		return err
	}
	defer d.Close()
	n := blocks
	if err := ioctlPtr(d.Fd(), ext4ResizeFS, unsafe.Pointer(&n)); err != nil {
		return fmt.Errorf("EXT4_IOC_RESIZE_FS to %d blocks: %w", blocks, err)
	}
	return nil
}

func ioctlPtr(fd uintptr, req uintptr, arg unsafe.Pointer) error {
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(arg)); errno != 0 {
		return errno
	}
	return nil
}

// errNotExt4 is returned for a partition without an ext4 superblock.
var errNotExt4 = errors.New("no ext4 superblock")

// ext4Blocks reads the block count and block size from the superblock.
func ext4Blocks(r io.ReaderAt) (blocks, blockBytes uint64, err error) {
	b := make([]byte, superblockReadSize)
	if _, err := r.ReadAt(b, superblockOffset); err != nil {
		return 0, 0, fmt.Errorf("reading the ext4 superblock: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint16(b[sbMagic:]) != ext4Magic {
		return 0, 0, errNotExt4
	}
	logSize := le.Uint32(b[sbLogBlockSize:])
	if logSize > 6 {
		return 0, 0, fmt.Errorf("ext4 superblock: log block size %d out of range", logSize)
	}
	blocks = uint64(le.Uint32(b[sbBlocksCountLo:]))
	if le.Uint32(b[sbFeatureIncompat:])&incompat64Bit != 0 {
		blocks |= uint64(le.Uint32(b[sbBlocksCountHi:])) << 32
	}
	return blocks, 1024 << logSize, nil
}
