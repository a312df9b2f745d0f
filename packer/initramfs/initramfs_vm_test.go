package initramfs

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ingotdev/ingot/packer/cpio"
	"github.com/ingotdev/ingot/packer/kernel"
	"github.com/ingotdev/ingot/packer/rootfs"
)

// vmBootTimeout bounds one subtest. The boots use TCG even where /dev/kvm
// exists: nested KVM on CI hosts has been seen to fail with emulation errors
// or hang, and this test is about the initramfs, not the accelerator.
const vmBootTimeout = 4 * time.Minute

// TestVMBoot boots the real Debian kernel with an initramfs made by Tree and
// packer/cpio, whose /init (internal/testinit) loads every module of the
// DefaultVMModules closure in stage0.json order with finit_module. It proves
// the kernel unpacks our cpio (zstd on amd64, gzip on arm64) including a
// hard link, that the closure's order satisfies every symbol dependency, and
// that virtio-blk finds a disk once the modules are in.
func TestVMBoot(t *testing.T) {
	for _, tc := range []struct {
		arch, env, qemu, console string
		c                        cpio.Compression
		machine                  []string
	}{
		{"amd64", "INGOT_KERNEL_DEB", "qemu-system-x86_64", "ttyS0", cpio.Zstd, []string{"-M", "q35"}},
		{"arm64", "INGOT_KERNEL_DEB_ARM64", "qemu-system-aarch64", "ttyAMA0", cpio.Gzip, []string{"-M", "virt", "-cpu", "max"}},
	} {
		t.Run(tc.arch, func(t *testing.T) {
			deb := os.Getenv(tc.env)
			if deb == "" {
				t.Fatalf("%s is not set: point it at a Debian linux-image-*-cloud-%s.deb (make test sets it)", tc.env, tc.arch)
			}
			ctx, cancel := context.WithTimeout(context.Background(), vmBootTimeout)
			defer cancel()
			dir := t.TempDir()
			k, err := kernel.LoadDeb(ctx, deb, kernel.WithModules(kernel.DefaultVMModules()...))
			if err != nil {
				t.Fatal(err)
			}
			mods, err := k.Closure(kernel.DefaultVMModules()...)
			if err != nil {
				t.Fatal(err)
			}
			initPath := filepath.Join(dir, "init")
			build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", initPath, "./internal/testinit")
			build.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+tc.arch, "CGO_ENABLED=0")
			if out, err := build.CombinedOutput(); err != nil {
				t.Fatalf("building testinit for %s: %v\n%s", tc.arch, err, out)
			}
			fi, err := os.Stat(initPath)
			if err != nil {
				t.Fatal(err)
			}
			const modTime = 1700000000
			tree, err := Tree(k, mods, rootfs.HostFile(initPath), fi.Size(), modTime)
			if err != nil {
				t.Fatalf("Tree = %v", err)
			}
			hello := []byte("shared bytes\n")
			if err := tree.Add("/etc/hard-a", rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o644, Size: int64(len(hello)), Content: rootfs.Bytes(hello)}); err != nil {
				t.Fatal(err)
			}
			if err := tree.Add("/etc/hard-b", rootfs.Entry{Kind: rootfs.KindHardlink, Target: "/etc/hard-a"}); err != nil {
				t.Fatal(err)
			}
			initrd := filepath.Join(dir, "initrd.img")
			f, err := os.Create(initrd)
			if err != nil {
				t.Fatal(err)
			}
			if err := cpio.WriteCompressedTree(f, tree, tc.c); err != nil {
				t.Fatalf("WriteCompressedTree(%s) = %v", tc.c, err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			image := filepath.Join(dir, "vmlinuz")
			disk := filepath.Join(dir, "disk.img")
			if err := os.WriteFile(image, k.Image, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			args := append(tc.machine,
				"-accel", "tcg", "-m", "512", "-smp", "1",
				"-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
				"-kernel", image, "-initrd", initrd,
				"-append", "console="+tc.console+" panic=-1 loglevel=4",
				"-drive", "file="+disk+",if=none,id=d0,format=raw",
				"-device", "virtio-blk-pci,drive=d0")
			start := time.Now()
			out, err := exec.CommandContext(ctx, tc.qemu, args...).CombinedOutput()
			t.Logf("%s boot took %v (TCG, initrd %s)", tc.arch, time.Since(start), tc.c)
			if err != nil {
				t.Fatalf("%s %s: %v\n%s", tc.qemu, strings.Join(args, " "), err, out)
			}
			checkBootLog(t, out, len(mods))
		})
	}
}

func checkBootLog(t *testing.T, out []byte, mods int) {
	t.Helper()
	log := string(out)
	loaded := strings.Count(log, ": ok\n") + strings.Count(log, ": ok\r\n")
	want := []string{
		"hardlink: same inode true, links 2, content \"shared bytes\\n\"",
		"filesystems: squashfs vfat",
		"virtio-blk: vda",
		"TESTINIT DONE",
	}
	var missing []string
	for _, w := range want {
		if !strings.Contains(log, w) {
			missing = append(missing, w)
		}
	}
	if loaded != mods || strings.Contains(log, ": error ") || len(missing) > 0 {
		t.Errorf("boot log: %d of %d modules loaded, missing %q; log:\n%s", loaded, mods, missing, tail(log))
	}
}

func tail(s string) string {
	const keep = 8000
	if len(s) > keep {
		return "..." + s[len(s)-keep:]
	}
	return s
}
