// Command guest is /init of the initramfs that bench/vsock boots. It loads
// the modules /etc/ingot/stage0.json lists (virtio PCI, virtio-net, the
// virtio vsock transport and their dependencies, in load order), gives eth0
// QEMU user networking's guest address with ioctls, and serves the same two
// endpoints on TCP and on vsock:
//
//	sinkPort    reads to EOF and answers "<bytes> <busy>\n", busy being the
//	            percentage of guest CPU time not idle meanwhile; no hashing,
//	            so the guest CPU under TCG measures the channel, not sha256
//	sourcePort  reads "<n>\n", sends n bytes, half-closes
//
// TCP listens before vsock, so once the host reaches a vsock port the TCP
// ports are up too. It prints "guest: ready" when both listen.
//
// With INGOT_BENCH_SCHED=batch in its environment (the kernel hands init a
// key=value parameter of its command line that it does not know itself) it
// runs all its threads as SCHED_BATCH, so that a reader woken by arriving
// data does not preempt the kernel thread delivering it. That matters for
// vsock: Linux's virtio-vsock driver receives in a kworker, packet by packet
// (at most 3732 payload bytes each), and a reader of normal policy preempts
// it after every packet to read that one packet: a context switch and a
// syscall per 3.7 KB, which triple the guest's receive cost under TCG. TCP
// receives in softirq context, which a reader cannot preempt, and gains
// less. Both channels are measured under the same policy.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ingotdev/ingot/appliance/kmod"
	"github.com/ingotdev/ingot/packer/format/spec"

	"github.com/ingotdev/ingot/mgmt/transport"
	"golang.org/x/sys/unix"
)

// The ports, the same number on TCP and vsock. bench/vsock uses the same.
const (
	sinkPort   = 5002
	sourcePort = 5003
)

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

// schedEnv names the environment variable that selects the scheduling
// policy of the guest's threads.
const schedEnv = "INGOT_BENCH_SCHED"

// ioBufferBytes is the size of each read and write the endpoints make.
const ioBufferBytes = 256 << 10

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "guest:", err)
	}
	for {
		time.Sleep(time.Hour) // PID 1 must not exit
	}
}

func run() error {
	if err := setup(); err != nil {
		return err
	}
	switch policy := os.Getenv(schedEnv); policy {
	case "batch":
		if err := schedBatch(); err != nil {
			return err
		}
		fmt.Println("guest: threads run SCHED_BATCH")
	case "", "normal":
	default:
		return fmt.Errorf("%s=%q, want batch or normal", schedEnv, policy)
	}
	if err := configureNet(netInterface, guestAddr, guestMask); err != nil {
		return err
	}
	serve := map[uint32]func(net.Conn){sinkPort: sink, sourcePort: source}
	for port, f := range serve {
		l, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
		if err != nil {
			return err
		}
		go acceptLoop(l, f)
	}
	for port, f := range serve {
		l, err := transport.Listen(port)
		if err != nil {
			return err
		}
		go acceptLoop(l, f)
	}
	fmt.Println("guest: ready")
	return nil
}

func setup() error {
	for _, m := range []struct{ fs, dir string }{{"devtmpfs", "/dev"}, {"proc", "/proc"}, {"sysfs", "/sys"}} {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.fs, m.dir, m.fs, 0, ""); err != nil {
			return fmt.Errorf("mount %s: %w", m.dir, err)
		}
	}
	if con, err := os.OpenFile("/dev/console", os.O_RDWR, 0); err == nil {
		for fd := 0; fd < 3; fd++ {
			unix.Dup2(int(con.Fd()), fd)
		}
	}
	return loadModules()
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

// loadModules loads the modules of stage0.json in the order listed, which
// is a dependency order.
func loadModules() error {
	cfg, err := spec.LoadStage0(spec.Stage0Path)
	if err != nil {
		return err
	}
	return errors.Join(kmod.LoadAll(cfg.Modules)...)
}

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
			fmt.Fprintln(os.Stderr, "guest: accept:", err)
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
			fmt.Fprintln(os.Stderr, "guest: sink:", err)
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

func source(c net.Conn) {
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	n, err := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
	if err != nil || n < 0 {
		fmt.Fprintf(os.Stderr, "guest: source: request %q\n", line)
		return
	}
	buf := make([]byte, ioBufferBytes)
	for i := range buf {
		buf[i] = byte(i*7 + i>>8) // not all zeros, though nothing compresses here
	}
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := c.Write(buf[:k]); err != nil {
			fmt.Fprintln(os.Stderr, "guest: source:", err)
			return
		}
		n -= k
	}
	c.(halfCloser).CloseWrite()
	io.Copy(io.Discard, c)
}
