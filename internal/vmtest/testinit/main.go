// Command testinit is the PID 1 of the VM tests' guests and of bench/vsock
// (vmtest.Guest builds it into their initramfs). It mounts /dev, /proc and
// /sys, loads the modules /etc/ingot/stage0.json lists, in that order,
// printing "module PATH: ok" or "module PATH: error …" for each, and then
// does what the kernel parameter testinit= says:
//
//	check  report what packer/initramfs's test put in the archive (a hard
//	       link, the filesystems, the virtio disk), print "TESTINIT DONE"
//	       and power off
//	vfat   mount /dev/vda with Linux's vfat, list every directory ("D
//	       ./path") and file ("F <md5> ./path") between INGOT-VFAT-BEGIN
//	       and INGOT-VFAT-END, write, copy and delete through the driver,
//	       unmount ("INGOT-VFAT-UNMOUNTED") and power off
//	serve  serve on vsock (and, with testinit_tcp=1, on TCP at QEMU user
//	       networking's guest address) until the host stops the VM:
//
//	       5000  echo: copies everything back, half-closes at EOF
//	       5001  control: "reboot\n" reboots the guest
//	       5002  sink: reads to EOF, answers "<bytes> <busy>\n", busy being
//	             the percentage of guest CPU time not idle meanwhile (no
//	             hashing: sha256 is slow under TCG and would measure the
//	             guest CPU, not the channel)
//	       5003  source: reads "<n>\n", sends n bytes of Pattern
//
//	       and once per boot dials host CID 2 port 6000 and sends
//	       "boot <boot id>". It prints "testinit: ready" when it listens;
//	       TCP listens before vsock, so a vsock port that answers means
//	       both are up.
//
// The kernel hands init each key=value parameter it does not know itself
// as an environment variable, which is how testinit reads its parameters.
// With testinit_sched=batch every thread runs as SCHED_BATCH, so that a
// reader woken by arriving data does not preempt the kernel thread
// delivering it. That matters for vsock: Linux's virtio-vsock driver
// receives in a kworker, packet by packet (at most 3732 payload bytes
// each), and a reader of normal policy preempts it after every packet to
// read that one packet: a context switch and a syscall per 3.7 KB, which
// triple the guest's receive cost under TCG. TCP receives in softirq
// context, which a reader cannot preempt.
//
// It is pure Go (no cgo) so it cross-compiles for every target.
package main

