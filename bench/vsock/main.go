// Command vsock measures the hybrid vsock channel that ingot's vhost-user
// back-end (hypervisor/vhostuser) gives a VM, against TCP through QEMU user
// networking, the channel gokrazy pushes its updates over. It boots one
// guest under TCG with both devices, as `ingot run` configures them
// (hypervisor/qemu), serves vhost-user-vsock in this process, and moves
// bytes to and from a sink and a source the guest (internal/vmtest's
// testinit) runs on both channels. Run it from the repository root:
//
//	INGOT_KERNEL_DEB=.cache/kernels/linux-image-cloud-amd64.deb go run ./bench/vsock
//
// Each measurement is the median of -runs transfers of -mib MiB after one
// warm-up transfer; a host→guest transfer ends when the guest has read the
// last byte and said so. MB/s are 10^6 bytes per second. The last line is:
//
//	RESULT vsock h2g_mbps=… g2h_mbps=… tcp_h2g_mbps=… speedup=…
//
// where speedup is vsock host→guest over TCP host→guest. Each run also
// shows the CPU time it cost QEMU's vCPU thread (the guest), QEMU's other
// threads and this process, which tell a guest-bound channel from a
// waiting one.
//
// -guest-sched picks the scheduling policy of the guest's endpoints on both
// channels. The default, batch, keeps a woken reader from preempting the
// guest kernel's vsock receive worker after every 3.7 KB packet, which is
// what a bulk receiver in an appliance (an update writer) should do; normal
// measures a reader that does not.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ingotdev/ingot/internal/vmtest"

	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/hypervisor/vhostuser"
	"github.com/ingotdev/ingot/mgmt/transport"
	"golang.org/x/sys/unix"
)

// The guest's endpoints (testinit=serve).
const (
	guestSinkPort   = 5002
	guestSourcePort = 5003
)

// guestSchedParam is the guest's kernel parameter for -guest-sched.
const guestSchedParam = "testinit_sched"

// guestModules are what the guest loads, besides their dependencies.
var guestModules = []string{"virtio_pci", "virtio_net", "vmw_vsock_virtio_transport"}

const (
	guestCID       = 3
	guestMemoryMiB = 512

	dialTimeout  = 10 * time.Second
	readyTimeout = 2 * time.Minute

	// hostBufferBytes is the size of the host's writes and reads, and of
	// the block of random bytes it sends over and over.
	hostBufferBytes = 256 << 10
	warmupBytes     = 32 << 20
)

