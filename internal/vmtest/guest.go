package vmtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/packer/cpio"
	"github.com/ingotdev/ingot/packer/initramfs"
	"github.com/ingotdev/ingot/packer/kernel"
	"github.com/ingotdev/ingot/packer/rootfs"
)

// TestInit is the import path of the test PID 1 every guest runs unless
// WithInit names another; its kernel parameter testinit= picks what it
// does (see its package doc).
const TestInit = "github.com/ingotdev/ingot/internal/vmtest/testinit"

// guestModTime dates every initramfs entry, so the archive is the same
// from run to run.
const guestModTime = 1700000000

// Guest is a kernel and an initramfs to boot, written to one directory.
type Guest struct {
	Arch   string // GOARCH spelling: amd64 or arm64
	Kernel string // the kernel image
	Initrd string // the initramfs
	Init   string // the init binary, /init of Initrd
	// Modules are what /init finds in /etc/ingot/stage0.json, in load
	// order: the modules asked for and their dependencies.
	Modules []*kernel.Module
}

// GuestOption changes what BuildGuest builds.
type GuestOption func(*guestOptions)

type guestOptions struct {
	init        string
	modules     []string
	compression cpio.Compression
	edit        func(*rootfs.Tree) error
}

// WithInit builds the Go package pkg (an import path) as /init instead
// of TestInit.
func WithInit(pkg string) GuestOption { return func(o *guestOptions) { o.init = pkg } }

// WithModules adds kernel modules for /init to load; their dependencies
// come with them.
func WithModules(names ...string) GuestOption {
	return func(o *guestOptions) { o.modules = append(o.modules, names...) }
}

// WithCompression compresses the initramfs with c instead of zstd.
func WithCompression(c cpio.Compression) GuestOption {
	return func(o *guestOptions) { o.compression = c }
}

// WithTree lets edit add to the initramfs tree before it is written.
func WithTree(edit func(*rootfs.Tree) error) GuestOption {
	return func(o *guestOptions) { o.edit = edit }
}

// NewGuest builds a guest for arch from the kernel package Kernel(t, arch)
// in a directory removed when the test ends.
func NewGuest(t testing.TB, arch string, opts ...GuestOption) *Guest {
	t.Helper()
	g, err := BuildGuest(t.Context(), Kernel(t, arch), arch, t.TempDir(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// BuildGuest writes into dir the kernel image of the Debian kernel package
// deb and an initramfs in stage0's layout (packer/initramfs, written by
// packer/cpio) whose /init is the test PID 1, or the package WithInit
// names, built for arch.
func BuildGuest(ctx context.Context, deb, arch, dir string, opts ...GuestOption) (*Guest, error) {
	o := guestOptions{init: TestInit, compression: cpio.Zstd}
	for _, opt := range opts {
		opt(&o)
	}
	k, err := kernel.LoadDeb(ctx, deb, kernel.WithModules(o.modules...))
	if err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	if k.Arch != arch {
		return nil, fmt.Errorf("vmtest: %s is a kernel for %s, want %s", deb, k.Arch, arch)
	}
	g := &Guest{Arch: arch, Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd.img"), Init: filepath.Join(dir, "init")}
	if g.Modules, err = k.Closure(o.modules...); err != nil {
		return nil, fmt.Errorf("vmtest: %s: %w", deb, err)
	}
	if err := buildProgram(ctx, o.init, arch, g.Init); err != nil {
		return nil, err
	}
	fi, err := os.Stat(g.Init)
	if err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	tree, err := initramfs.Tree(k, g.Modules, nil, rootfs.HostFile(g.Init), fi.Size(), guestModTime)
	if err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	if o.edit != nil {
		if err := o.edit(tree); err != nil {
			return nil, fmt.Errorf("vmtest: initramfs: %w", err)
		}
	}
	f, err := os.Create(g.Initrd)
	if err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	if err := cpio.WriteCompressedTree(f, tree, o.compression); err != nil {
		f.Close()
		return nil, fmt.Errorf("vmtest: writing %s: %w", g.Initrd, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	if err := os.WriteFile(g.Kernel, k.Image, 0o644); err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	return g, nil
}

// Program builds the Go package pkg (an import path) for linux/arch, static,
// and returns the binary's path: a program for a guest's root, beside the
// initramfs's /init.
func Program(t testing.TB, arch, pkg string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), path.Base(pkg))
	if err := buildProgram(t.Context(), pkg, arch, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func buildProgram(ctx context.Context, pkg, arch, out string) error {
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, pkg)
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if b, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("vmtest: building %s for %s: %w\n%s", pkg, arch, err, b)
	}
	return nil
}

// Machine returns a VM of g's architecture that boots g with the serial
// console of its architecture, no reboot after a panic, and params added
// to the kernel command line.
func (g *Guest) Machine(params ...string) *qemu.Machine {
	console := "ttyS0"
	if g.Arch == "arm64" {
		console = "ttyAMA0"
	}
	return &qemu.Machine{
		Arch: g.Arch, Kernel: g.Kernel, Initrd: g.Initrd,
		Cmdline: strings.Join(append([]string{"console=" + console, "panic=-1"}, params...), " "),
	}
}
