// Command testinit is a stand-in for stage0 in the initramfs VM tests: as
// PID 1 it loads the modules /etc/ingot/stage0.json lists, in order, checks
// what the tests put in the archive and reports on the console, then powers
// the VM off. It is pure Go (no cgo) so it cross-compiles for every target.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/ingotdev/ingot/appliance/kmod"
)

func main() {
	defer func() {
		fmt.Println("TESTINIT DONE")
		syscall.Sync()
		syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
	}()
	for _, m := range []struct{ src, dst, fs string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"},
	} {
		if err := syscall.Mount(m.src, m.dst, m.fs, 0, ""); err != nil {
			fmt.Printf("mount %s: error %v\n", m.dst, err)
		}
	}
	b, err := os.ReadFile("/etc/ingot/stage0.json")
	if err != nil {
		fmt.Printf("config: error %v\n", err)
		return
	}
	var cfg struct{ Modules []string }
	if err := json.Unmarshal(b, &cfg); err != nil {
		fmt.Printf("config: error %v\n", err)
		return
	}
	for _, p := range cfg.Modules {
		if err := kmod.Load(p); err != nil {
			fmt.Printf("module %s: error %v\n", p, err)
			continue
		}
		fmt.Printf("module %s: ok\n", p)
	}
	checkHardlink("/etc/hard-a", "/etc/hard-b")
	fs, _ := os.ReadFile("/proc/filesystems")
	var want []string
	for _, name := range []string{"squashfs", "vfat"} {
		if strings.Contains(string(fs), "\t"+name+"\n") {
			want = append(want, name)
		}
	}
	fmt.Printf("filesystems: %s\n", strings.Join(want, " "))
	if _, err := os.Stat("/sys/block/vda"); err == nil {
		fmt.Println("virtio-blk: vda")
	} else {
		fmt.Printf("virtio-blk: error %v\n", err)
	}
}

func checkHardlink(a, b string) {
	var sa, sb syscall.Stat_t
	if err := syscall.Stat(a, &sa); err != nil {
		fmt.Printf("hardlink: error %v\n", err)
		return
	}
	if err := syscall.Stat(b, &sb); err != nil {
		fmt.Printf("hardlink: error %v\n", err)
		return
	}
	data, _ := os.ReadFile(a)
	fmt.Printf("hardlink: same inode %v, links %d, content %q\n", sa.Ino == sb.Ino, sa.Nlink, data)
}
