// Package assemble runs the whole build of one appliance image: the
// builder compiles and lays out the root tree, the kernel package gives
// the kernel and the module closure, the initramfs is packed around
// ingot-init, and package disk writes the image file. It is the one place
// that knows the order of these stages; the CLI and the tests call it.
package assemble

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/gob"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ingotdev/ingot/builder"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/packer/cpio"
	"github.com/ingotdev/ingot/packer/disk"
	"github.com/ingotdev/ingot/packer/format/bls"
	"github.com/ingotdev/ingot/packer/format/spec"
	"github.com/ingotdev/ingot/packer/initramfs"
	"github.com/ingotdev/ingot/packer/kernel"
	"github.com/ingotdev/ingot/packer/rootfs"
	"github.com/ingotdev/ingot/packer/rpiboot"
	"github.com/ingotdev/ingot/packer/vdisk"
)

// Report describes a finished image.
type Report struct {
	Image      string
	Target     config.Target
	BuildID    string
	ImageBytes int64
	RootBytes  int64
	// Kernel and Firmware name the Go modules (MODULE@VERSION) a
	// Raspberry Pi image was made from.
	Kernel, Firmware string
	// Disks are the copies of Image in other formats (WithFormats), in
	// the order asked for.
	Disks []string
	// Created is the timestamp of every file in the image
	// (SOURCE_DATE_EPOCH or the builder's fixed epoch).
	Created time.Time
	// SBOM is the image's SPDX document (spec.SBOMPath in its root).
	SBOM  []byte
	Steps []Step
}

// Step is one timed stage of the build.
type Step struct {
	Name     string
	Duration time.Duration
}

// Option changes how Image builds.
type Option func(*options)

type options struct {
	builderOpts []builder.Option
	cacheDir    string
	progress    io.Writer
	formats     []vdisk.Format
}

// WithBuilderOptions passes options to builder.Build.
func WithBuilderOptions(opts ...builder.Option) Option {
	return func(o *options) { o.builderOpts = append(o.builderOpts, opts...) }
}

// WithCacheDir sets the cache for compiled binaries and unpacked kernels
// (default: os.UserCacheDir()/ingot).
func WithCacheDir(dir string) Option { return func(o *options) { o.cacheDir = dir } }

// WithFormats makes Image also write the image in each of formats beside
// out (vdisk.PathFor); raw is out itself. Only VM images convert.
func WithFormats(formats ...vdisk.Format) Option {
	return func(o *options) { o.formats = append(o.formats, formats...) }
}

// WithProgress makes Image report each stage to w.
func WithProgress(w io.Writer) Option { return func(o *options) { o.progress = w } }

// consoleDevice is the serial console of each architecture's VM machine.
var consoleDevice = map[string]string{"amd64": "ttyS0", "arm64": "ttyAMA0"}