import (
	"bufio"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ingotdev/ingot/appliance/kmod"
	"github.com/ingotdev/ingot/mgmt/transport"
	"github.com/ingotdev/ingot/packer/format/spec"
	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

func main() {
	setup()
	var err error
	switch mode := os.Getenv("testinit"); mode {
	case "check":
		check()
	case "vfat":
		err = vfat()
	case "serve":
		if err = serve(); err == nil {
			hang()
		}
	default:
		err = fmt.Errorf("testinit=%q: want check, vfat or serve", mode)
	}
	if err != nil {
		fmt.Println("testinit: error", err)
	}
	powerOff()
}

func hang() {
	for {
		time.Sleep(time.Hour) // PID 1 must not exit
	}
}

func powerOff() {
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	hang()
}

// setup mounts the kernel filesystems, makes the console init's standard
// streams and loads the modules of stage0.json in the order listed, which
// is a dependency order.
func setup() {
	for _, m := range []struct{ fs, dir string }{{"devtmpfs", "/dev"}, {"proc", "/proc"}, {"sysfs", "/sys"}} {
		os.MkdirAll(m.dir, 0o755)
		if err := unix.Mount(m.fs, m.dir, m.fs, 0, ""); err != nil {
			fmt.Printf("mount %s: error %v\n", m.dir, err)
		}
	}
	if con, err := os.OpenFile("/dev/console", os.O_RDWR, 0); err == nil {
		for fd := 0; fd < 3; fd++ {
			unix.Dup2(int(con.Fd()), fd)
		}
	}
	cfg, err := spec.LoadStage0(spec.Stage0Path)
	if err != nil {
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
}

// check reports what packer/initramfs's VM test looks for.
func check() {
	checkHardlink("/etc/hard-a", "/etc/hard-b")
	fs, _ := os.ReadFile("/proc/filesystems")
	var found []string
	for _, name := range []string{"squashfs", "vfat"} {
		if strings.Contains(string(fs), "\t"+name+"\n") {
			found = append(found, name)
		}
	}
	fmt.Printf("filesystems: %s\n", strings.Join(found, " "))
	if _, err := os.Stat("/sys/block/vda"); err == nil {
		fmt.Println("virtio-blk: vda")
	} else {
		fmt.Printf("virtio-blk: error %v\n", err)
	}
	fmt.Println("TESTINIT DONE")
}

func checkHardlink(a, b string) {
	var sa, sb unix.Stat_t
	if err := unix.Stat(a, &sa); err != nil {
		fmt.Printf("hardlink: error %v\n", err)
		return
	}
	if err := unix.Stat(b, &sb); err != nil {
		fmt.Printf("hardlink: error %v\n", err)
		return
	}
	data, _ := os.ReadFile(a)
	fmt.Printf("hardlink: same inode %v, links %d, content %q\n", sa.Ino == sb.Ino, sa.Nlink, data)
}

// vfatDiskWait bounds the wait for /dev/vda after virtio_blk loaded.
const vfatDiskWait = 10 * time.Second

// vfat lets Linux's vfat driver read and write the FAT volume on /dev/vda
// for packer/fat's VM test.
func vfat() error {
	const mnt = "/mnt"
	for deadline := time.Now().Add(vfatDiskWait); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat("/dev/vda"); err == nil {
			break
		} else if time.Now().After(deadline) {
			return err
		}
	}
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("/dev/vda", mnt, "vfat", 0, "utf8,shortname=mixed"); err != nil {
		return fmt.Errorf("mount /dev/vda: %w", err)
	}
	fmt.Println("INGOT-VFAT-BEGIN")
	err := fs.WalkDir(os.DirFS(mnt), ".", func(p string, d fs.DirEntry, err error) error {
		switch {
		case err != nil || p == ".":
			return err
		case d.IsDir():
			fmt.Printf("D ./%s\n", p)
			return nil
		}
		b, err := os.ReadFile(filepath.Join(mnt, p))
		sum := md5.Sum(b)
		fmt.Printf("F %s ./%s\n", hex.EncodeToString(sum[:]), p)
		return err
	})
	fmt.Println("INGOT-VFAT-END")
	if err != nil {
		return err
	}
	cmdline, err := os.ReadFile(filepath.Join(mnt, "cmdline.txt"))
	if err != nil {
		return err
	}
	if err := errors.Join(
		os.WriteFile(filepath.Join(mnt, "Written By Linux.txt"), []byte("written by linux\n"), 0o644),
		os.MkdirAll(filepath.Join(mnt, "linuxdir/sub"), 0o755),
		os.WriteFile(filepath.Join(mnt, "linuxdir/sub/a rather long copied name.TXT"), cmdline, 0o644),
		os.Remove(filepath.Join(mnt, "initrd.img")),
	); err != nil {
		return err
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		return fmt.Errorf("unmount: %w", err)
	}
	fmt.Println("INGOT-VFAT-UNMOUNTED")
	return nil
}

// The ports of serve, the same number on TCP and vsock.
const (
	echoPort    = 5000
	controlPort = 5001
	sinkPort    = 5002
	sourcePort  = 5003
	// hostBootPort is the host's port the guest announces each boot on.
	hostBootPort = 6000
)

// ioBufferBytes is the size of each read and write the endpoints make.
const ioBufferBytes = 256 << 10

// serve starts the endpoints.
func serve() error {
	switch policy := os.Getenv("testinit_sched"); policy {
	case "batch":
		if err := schedBatch(); err != nil {
			return err
		}
		fmt.Println("testinit: threads run SCHED_BATCH")
	case "", "normal":
	default:
		return fmt.Errorf("testinit_sched=%q, want batch or normal", policy)
	}
	endpoints := map[uint32]func(net.Conn){echoPort: echo, controlPort: control, sinkPort: sink, sourcePort: source}
	if os.Getenv("testinit_tcp") == "1" {
		if err := configureNet(netInterface, guestAddr, guestMask); err != nil {
			return err
		}
		for port, f := range endpoints {
			l, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
			if err != nil {
				return err
			}
			go acceptLoop(l, f)
		}
	}
	for port, f := range endpoints {
		l, err := transport.Listen(port)
		if err != nil {
			return err
		}
		go acceptLoop(l, f)
	}
	fmt.Println("testinit: ready")
	go announceBoot()
	return nil
}

// schedBatch makes every thread of this process, and so every thread it
// creates later, SCHED_BATCH.
func schedBatch() error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetAttr(tid, &unix.SchedAttr{Policy: unix.SCHED_BATCH}, 0); err != nil {
			return fmt.Errorf("thread %d: SCHED_BATCH: %w", tid, err)
		}
	}
	return nil
}

// QEMU user networking (slirp) always puts the guest at 10.0.2.15/24; the
// host's forwarded connections come from 10.0.2.2, inside that subnet, so
// no route is needed.
const netInterface = "eth0"

