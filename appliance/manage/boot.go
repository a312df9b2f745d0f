package manage

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/ingotdev/ingot/appliance/blockdev"
	"github.com/ingotdev/ingot/appliance/update"
	"github.com/ingotdev/ingot/packer/format/gpt"
	"github.com/ingotdev/ingot/packer/format/image"
	"github.com/ingotdev/ingot/packer/format/slot"
	"golang.org/x/sys/unix"
)

// bootMountFlags: nothing on the boot partition is ever executed or a
// device node.
const bootMountFlags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC

// mountBoot finds the boot partition by its PARTUUID and mounts it
// read-write at dir.
func mountBoot(ctx context.Context, partUUID, dir string) (blockdev.Partition, error) {
	if partUUID == "" {
		return blockdev.Partition{}, errors.New("no ingot.boot=PARTUUID= on the kernel command line")
	}
	g, err := gpt.ParseGUID(partUUID)
	if err != nil {
		return blockdev.Partition{}, fmt.Errorf("ingot.boot: %w", err)
	}
	fctx, cancel := context.WithTimeout(ctx, bootFindWait)
	defer cancel()
	p, err := blockdev.New().Find(fctx, g)
	if err != nil {
		return blockdev.Partition{}, fmt.Errorf("boot partition %s: %w", partUUID, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return blockdev.Partition{}, fmt.Errorf("boot partition: %w", err)
	}
	// Charset options stay at the kernel's defaults: they need only the
	// nls modules stage0 loads.
	if err := unix.Mount(p.Device, dir, "vfat", bootMountFlags, "fmask=0077,dmask=0077"); err != nil {
		return blockdev.Partition{}, fmt.Errorf("boot partition: mount %s (vfat) on %s: %w", p.Device, dir, err)
	}
	return p, nil
}

// unmountBoot syncs and unmounts the boot partition; when something still
// holds it, it is remounted read-only, which flushes it too.
func unmountBoot(dir string) error {
	unix.Sync()
	err := unix.Unmount(dir, 0)
	if err == nil {
		return nil
	}
	if rerr := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); rerr != nil {
		return fmt.Errorf("boot partition: unmount %s: %w; remount read-only: %w", dir, err, rerr)
	}
	return fmt.Errorf("boot partition: unmount %s: %w (remounted read-only)", dir, err)
}

// slotOpener returns the update.OpenFunc of a disk: a slot is the
// partition named root-a or root-b in the GPT of the disk that holds the
// boot partition. Reading the names, rather than deriving GUIDs from the
// appliance name, keeps updates working when an update renames the
// appliance.
func slotOpener(bootPart blockdev.Partition) update.OpenFunc {
	return func(ctx context.Context, n slot.Name) (update.Partition, error) {
		if !n.Valid() {
			return nil, fmt.Errorf("slot %q is not a or b", n)
		}
		disk, err := image.Open(bootPart.Disk)
		if err != nil {
			return nil, err
		}
		part, err := disk.Partition(n.PartitionLabel())
		disk.Close()
		if err != nil {
			return nil, err
		}
		fctx, cancel := context.WithTimeout(ctx, bootFindWait)
		defer cancel()
		p, err := blockdev.New().Find(fctx, part.GUID)
		if err != nil {
			return nil, fmt.Errorf("partition %s: %w", n.PartitionLabel(), err)
		}
		return update.OpenFile(p.Device)
	}
}

// rootPARTUUID returns the PARTUUID of a slot's root partition, read by
// name from the GPT of the disk that holds the boot partition (as
// slotOpener finds it), for the UEFI entries.
func rootPARTUUID(bootPart blockdev.Partition) func(slot.Name) (string, error) {
	return func(n slot.Name) (string, error) {
		disk, err := image.Open(bootPart.Disk)
		if err != nil {
			return "", err
		}
		defer disk.Close()
		part, err := disk.Partition(n.PartitionLabel())
		if err != nil {
			return "", err
		}
		return part.GUID.String(), nil
	}
}
