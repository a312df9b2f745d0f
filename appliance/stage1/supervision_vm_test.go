package stage1

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ingotdev/ingot/internal/vmtest"

	"github.com/ingotdev/ingot/builder/assemble"
	ingotconfig "github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/hypervisor/vm"
	"github.com/ingotdev/ingot/packer/format/gpt"
	"github.com/ingotdev/ingot/packer/format/layout"
)

// The pipeline test: examples/supervision goes through the real builder and
// packer (assemble.Image) and boots under vm.Run, as `ingot run` would boot
// it, so it tests init as users get it, not a hand-made disk.

const (
	// supervisionWatch is how long boot 1 watches the services.
	supervisionWatch = 20 * time.Second
	// pipelineBootTimeout bounds each boot under TCG.
	pipelineBootTimeout = 3 * time.Minute
	// pipelineStopTimeout bounds the power-off through init after cancel.
	pipelineStopTimeout = time.Minute
	webGuestPort        = 8080
)

// pipelineVM is one run of vm.Run in the background.
type pipelineVM struct {
	t       *testing.T
	console *vmtest.Console
	port    int
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

func startPipelineVM(t *testing.T, image, runDir string, opts ...func(*vm.Config)) *pipelineVM {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	v := &pipelineVM{t: t, console: &vmtest.Console{}, port: vmtest.FreePort(t), cancel: cancel, done: make(chan error, 1)}
	c := vm.Config{
		Image: image, RunDir: runDir, Accel: qemu.AccelTCG, MemoryMiB: 512, Vsock: vm.VsockNone,
		Forwards: []qemu.Forward{{Proto: "tcp", HostPort: v.port, GuestPort: webGuestPort}},
		Console:  v.console, Logf: t.Logf,
	}
	for _, o := range opts {
		o(&c)
	}
	go func() { v.done <- vm.Run(ctx, c) }()
	t.Cleanup(func() {
		if !v.stopped {
			cancel()
			<-v.done
		}
		if t.Failed() {
			t.Logf("console of %s:\n%s", filepath.Base(runDir), tail(v.console.String()))
		}
	})
	return v
}

// waitFor waits until the console matches re and returns the submatches.
func (v *pipelineVM) waitFor(re *regexp.Regexp, timeout time.Duration) []string {
	v.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if m := re.FindStringSubmatch(v.console.String()); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("console did not show %q within %v", re, timeout)
		}
		select {
		case err := <-v.done:
			v.stopped = true
			v.t.Fatalf("VM stopped before the console showed %q: %v", re, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// web fetches the web service's page through the forwarded port, retrying
// while the service comes up.
func (v *pipelineVM) web() string {
	v.t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	url := fmt.Sprintf("http://127.0.0.1:%d/", v.port)
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := client.Get(url)
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil && resp.StatusCode == http.StatusOK {
				return strings.TrimSpace(string(b))
			}
			err = fmt.Errorf("status %s, read error %v", resp.Status, rerr)
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("GET %s: %v", url, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// stop cancels vm.Run, which presses the ACPI power button; init must
// power the guest off and vm.Run return nil. It returns the whole console.
func (v *pipelineVM) stop() string {
	v.t.Helper()
	v.cancel()
	select {
	case err := <-v.done:
		v.stopped = true
		if err != nil {
			v.t.Errorf("vm.Run after cancel = %v, want nil", err)
		}
	case <-time.After(pipelineStopTimeout):
		v.t.Fatalf("the guest did not power off within %v of the power button", pipelineStopTimeout)
	}
	return v.console.String()
}

func supervisionConfig(t *testing.T) *ingotconfig.Config {
	t.Helper()
	vmtest.Kernel(t, "amd64")
	cfg, err := ingotconfig.Load("../../examples/supervision/ingot.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

var (
	webPageRE      = regexp.MustCompile(`^web build (\S+) started (\S+) pid (\d+)$`)
	counterStartRE = regexp.MustCompile(`counter: resuming at (\d+) in (\S+)`)
	// counterStoredRE is the counter's line once its first count of a run is
	// on perm.
	counterStoredRE = regexp.MustCompile(`counter: stored (\d+)`)
	counterStopRE   = regexp.MustCompile(`counter: stopping at (\d+)`)
	bootDoneRE      = regexp.MustCompile(`init: boot done`)
)

// TestVMSupervisionPipeline is issue 4's "Done when" for the VM: three
// services, 20 s of supervision, a power-off through init, a second boot
// that finds the counter and the logs of the first on /perm, and boots
// with perm unusable and without a perm partition at all.
func TestVMSupervisionPipeline(t *testing.T) {
	cfg := supervisionConfig(t)
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	img := filepath.Join(dir, "supervision.img")
	rep, err := assemble.Image(t.Context(), cfg, ingotconfig.TargetVMAmd64, img, assemble.WithCacheDir(cache))
	if err != nil {
		t.Fatal(err)
	}

	// Boot 1: watch the services for 20 s, then power off through init.
	vm1 := startPipelineVM(t, img, filepath.Join(dir, "run1"))
	vm1.waitFor(bootDoneRE, pipelineBootTimeout)
	watchStart := time.Now()
	page1 := vm1.web()
	m := webPageRE.FindStringSubmatch(page1)
	if m == nil || m[1] != rep.BuildID {
		t.Fatalf("web page = %q, want %q with build id %s", page1, webPageRE, rep.BuildID)
	}
	vm1.waitFor(counterStartRE, time.Minute)
	time.Sleep(supervisionWatch - time.Since(watchStart))
	watched := vm1.console.String()
	if page := vm1.web(); page != page1 {
		t.Errorf("web page after %v = %q, want %q (the same process)", supervisionWatch, page, page1)
	}
	if n := strings.Count(watched, "web: started pid"); n != 1 || strings.Contains(watched, "web: exited") {
		t.Errorf("in %v web started %d times (exited: %v), want once and never exited",
			supervisionWatch, n, strings.Contains(watched, "web: exited"))
	}
	checkCrasherBackoff(t, watched, supervisionWatch)
	if m := counterStartRE.FindStringSubmatch(watched); m[1] != "0" || m[2] != "/perm/counter" {
		t.Errorf("boot 1: counter resumed at %s in %s, want 0 in /perm/counter", m[1], m[2])
	}
	log1 := vm1.stop()
	expectLines(t, "boot 1", log1,
		"init: network: eth0 10.0.2.15/24 via 10.0.2.2 (from cmdline)",
		"init: dhcp: not started: the network is static (from cmdline)",
		"init: perm: /dev/vda4 mounted on /perm",
		"init: power button pressed",
		"counter: stopping at",
		"init: perm: unmounted",
		"init: power off now")
	stop1 := counterStopRE.FindStringSubmatch(log1)
	if stop1 == nil {
		t.Fatalf("boot 1: counter did not report where it stopped")
	}
	if n, _ := strconv.Atoi(stop1[1]); n < 50 {
		t.Errorf("boot 1: counter stopped at %d after more than %v at 100 ms a tick, want at least 50", n, supervisionWatch)
	}
	if got := strings.TrimSpace(imagePermFile(t, img, "/counter/count")); got != stop1[1] {
		t.Errorf("boot 1: /perm/counter/count = %q, want %s, where the counter stopped", got, stop1[1])
	}

	// Boot 2: the counter resumes where it stopped; the first boot's logs
	// are still on /perm.
	vm2 := startPipelineVM(t, img, filepath.Join(dir, "run2"))
	start2 := vm2.waitFor(counterStartRE, pipelineBootTimeout)
	if start2[1] != stop1[1] {
		t.Errorf("boot 2: counter resumed at %s, want %s, where boot 1 stopped it", start2[1], stop1[1])
	}
	vm2.web()
	log2 := vm2.stop()
	expectLines(t, "boot 2", log2, "init: perm: unmounted", "init: power off now")
	counterLog := imagePermFile(t, img, "/log/counter.log")
	for _, want := range []string{"stdout resuming at 0 in /perm/counter", "stdout stopping at " + stop1[1], "stdout resuming at " + stop1[1]} {
		if !strings.Contains(counterLog, want) {
			t.Errorf("after boot 2, /perm/log/counter.log lacks %q:\n%s", want, tail(counterLog))
		}
	}
	if n := strings.Count(imagePermFile(t, img, "/log/init.log"), "ingot-init stage1"); n != 2 {
		t.Errorf("after boot 2, /perm/log/init.log holds %d boots, want 2", n)
	}
	if n := strings.Count(imagePermFile(t, img, "/log/crasher.log"), "crashing on purpose"); n < 5 {
		t.Errorf("after boot 2, /perm/log/crasher.log holds %d crashes, want at least the 5 of boot 1", n)
	}

	// Boot 3: perm is there but cannot be mounted. The appliance comes up,
	// says why, and holds the counter.
	wipePerm(t, img)
	vm3 := startPipelineVM(t, img, filepath.Join(dir, "run3"))
	vm3.waitFor(bootDoneRE, pipelineBootTimeout)
	vm3.web()
	held := vm3.waitFor(regexp.MustCompile(`counter: held: needs /perm, which is not mounted: (.+)`), time.Minute)
	if !strings.Contains(held[1], "mount /dev/vda4 (ext4) on /perm") {
		t.Errorf("boot 3: counter held for %q, want the failed mount named", held[1])
	}
	log3 := vm3.stop()
	expectLines(t, "boot 3", log3, "init: warning: perm: mount /dev/vda4 (ext4) on /perm", "init: power off now")
	if strings.Contains(log3, "counter: started") {
		t.Errorf("boot 3: counter started without /perm")
	}

	// Boot 4: an image without a perm partition at all. The config parser
	// refuses needs_perm with perm off (the service could never start), so
	// the config is changed after parsing: this tests init, not the parser.
	noPerm := supervisionConfig(t)
	noPerm.PermBytes = 0
	img4 := filepath.Join(dir, "supervision-noperm.img")
	if _, err := assemble.Image(t.Context(), noPerm, ingotconfig.TargetVMAmd64, img4, assemble.WithCacheDir(cache)); err != nil {
		t.Fatal(err)
	}
	vm4 := startPipelineVM(t, img4, filepath.Join(dir, "run4"))
	vm4.waitFor(bootDoneRE, pipelineBootTimeout)
	if page := vm4.web(); !webPageRE.MatchString(page) {
		t.Errorf("boot 4: web page = %q, want %q", page, webPageRE)
	}
	vm4.waitFor(regexp.MustCompile(`counter: held: needs /perm, which is not mounted: no ingot.perm=PARTUUID=<guid> on the kernel command line`), time.Minute)
	log4 := vm4.stop()
	expectLines(t, "boot 4", log4, "init: warning: perm: no ingot.perm=PARTUUID=<guid> on the kernel command line", "init: power off now")
}

// checkCrasherBackoff checks the crasher's restarts in the console of the
// first `watch` of a boot: each delay is 100 ms doubling (capped at 30 s)
// shortened by at most 20% jitter, and the number of starts is what that
// law allows. Without backoff the 200 ms crasher would start about 50
// times in 20 s, with gokrazy's fixed 1 s about 16 times.
func checkCrasherBackoff(t *testing.T, console string, watch time.Duration) {
	t.Helper()
	// The delay ends where its digits and unit do: the kernel's console
	// messages may follow on the same line.
	delays := regexp.MustCompile(`crasher: exited: exit status 1 after \S+; restarting in ([0-9.]+[a-zµ]+)`).FindAllStringSubmatch(console, -1)
	for i, m := range delays {
		d, err := time.ParseDuration(m[1])
		want := min(100*time.Millisecond<<i, 30*time.Second)
		if err != nil || d < want*8/10-time.Millisecond || d > want {
			t.Errorf("crasher restart %d: delay %s, want %v..%v", i+1, m[1], want*8/10, want)
		}
	}
	// The band: k restarts need at least 0.8*100ms*(2^k-1) of delay plus
	// k runs of 200 ms, so 20 s allow at most 8 starts; and at most about
	// 1.5 s per run under TCG, so at least 6 starts fit.
	starts := strings.Count(console, "crasher: started pid")
	lo, hi := 5, 9
	if starts < lo || starts > hi {
		t.Errorf("crasher started %d times in about %v, want %d..%d (backoff 100 ms doubling)", starts, watch, lo, hi)
	}
	var ds []string
	for _, m := range delays {
		ds = append(ds, m[1])
	}
	t.Logf("crasher: %d starts, delays %s", starts, strings.Join(ds, " "))
}

// permPartition finds the perm partition of a disk image.
func permPartition(t *testing.T, img string) gpt.Partition {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	tab, err := gpt.Read(f, fi.Size())
	if err != nil {
		t.Fatalf("%s: %v", img, err)
	}
	for _, p := range tab.Partitions {
		if p.Name == layout.PermPartition {
			return p
		}
	}
	t.Fatalf("%s: no %q partition", img, layout.PermPartition)
	return gpt.Partition{}
}

// imagePermFile reads a file from the perm partition of a powered-off
// image, after checking that init left the filesystem clean.
func imagePermFile(t *testing.T, img, path string) string {
	t.Helper()
	p := permPartition(t, img)
	disk, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer disk.Close()
	part := filepath.Join(t.TempDir(), "perm.ext4")
	out, err := os.Create(part)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, io.NewSectionReader(disk, p.OffsetBytes(), p.SizeBytes())); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("e2fsck", "-fn", part).CombinedOutput(); err != nil {
		t.Errorf("perm is not clean after power-off: %v\n%s", err, b)
	}
	b, err := exec.Command("debugfs", "-R", "cat "+path, part).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return string(b)
}

// wipePerm zeroes the start of the perm partition, superblock included, so
// that it no longer mounts.
func wipePerm(t *testing.T, img string) {
	t.Helper()
	p := permPartition(t, img)
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, 1<<20), p.OffsetBytes()); err != nil {
		t.Fatal(err)
	}
}

// TestVMDHCP boots examples/supervision (network: dhcp, the default)
// without ingot.ip= on the kernel command line, as on real hardware: the
// DHCP client system service must get 10.0.2.15 from QEMU's user-mode
// network, so that the forwarded port reaches the web service; the clock
// then asks for NTP servers by DHCPINFORM on eth0 and gives up quietly.
func TestVMDHCP(t *testing.T) {
	cfg := supervisionConfig(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "supervision.img")
	if _, err := assemble.Image(t.Context(), cfg, ingotconfig.TargetVMAmd64, img, assemble.WithCacheDir(filepath.Join(dir, "cache"))); err != nil {
		t.Fatal(err)
	}
	v := startPipelineVM(t, img, filepath.Join(dir, "run"), func(c *vm.Config) { c.NoStaticNetwork = true })
	v.waitFor(bootDoneRE, pipelineBootTimeout)
	lease := v.waitFor(regexp.MustCompile(`dhcp: .*DHCPACK: IP ([0-9./]+)`), time.Minute)
	if lease[1] != "10.0.2.15/24" {
		t.Errorf("DHCP lease IP %s, want 10.0.2.15/24 from QEMU's user network", lease[1])
	}
	if page := v.web(); !webPageRE.MatchString(page) {
		t.Errorf("web page = %q, want %q", page, webPageRE)
	}
	// ingot.yaml names no NTP server: after the lease (the DHCP client's
	// SIGHUP) the clock asks the DHCP server for NTP servers with a
	// DHCPINFORM for the leased address on eth0. QEMU's user network does
	// not answer one, so after its 4 tries the clock keeps the default
	// servers and says so.
	v.waitFor(regexp.MustCompile(`init: clock: no NTP servers from DHCP on eth0: dhcpinform eth0: no DHCPACK to 4 DHCPINFORMs for 10\.0\.2\.15 in `), 3*time.Minute)
	log := v.stop()
	expectLines(t, "dhcp boot", log,
		"init: network: no static address; dhcp service will ask by DHCP",
		"init: clock: NTP servers from DHCP once an interface has an address, then the default 0.pool.ntp.org, 1.pool.ntp.org",
		"init: network: SIGHUP: addresses changed",
		"dhcp: started pid",
		"init: power off now")
	if strings.Contains(log, "(from cmdline)") {
		t.Errorf("the kernel command line configured the network; want DHCP only")
	}
}