func main() {
	deb := flag.String("kernel", os.Getenv("INGOT_KERNEL_DEB"), "Debian linux-image-*-cloud-amd64 .deb (default $INGOT_KERNEL_DEB)")
	mib := flag.Int64("mib", 256, "MiB per transfer")
	runs := flag.Int("runs", 3, "transfers per measurement; the median is reported")
	sched := flag.String("guest-sched", "batch", "scheduling policy of the guest's endpoints, both channels: batch or normal (see internal/vmtest/testinit)")
	flag.Parse()
	if *deb == "" {
		fmt.Fprintln(os.Stderr, "bench/vsock: no kernel: set INGOT_KERNEL_DEB or -kernel to a Debian linux-image-*-cloud-amd64 .deb")
		os.Exit(2)
	}
	if *mib < 1 || *runs < 1 {
		fmt.Fprintln(os.Stderr, "bench/vsock: -mib and -runs must be at least 1")
		os.Exit(2)
	}
	if *sched != "batch" && *sched != "normal" {
		fmt.Fprintf(os.Stderr, "bench/vsock: -guest-sched %q, want batch or normal\n", *sched)
		os.Exit(2)
	}
	if err := run(context.Background(), *deb, *mib<<20, *runs, *sched); err != nil {
		fmt.Fprintln(os.Stderr, "bench/vsock:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, deb string, n int64, runs int, sched string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work, err := os.MkdirTemp("", "ingot-bench-vsock-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	guest, err := vmtest.BuildGuest(ctx, deb, "amd64", work, vmtest.WithModules(guestModules...))
	if err != nil {
		return err
	}

	uds := filepath.Join(work, "vsock.sock")
	vhost := filepath.Join(work, "vhost.sock")
	dev, err := vhostuser.NewDevice(guestCID, uds)
	if err != nil {
		return err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: vhost, Net: "unix"})
	if err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- dev.ServeListener(ctx, l) }()
	defer func() {
		cancel()
		<-served
	}()

	tcpPort, err := vmtest.FreeTCPPort()
	if err != nil {
		return err
	}
	console := &vmtest.Console{}
	m := guest.Machine("quiet", "testinit=serve", "testinit_tcp=1", guestSchedParam+"="+sched)
	m.MemoryMiB, m.CPUs, m.VhostUserVsock, m.RunDir = guestMemoryMiB, 1, vhost, work
	m.Forwards = []qemu.Forward{{Proto: "tcp", HostPort: tcpPort, GuestPort: guestSinkPort}}
	cmd, err := m.Command(qemu.AccelTCG)
	if err != nil {
		return err
	}
	// Named threads let sampleCPU tell the vCPU from the rest.
	cmd.Args = append(cmd.Args, "-name", "bench-vsock,debug-threads=on")
	cmd.Stdout, cmd.Stderr = console, console
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting QEMU: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	fail := func(err error) error {
		return fmt.Errorf("%w\nguest console (tail):\n%s", err, console.Tail(4000))
	}

	vsockTarget := func(port int) string { return fmt.Sprintf("unix://%s?port=%d", uds, port) }
	tcpTarget := fmt.Sprintf("tcp://127.0.0.1:%d", tcpPort)
	if err := waitReady(ctx, vsockTarget(guestSinkPort), exited); err != nil {
		return fail(err)
	}
	fmt.Printf("guest ready in %.2fs (TCG; vsock CID %d on %s, TCP 127.0.0.1:%d -> guest :%d; guest endpoints SCHED_%s)\n",
		time.Since(start).Seconds(), guestCID, uds, tcpPort, guestSinkPort, strings.ToUpper(sched))

	block := make([]byte, hostBufferBytes)
	rand.NewChaCha8([32]byte{1}).Read(block)
	measures := []struct {
		name string
		f    func(int64) (time.Duration, string, error)
	}{
		{"vsock host->guest", func(n int64) (time.Duration, string, error) { return sendTo(ctx, vsockTarget(guestSinkPort), n, block) }},
		{"vsock guest->host", func(n int64) (time.Duration, string, error) {
			d, err := receiveFrom(ctx, vsockTarget(guestSourcePort), n)
			return d, "", err
		}},
		{"tcp host->guest", func(n int64) (time.Duration, string, error) { return sendTo(ctx, tcpTarget, n, block) }},
	}
	mbps := make([]float64, len(measures))
	for i, m := range measures {
		if _, _, err := m.f(warmupBytes); err != nil {
			return fail(fmt.Errorf("%s: warm-up: %w", m.name, err))
		}
		var rates []float64
		for r := range runs {
			before := sampleCPU(cmd.Process.Pid)
			d, busy, err := m.f(n)
			if err != nil {
				return fail(fmt.Errorf("%s: run %d: %w", m.name, r+1, err))
			}
			used := sampleCPU(cmd.Process.Pid).sub(before)
			rate := float64(n) / 1e6 / d.Seconds()
			rates = append(rates, rate)
			note := ""
			if busy != "" {
				note = fmt.Sprintf(", guest %s%% busy", busy)
			}
			fmt.Printf("%-18s run %d: %d MiB in %6.3fs = %7.1f MB/s (CPU s: vCPU %.2f, QEMU rest %.2f, this process %.2f%s)\n",
				m.name, r+1, n>>20, d.Seconds(), rate, used.vcpu, used.qemuRest, used.self, note)
		}
		slices.Sort(rates)
		mbps[i] = rates[len(rates)/2]
	}
	fmt.Printf("RESULT vsock h2g_mbps=%.1f g2h_mbps=%.1f tcp_h2g_mbps=%.1f speedup=%.2f\n",
		mbps[0], mbps[1], mbps[2], mbps[0]/mbps[2])
	return nil
}

