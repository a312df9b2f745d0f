package assemble

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/ingotdev/ingot/builder"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/packer/disk"
	"github.com/ingotdev/ingot/packer/fat"
	"github.com/ingotdev/ingot/packer/format/gpt"
	"github.com/ingotdev/ingot/packer/format/slot"
	"github.com/ingotdev/ingot/packer/format/spec"
	kernelpkg "github.com/ingotdev/ingot/packer/kernel"
	"github.com/ingotdev/ingot/packer/rootfs"
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
	if cfg.Network.WiFi != nil {
		start = time.Now()
		if err := addWiFi(ctx, res, kernel, cfg.Network.WiFi.FirmwareDeb); err != nil {
			return nil, err
		}
		step("wifi", start)
	}

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
		SquashfsOptions: rootSquashfsOptions(squashfs.WithCompression(squashfs.Gzip)),
	})
	if err != nil {
		return nil, err
	}
	rep.ImageBytes, rep.RootBytes = d.ImageBytes, d.RootBytes
	rep.Kernel, rep.Firmware = kernel.Path+"@"+kernel.Version, firmware.Path+"@"+firmware.Version
	step("image", start)
	return rep, nil
}

// addWiFi puts what the Pi's Wi-Fi needs beside the client the builder
// added: the driver modules appliance.json lists, from kernel.rpi, under
// /lib/modules/<release>/, and the boards' brcmfmac firmware from the
// Debian package firmwareDeb under /lib/firmware.
func addWiFi(ctx context.Context, res *builder.Result, kernel rpiboot.Module, firmwareDeb string) error {
	release, err := rpiboot.KernelRelease(kernel)
	if err != nil {
		return fmt.Errorf("assemble: wifi: %w", err)
	}
	t, mtime := res.Root, res.ModTime
	for _, m := range res.Appliance.Modules {
		b, err := os.ReadFile(filepath.Join(kernel.Dir, "lib", "modules", release, filepath.FromSlash(m)))
		if err != nil {
			return fmt.Errorf("assemble: wifi: module of %s@%s: %w", kernel.Path, kernel.Version, err)
		}
		p := path.Join(spec.ModulesDir, release, m)
		if err := t.MkdirAll(path.Dir(p), 0o755, mtime); err != nil {
			return fmt.Errorf("assemble: wifi: %w", err)
		}
		if err := t.Add(p, rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o644, Size: int64(len(b)), Content: rootfs.Bytes(b), ModTime: mtime}); err != nil {
			return fmt.Errorf("assemble: wifi: %w", err)
		}
	}
	files, err := kernelpkg.LoadFirmwareDeb(ctx, firmwareDeb, rpiboot.IsWiFiFirmware)
	if err != nil {
		return fmt.Errorf("assemble: wifi: network.wifi.firmware_deb: %w", err)
	}
	for _, f := range files {
		p := path.Join(kernelpkg.FirmwareDir, f.Path)
		if err := t.MkdirAll(path.Dir(p), 0o755, mtime); err != nil {
			return fmt.Errorf("assemble: wifi: %w", err)
		}
		e := rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o644, Size: int64(len(f.Data)), Content: rootfs.Bytes(f.Data), ModTime: mtime}
		if f.Link != "" {
			e = rootfs.Entry{Kind: rootfs.KindSymlink, Mode: 0o777, Target: f.Link, ModTime: mtime}
		}
		if err := t.Add(p, e); err != nil {
			return fmt.Errorf("assemble: wifi: %w", err)
		}
	}
	return nil
}
