package assemble

import (
	"context"
	"fmt"
	"time"

	"github.com/ingotdev/ingot/builder"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/packer/disk"
	"github.com/ingotdev/ingot/packer/fat"
	"github.com/ingotdev/ingot/packer/format/gpt"
	"github.com/ingotdev/ingot/packer/format/slot"
	"github.com/ingotdev/ingot/packer/rpiboot"
	"github.com/ingotdev/ingot/packer/squashfs"
)

// minRPiBootBytes is the smallest boot partition of a Pi image: the
// firmware (about 25 MB for every board's start*.elf), and for each slot a
// 46 MB uncompressed kernel with its device trees and overlays (3 MB),
// plus room for an update to stage a third such set before its commit.
const minRPiBootBytes = 256 << 20

// rpiImage writes the Raspberry Pi image of a build: the same GPT disk as
// a VM image (so the appliance finds its partitions the same way), with a
// hybrid MBR whose first entry is the FAT boot partition for the Pi's boot
// ROM, and the firmware's boot files instead of the host loader's.
func rpiImage(ctx context.Context, cfg *config.Config, res *builder.Result, out string, rep *Report, step func(string, time.Time)) (*Report, error) {
	start := time.Now()
	lock, err := rpiboot.ReadLock(cfg.Dir)
	if err != nil {
		return nil, err
	}
	// A version in ingot.yaml wins over the lock; the lock over "latest".
	kver := res.Kernel.Version
	if kver == "" {
		kver = lock[rpiboot.KernelModule]
	}
	if res.Kernel.Kind != config.KernelGoModule || res.Kernel.Module != rpiboot.KernelModule {
		return nil, fmt.Errorf("assemble: target %s: kernel %s: a Raspberry Pi boots %s", res.Target, res.Kernel, rpiboot.KernelModule)
	}
	kernel, err := rpiboot.Download(ctx, "go", rpiboot.KernelModule, kver)
	if err != nil {
		return nil, err
	}
	firmware, err := rpiboot.Download(ctx, "go", rpiboot.FirmwareModule, lock[rpiboot.FirmwareModule])
	if err != nil {
		return nil, err
	}
	lock[rpiboot.KernelModule], lock[rpiboot.FirmwareModule] = kernel.Version, firmware.Version
	if err := lock.Write(cfg.Dir); err != nil {
		return nil, err
	}
	step("firmware", start)

	start = time.Now()
	bootFiles := func(t gpt.Table) ([]fat.File, error) {
		guid := func(i int) string { return t.Partitions[i].GUID.String() }
		return rpiboot.Files(res.Name, kernel, firmware, func(sl slot.Name) string {
			p := rpiboot.CmdlineParams{Slot: sl, Root: guid(1), Boot: guid(0)}
			if sl == slot.B {
				p.Root = guid(2)
			}
			if len(t.Partitions) > 3 {
				p.Perm = guid(3)
			}
			return rpiboot.Cmdline(p)
		})
	}
	d, err := disk.Write(ctx, out, disk.Spec{
		Name: res.Name, Target: string(res.Target), Arch: res.Arch, BuildID: res.BuildID, Release: res.Appliance.Release,
		Root: res.Root, ModTime: res.ModTime,
		BootBytes: max(res.BootBytes, minRPiBootBytes), RootSlotBytes: res.RootSlotBytes, PermBytes: res.PermBytes,
		BootFiles: bootFiles, HybridMBR: true,
		// kernel.rpi's squashfs reads zlib but not zstd.
		SquashfsOptions: []squashfs.Option{squashfs.WithCompression(squashfs.Gzip)},
	})
	if err != nil {
		return nil, err
	}
	rep.ImageBytes, rep.RootBytes = d.ImageBytes, d.RootBytes
	rep.Kernel, rep.Firmware = kernel.Path+"@"+kernel.Version, firmware.Path+"@"+firmware.Version
	step("image", start)
	return rep, nil
}