// Image builds cfg for target into the file out. On error, out is not
// created (or left as it was).
func Image(ctx context.Context, cfg *config.Config, target config.Target, out string, opts ...Option) (*Report, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.cacheDir == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("assemble: cache dir: %w", err)
		}
		o.cacheDir = filepath.Join(dir, "ingot")
	}
	if target == config.TargetRPiArmv7 {
		return nil, fmt.Errorf("assemble: target %s: not supported yet: %s ships only a 64-bit kernel; use target rpi (Pi 3, 4, 5, Zero 2 W)", target, rpiboot.KernelModule)
	}
	if !target.IsVM() {
		for _, f := range o.formats {
			if f != vdisk.Raw {
				return nil, fmt.Errorf("assemble: target %s: disk format %s is for VM images; a Raspberry Pi image is raw", target, f)
			}
		}
	}
	rep := &Report{Image: out, Target: target}
	step := func(name string, start time.Time) {
		d := time.Since(start)
		rep.Steps = append(rep.Steps, Step{name, d})
		if o.progress != nil {
			fmt.Fprintf(o.progress, "%-10s %6.2fs\n", name, d.Seconds())
		}
	}

	start := time.Now()
	bopts := append([]builder.Option{builder.WithCacheDir(o.cacheDir)}, o.builderOpts...)
	res, err := builder.Build(ctx, cfg, target, bopts...)
	if err != nil {
		return nil, err
	}
	rep.BuildID = res.BuildID
	rep.Created = time.Unix(res.ModTime, 0).UTC()
	if rep.SBOM, err = treeFile(res.Root, spec.SBOMPath); err != nil {
		return nil, fmt.Errorf("assemble: %w", err)
	}
	step("compile", start)
	if !target.IsVM() {
		return rpiImage(ctx, cfg, res, out, rep, step)
	}

	start = time.Now()
	if res.Kernel.Kind != config.KernelDebian {
		return nil, fmt.Errorf("assemble: target %s: kernel %s: only debian: kernels boot VMs", target, res.Kernel)
	}
	k, mods, err := loadKernel(ctx, res.Kernel.Path, res.KernelSHA256, filepath.Join(o.cacheDir, "kernels"), res.Arch)
	if err != nil {
		return nil, err
	}
	if k.Arch != res.Arch {
		return nil, fmt.Errorf("assemble: kernel %s is for %s, target %s needs %s", res.Kernel.Path, k.Arch, target, res.Arch)
	}
	step("kernel", start)

	start = time.Now()
	// Other clouds' drivers load only where their devices are: on QEMU
	// they would cost a third of a second of every boot.
	onDemand, err := k.Triggers(mods, kernel.DefaultVMModules())
	if err != nil {
		return nil, fmt.Errorf("assemble: kernel %s: %w", res.Kernel.Path, err)
	}
	initTree, err := initramfs.Tree(k, mods, onDemand, res.Stage0, int64(len(res.Stage0)), res.ModTime)
	if err != nil {
		return nil, fmt.Errorf("assemble: initramfs: %w", err)
	}
	var initrd bytes.Buffer
	if err := cpio.WriteCompressedTree(&initrd, initTree, cpio.Zstd); err != nil {
		return nil, fmt.Errorf("assemble: initramfs: %w", err)
	}
	step("initramfs", start)

	start = time.Now()
	console := consoleDevice[res.Arch]
	if console == "" {
		return nil, fmt.Errorf("assemble: no serial console known for arch %s", res.Arch)
	}
	if res.EFILoaderErr != nil {
		return nil, res.EFILoaderErr
	}
	efiPath, err := bls.SystemdBootPath(res.Arch)
	if err != nil {
		return nil, fmt.Errorf("assemble: %w", err)
	}
	efiLoader, _, err := kernel.DebFile(ctx, res.EFILoaderDeb, efiPath)
	if err != nil {
		return nil, fmt.Errorf("assemble: UEFI loader: %w", err)
	}
	d, err := disk.Write(ctx, out, disk.Spec{
		Name: res.Name, Target: string(target), Arch: res.Arch, BuildID: res.BuildID, Release: res.Appliance.Release,
		Kernel: k.Image, Initrd: initrd.Bytes(), EFILoader: efiLoader,
		Cmdline: strings.Join([]string{"console=" + console, "panic=1"}, " "),
		Root:    res.Root, ModTime: res.ModTime,
		BootBytes: res.BootBytes, RootSlotBytes: res.RootSlotBytes, PermBytes: res.PermBytes,
		SquashfsOptions: rootSquashfsOptions(),
	})
	if err != nil {
		return nil, err
	}
	rep.ImageBytes, rep.RootBytes = d.ImageBytes, d.RootBytes
	step("image", start)

	for _, f := range o.formats {
		if f == vdisk.Raw || slices.Contains(rep.Disks, vdisk.PathFor(out, f)) {
			continue
		}
		start = time.Now()
		p := vdisk.PathFor(out, f)
		if err := vdisk.Convert(ctx, f, out, p, vdisk.Options{ModTime: time.Unix(res.ModTime, 0)}); err != nil {
			return nil, fmt.Errorf("assemble: %w", err)
		}
		rep.Disks = append(rep.Disks, p)
		step(string(f), start)
	}
	return rep, nil
}

// treeFile returns the content of the regular file at p in t.
func treeFile(t *rootfs.Tree, p string) ([]byte, error) {
	e, ok := t.Get(p)
	if !ok || e.Kind != rootfs.KindFile || e.Content == nil {
		return nil, fmt.Errorf("root tree: no file %s", p)
	}
	rc, err := e.Content.Open()
	if err != nil {
		return nil, fmt.Errorf("root tree: %s: %w", p, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, e.Size+1))
	if err != nil {
		return nil, fmt.Errorf("root tree: %s: %w", p, err)
	}
	if int64(len(data)) != e.Size {
		return nil, fmt.Errorf("root tree: %s: %d bytes, the entry says %d", p, len(data), e.Size)
	}
	return data, nil
}

// cachedKernel is what a build needs of a kernel package, kept so a warm
// build does not decompress the .deb again.
type cachedKernel struct {
	Kernel  *kernel.Kernel
	Modules []*kernel.Module
}

// loadKernel returns the kernel and the closure of the VM modules for
// arch (DefaultVMModules and CloudVMModules) from the .deb at path,
// through a cache keyed by the package's SHA-256 and the module list.
func loadKernel(ctx context.Context, path, sha string, cacheDir, arch string) (*kernel.Kernel, []*kernel.Module, error) {
	want := append(kernel.DefaultVMModules(), kernel.CloudVMModules(arch)...)
	key := sha256.Sum256([]byte(sha + "\x00" + strings.Join(want, ",")))
	cacheFile := filepath.Join(cacheDir, hex.EncodeToString(key[:16])+".gob")
	if f, err := os.Open(cacheFile); err == nil {
		var c cachedKernel
		err := gob.NewDecoder(f).Decode(&c)
		f.Close()
		if err == nil && c.Kernel != nil {
			return c.Kernel, c.Modules, nil
		}
	}
	k, err := kernel.LoadDeb(ctx, path, kernel.WithModules(want...))
	if err != nil {
		return nil, nil, fmt.Errorf("assemble: kernel: %w", err)
	}
	mods, err := k.Closure(want...)
	if err != nil {
		return nil, nil, fmt.Errorf("assemble: kernel %s: %w", path, err)
	}
	// A cache write failure only costs time on the next build.
	if err := os.MkdirAll(cacheDir, 0o755); err == nil {
		if tmp, err := os.CreateTemp(cacheDir, ".kernel-*"); err == nil {
			werr := gob.NewEncoder(tmp).Encode(cachedKernel{Kernel: k, Modules: mods})
			cerr := tmp.Close()
			if werr == nil && cerr == nil {
				_ = os.Rename(tmp.Name(), cacheFile)
			} else {
				os.Remove(tmp.Name())
			}
		}
	}
	return k, mods, nil
}
