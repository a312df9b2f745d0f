package initramfs_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ingotdev/ingot/internal/vmtest"
	"github.com/ingotdev/ingot/packer/cpio"
	"github.com/ingotdev/ingot/packer/kernel"
	"github.com/ingotdev/ingot/packer/rootfs"
)

// vmBootTimeout bounds one subtest's boot.
const vmBootTimeout = 4 * time.Minute

// TestVMBoot boots the real Debian kernel with an initramfs made by Tree and
// packer/cpio (vmtest.NewGuest), whose /init (vmtest's testinit) loads every
// module of the DefaultVMModules closure in stage0.json order with
// finit_module. It proves the kernel unpacks our cpio (zstd on amd64, gzip
// on arm64) including a hard link, that the closure's order satisfies every
// symbol dependency, and that virtio-blk finds a disk once the modules are
// in.
func TestVMBoot(t *testing.T) {
	for _, tc := range []struct {
		arch string
		c    cpio.Compression
	}{
		{"amd64", cpio.Zstd},
		{"arm64", cpio.Gzip},
	} {
		t.Run(tc.arch, func(t *testing.T) {
			hello := []byte("shared bytes\n")
			g := vmtest.NewGuest(t, tc.arch, vmtest.WithModules(kernel.DefaultVMModules()...),
				vmtest.WithCompression(tc.c), vmtest.WithTree(func(tree *rootfs.Tree) error {
					if err := tree.Add("/etc/hard-a", rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o644, Size: int64(len(hello)), Content: rootfs.Bytes(hello)}); err != nil {
						return err
					}
					return tree.Add("/etc/hard-b", rootfs.Entry{Kind: rootfs.KindHardlink, Target: "/etc/hard-a"})
				}))
			disk := filepath.Join(t.TempDir(), "disk.img")
			if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			m := g.Machine("loglevel=4", "testinit=check")
			m.Disk = disk
			start := time.Now()
			v := vmtest.Boot(t, m)
			err := v.Wait(t, vmBootTimeout)
			t.Logf("%s boot took %v (initrd %s)", tc.arch, time.Since(start), tc.c)
			if err != nil {
				t.Fatalf("QEMU: %v", err)
			}
			checkBootLog(t, v.Console.String(), len(g.Modules))
		})
	}
}

func checkBootLog(t *testing.T, log string, mods int) {
	t.Helper()
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