var (
	guestAddr = [4]byte{10, 0, 2, 15}
	guestMask = [4]byte{255, 255, 255, 0}
)

// interfaceWait bounds the wait for eth0 after virtio_net loaded (PCI
// probing is normally done by the time finit_module returns).
const interfaceWait = 10 * time.Second

// configureNet sets name's IPv4 address and netmask and brings it up.
func configureNet(name string, addr, mask [4]byte) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%s: socket: %w", name, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	for deadline := time.Now().Add(interfaceWait); ; {
		err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.ENODEV) || time.Now().After(deadline) {
			return fmt.Errorf("%s: SIOCGIFFLAGS: %w", name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("%s: SIOCSIFFLAGS: %w", name, err)
	}
	if err := ifr.SetInet4Addr(addr[:]); err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFADDR, ifr); err != nil {
		return fmt.Errorf("%s: SIOCSIFADDR %v: %w", name, net.IP(addr[:]), err)
	}
	if err := ifr.SetInet4Addr(mask[:]); err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFNETMASK, ifr); err != nil {
		return fmt.Errorf("%s: SIOCSIFNETMASK %v: %w", name, net.IP(mask[:]), err)
	}
	return nil
}

func acceptLoop(l net.Listener, serve func(net.Conn)) {
	for {
		c, err := l.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "testinit: accept:", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go func() {
			defer c.Close()
			serve(c)
		}()
	}
}

type halfCloser interface{ CloseWrite() error }

func echo(c net.Conn) {
	if _, err := io.CopyBuffer(c, c, make([]byte, ioBufferBytes)); err != nil {
		fmt.Fprintln(os.Stderr, "testinit: echo:", err)
	}
	c.(halfCloser).CloseWrite()
	// Wait for the host to close, so the close is orderly.
	io.Copy(io.Discard, c)
}

func control(c net.Conn) {
	line, _ := bufio.NewReader(c).ReadString('\n')
	if strings.TrimSpace(line) == "reboot" {
		fmt.Println("testinit: rebooting")
		unix.Sync()
		unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	}
}

func sink(c net.Conn) {
	busy0, total0 := cpuTimes()
	// A plain read loop: io.Copy to io.Discard would read through
	// io.Discard's own 8 KiB buffer instead of ioBufferBytes.
	buf := make([]byte, ioBufferBytes)
	var n int64
	for {
		k, err := c.Read(buf)
		n += int64(k)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "testinit: sink:", err)
			return
		}
	}
	busy1, total1 := cpuTimes()
	busy := 0.0
	if total1 > total0 {
		busy = 100 * float64(busy1-busy0) / float64(total1-total0)
	}
	fmt.Fprintf(c, "%d %.0f\n", n, busy)
}

// cpuTimes returns the busy and total CPU time of the guest so far, in
// clock ticks, from the first line of /proc/stat. A busy share well below
// 100% during a transfer means the guest waited for the channel.
func cpuTimes() (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0
	}
	var idle uint64
	for i, s := range f[1:] {
		v, _ := strconv.ParseUint(s, 10, 64)
		total += v
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		}
	}
	return total - idle, total
}

// patternBlockBytes is the length of the block the source repeats.
const patternBlockBytes = 1 << 20

// pattern is the byte stream the source port sends, a block of
// patternBlockBytes over and over; hypervisor/vhostuser's test generates
// the same one to check it.
func pattern() []byte {
	r := rand.New(rand.NewPCG(42, 42))
	b := make([]byte, patternBlockBytes)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func source(c net.Conn) {
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	n, err := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
	if err != nil || n < 0 {
		fmt.Fprintf(os.Stderr, "testinit: source: request %q\n", line)
		return
	}
	p := pattern()
	for off := int64(0); n > 0; off = (off + ioBufferBytes) % patternBlockBytes {
		k := min(n, ioBufferBytes)
		if _, err := c.Write(p[off : off+k]); err != nil {
			fmt.Fprintln(os.Stderr, "testinit: source:", err)
			return
		}
		n -= k
	}
	c.(halfCloser).CloseWrite()
	io.Copy(io.Discard, c)
}

// announceBoot tells the host (through <uds>_6000) which boot this is.
func announceBoot() {
	id, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	for attempt := 0; attempt < 50; attempt++ {
		c, err := vsock.Dial(vsock.Host, hostBootPort, nil)
		if err != nil {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		fmt.Fprintf(c, "boot %s", id)
		c.Close()
		return
	}
	fmt.Fprintln(os.Stderr, "testinit: could not reach host port", hostBootPort)
}