// waitReady dials target until the guest accepts. The guest listens on TCP
// before vsock, so a vsock port that answers means both are up (a TCP port
// forwarded by QEMU accepts even when the guest does not listen).
//
// It gives up when QEMU exits (exited delivers its Wait error, and is
// refilled so the caller can still wait on it).
func waitReady(ctx context.Context, target string, exited chan error) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		c, err := dial(ctx, target)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("guest not ready within %v: %w", readyTimeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case werr := <-exited:
			exited <- werr
			return fmt.Errorf("QEMU exited before the guest was ready: %v", werr)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func dial(ctx context.Context, target string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	return transport.Dial(ctx, target)
}

type halfCloser interface{ CloseWrite() error }

// sendTo writes n bytes (block, repeated) to the guest's sink at target and
// returns the time until the sink reports having read them all, and the
// share of guest CPU time that was busy meanwhile, as the sink reported it.
func sendTo(ctx context.Context, target string, n int64, block []byte) (time.Duration, string, error) {
	c, err := dial(ctx, target)
	if err != nil {
		return 0, "", err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	start := time.Now()
	for left := n; left > 0; {
		k := min(left, int64(len(block)))
		if _, err := c.Write(block[:k]); err != nil {
			return 0, "", fmt.Errorf("write after %d bytes: %w", n-left, err)
		}
		left -= k
	}
	if err := c.(halfCloser).CloseWrite(); err != nil {
		return 0, "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	d := time.Since(start)
	if err != nil {
		return 0, "", fmt.Errorf("reading the sink's count: %w", err)
	}
	count, busy, _ := strings.Cut(strings.TrimSpace(line), " ")
	if got, err := strconv.ParseInt(count, 10, 64); err != nil || got != n {
		return 0, "", fmt.Errorf("sink read %q bytes, want %d", count, n)
	}
	return d, busy, nil
}

// receiveFrom asks the guest's source at target for n bytes and returns
// the time until the last one arrived and the guest half-closed.
func receiveFrom(ctx context.Context, target string, n int64) (time.Duration, error) {
	c, err := dial(ctx, target)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	start := time.Now()
	if _, err := fmt.Fprintf(c, "%d\n", n); err != nil {
		return 0, err
	}
	got, err := io.CopyBuffer(io.Discard, c, make([]byte, hostBufferBytes))
	d := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("read after %d bytes: %w", got, err)
	}
	if got != n {
		return 0, fmt.Errorf("source sent %d bytes, want %d", got, n)
	}
	return d, nil
}

// cpuUse is CPU time spent so far, in seconds: QEMU's vCPU thread (the
// guest's work under TCG), QEMU's other threads (its main loop runs slirp
// and relays vhost-user interrupts), and this process (the vhost-user
// back-end and the host end of every transfer). They show where a transfer
// spends its time better than wall time on a busy machine does.
type cpuUse struct{ vcpu, qemuRest, self float64 }

func (a cpuUse) sub(b cpuUse) cpuUse {
	return cpuUse{a.vcpu - b.vcpu, a.qemuRest - b.qemuRest, a.self - b.self}
}

// vcpuThreadName is what QEMU names its vCPU thread under TCG with
// -name ...,debug-threads=on.
const vcpuThreadName = "CPU 0/TCG"

// userHz is the unit of /proc/<pid>/stat times (USER_HZ, 100 on Linux).
const userHz = 100

// sampleCPU reads the CPU times; a value it cannot read counts as zero.
func sampleCPU(qemuPID int) cpuUse {
	var u cpuUse
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", qemuPID))
	for _, t := range tasks {
		comm, _ := os.ReadFile(filepath.Join(t, "comm"))
		stat, _ := os.ReadFile(filepath.Join(t, "stat"))
		// Fields after the parenthesised command name: utime and stime
		// are the 12th and 13th.
		_, rest, ok := strings.Cut(string(stat), ") ")
		f := strings.Fields(rest)
		if !ok || len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseUint(f[11], 10, 64)
		st, _ := strconv.ParseUint(f[12], 10, 64)
		sec := float64(ut+st) / userHz
		if strings.TrimSpace(string(comm)) == vcpuThreadName {
			u.vcpu += sec
		} else {
			u.qemuRest += sec
		}
	}
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) == nil {
		u.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	}
	return u
}
