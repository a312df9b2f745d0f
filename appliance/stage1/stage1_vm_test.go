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

	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/packer/cpio"
	"github.com/ingotdev/ingot/packer/format/gpt"
	"github.com/ingotdev/ingot/packer/format/spec"
	"github.com/ingotdev/ingot/packer/kernel"
)

// This test boots ingot-stage0 and ingot-init for real: stage0 from an initramfs made by
// packer/initramfs, stage1 from a squashfs root, with services that are
// busybox shell scripts. The disk is put together here with host tools
// (mksquashfs, mke2fs) and packer/gpt so that it tests init alone, not the
// builder. Boots use TCG: nested KVM on CI hosts is unreliable.

const (
	vmBootTimeout = 2 * time.Minute
	vmBuildID     = "vm-test-build"
	diskBytes     = 200 << 20
	mib           = 1 << 20
	webGuestIP    = "10.0.2.15/24,10.0.2.2,10.0.2.3"
)

// Partition layout of the test disk, as the packer lays it out.
var vmParts = []struct {
	name        string
	first, size int64 // bytes
}{
	{"boot", 1 * mib, 8 * mib},
	{"root-a", 9 * mib, 32 * mib},
	{"root-b", 41 * mib, 32 * mib},
	{"perm", 73 * mib, 64 * mib},
}

func partGUID(name string) gpt.GUID { return gpt.GUIDFromName("ingot-stage1-vm-test", name) }

// vmServices are the appliance's services: a web server that must stay up,
// a service that crashes every 200 ms, one that counts into /perm every
// 100 ms, and one that sends SIGTERM to init when the kernel command line
// says test.stop=term.
func vmServices() []spec.Service {
	bb := func(name, script string) spec.Service {
		return spec.Service{Name: name, Path: "/bin/busybox", Args: []string{"sh", "-c", script}}
	}
	web := bb("web", `mkdir -p /tmp/www && echo "hello $INGOT_SERVICE $INGOT_BUILD_ID uid $(busybox id -u)" > /tmp/www/index.html && exec busybox httpd -f -p 80 -h /tmp/www`)
	crasher := bb("crasher", `echo crash; busybox sleep 0.2; exit 1`)
	counter := bb("counter", `n=$(busybox cat count 2>/dev/null || echo 0); echo "start at $n"
while :; do n=$((n+1)); echo $n > count.tmp && busybox mv count.tmp count; busybox sleep 0.1; done`)
	counter.NeedsPerm = true
	counter.After = []string{"web"}
	stopper := bb("stopper", `case "$(busybox cat /proc/cmdline)" in *test.stop=term*)
busybox sleep 4; echo "sending SIGTERM to init"; busybox kill -TERM 1;; esac`)
	stopper.User = "root"
	stopper.Restart = spec.RestartNever
	return []spec.Service{web, crasher, counter, stopper}
}

type vmImage struct {
	dir, disk string
	guest     *vmtest.Guest
}

func buildVMImage(t *testing.T, ctx context.Context) *vmImage {
	t.Helper()
	for _, tool := range []string{"mksquashfs", "mke2fs", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (squashfs-tools, e2fsprogs): %v", tool, err)
		}
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("busybox is needed (apt-get install busybox-static): %v", err)
	}
	// Initramfs: stage0 with the VM modules, plus the power button; the
	// root's /init is ingot-init.
	dir := t.TempDir()
	img := &vmImage{dir: dir, disk: filepath.Join(dir, "disk.img"),
		guest: vmtest.NewGuest(t, "amd64", vmtest.WithInit("github.com/ingotdev/ingot/appliance/cmd/ingot-stage0"),
			vmtest.WithModules(append(kernel.DefaultVMModules(), "button", "evdev")...), vmtest.WithCompression(cpio.Gzip))}
	initBin := vmtest.Program(t, "amd64", "github.com/ingotdev/ingot/appliance/cmd/ingot-init")

	// Root: what the builder must provide (see the package doc).
	root := filepath.Join(dir, "root")
	for _, d := range []string{"etc/ingot", "bin", "proc", "sys", "dev", "run", "tmp", "perm"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, initBin, filepath.Join(root, "init"), 0o755)
	copyFile(t, busybox, filepath.Join(root, "bin", "busybox"), 0o755)
	for link, target := range map[string]string{"etc/resolv.conf": ResolvConfPath, "etc/hosts": HostsPath} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	a := &spec.Appliance{Name: "vmtest", BuildID: vmBuildID, Arch: "amd64", Services: vmServices()}
	b, err := a.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := spec.Parse(b); err != nil {
		t.Fatalf("appliance.json does not parse: %v", err)
	}
	writeFile(t, filepath.Join(root, "etc/ingot/appliance.json"), b)
	rootImg := filepath.Join(dir, "root.sqfs")
	run(t, ctx, "mksquashfs", root, rootImg, "-quiet", "-all-root", "-comp", "gzip", "-noappend")
	permImg := filepath.Join(dir, "perm.img")
	run(t, ctx, "mke2fs", "-q", "-t", "ext4", "-F", permImg, "64M")

	// Disk: GPT and the two filesystems at their partitions.
	disk, err := os.Create(img.disk)
	if err != nil {
		t.Fatal(err)
	}
	defer disk.Close()
	if err := disk.Truncate(diskBytes); err != nil {
		t.Fatal(err)
	}
	var parts []gpt.Partition
	for _, p := range vmParts {
		parts = append(parts, gpt.Partition{Name: p.name, Type: gpt.TypeLinuxFilesystem, GUID: partGUID(p.name),
			FirstLBA: uint64(p.first / gpt.SectorBytes), LastLBA: uint64((p.first+p.size)/gpt.SectorBytes - 1)})
	}
	if err := gpt.Write(disk, diskBytes, gpt.Table{DiskGUID: partGUID("disk"), Partitions: parts}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		file string
		part int
	}{{rootImg, 1}, {permImg, 3}} {
		src, err := os.ReadFile(p.file)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(src)) > vmParts[p.part].size {
			t.Fatalf("%s is %d bytes, more than partition %s", p.file, len(src), vmParts[p.part].name)
		}
		if _, err := disk.WriteAt(src, vmParts[p.part].first); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

// boot runs the VM until it powers off. When it sees "boot done" it calls
// during (with the forwarded web port) and then stop, which must make the
// guest power off.
func (img *vmImage) boot(t *testing.T, cmdline string, during func(webPort int), stop func(*vmtest.VM)) string {
	t.Helper()
	port := vmtest.FreePort(t)
	m := img.guest.Machine("loglevel=4", "ingot.slot=a", "ingot.root=PARTUUID="+partGUID("root-a").String(),
		"ingot.ip="+webGuestIP, strings.TrimSpace(cmdline))
	m.MemoryMiB, m.CPUs, m.Disk = 512, 2, img.disk
	m.Forwards = []qemu.Forward{{Proto: "tcp", HostPort: port, GuestPort: 80}}
	start := time.Now()
	v := vmtest.Boot(t, m)
	v.WaitFor(t, vmBootTimeout, "init: boot done")
	t.Logf("booted in %v (TCG)", time.Since(start).Round(time.Millisecond))
	during(port)
	stop(v)
	if err := v.Wait(t, vmBootTimeout); err != nil {
		t.Fatalf("QEMU: %v\nserial:\n%s", err, tail(v.Console.String()))
	}
	return v.Console.String()
}

func powerButton(t *testing.T) func(*vmtest.VM) {
	return func(v *vmtest.VM) { v.PowerButton(t) }
}

// getWeb fetches the web service's page, retrying while it starts.
func getWeb(t *testing.T, port int) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err == nil {
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode == http.StatusOK {
				return strings.TrimSpace(string(b))
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("web service did not answer: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestVMAppliance(t *testing.T) {
	ctx := context.Background()
	img := buildVMImage(t, ctx)
	perm := " ingot.perm=PARTUUID=" + partGUID("perm").String()
	wantWeb := "hello web " + vmBuildID + " uid 65534"

	// Boot 1: everything up for 8 s, then the ACPI power button.
	log1 := img.boot(t, perm, func(port int) {
		if got := getWeb(t, port); got != wantWeb {
			t.Errorf("web page = %q, want %q", got, wantWeb)
		}
		time.Sleep(8 * time.Second)
	}, powerButton(t))
	expectLines(t, "boot 1", log1,
		"init: perm: /dev/vda4 mounted on /perm",
		"init: network: eth0 10.0.2.15/24 via 10.0.2.2 (from cmdline)",
		"init: power button pressed",
		"web: stopped: signal SIGTERM",
		"init: perm: unmounted",
		"init: power off now")
	if n := strings.Count(log1, "web: started pid"); n != 1 || strings.Contains(log1, "web: exited") {
		t.Errorf("boot 1: web started %d times; want once and never exited", n)
	}
	checkBackoff(t, log1)
	count1 := permFile(t, img, "/counter/count")
	if n, err := strconv.Atoi(strings.TrimSpace(count1)); err != nil || n < 10 {
		t.Errorf("boot 1: /perm/counter/count = %q, want a count of at least 10", count1)
	}
	for _, f := range []string{"/log/init.log", "/log/web.log", "/log/crasher.log", "/log/counter.log"} {
		if permFile(t, img, f) == "" {
			t.Errorf("boot 1: %s is empty or missing on perm", f)
		}
	}

	// Boot 2: the counter resumes from the file; init powers off on
	// SIGTERM (sent by a service).
	log2 := img.boot(t, perm+" test.stop=term", func(int) {}, func(*vmtest.VM) {})
	if m := regexp.MustCompile(`counter: start at (\d+)`).FindStringSubmatch(log2); m == nil || m[1] != strings.TrimSpace(count1) {
		t.Errorf("boot 2: counter started from %v, want %s, the count boot 1 left on perm", m, strings.TrimSpace(count1))
	}
	expectLines(t, "boot 2", log2,
		"init: shutting down to power off: signal SIGTERM",
		"init: perm: unmounted",
		"init: power off now")
	if n := strings.Count(permFile(t, img, "/log/init.log"), "ingot-init stage1"); n != 2 {
		t.Errorf("after boot 2, /perm/log/init.log holds %d boots, want 2 (logs survive a reboot)", n)
	}

	// Boot 3: without perm the appliance still comes up, holds the service
	// that needs it and says why.
	log3 := img.boot(t, "test.stop=term", func(port int) {
		if got := getWeb(t, port); got != wantWeb {
			t.Errorf("boot 3: web page = %q, want %q", got, wantWeb)
		}
	}, func(*vmtest.VM) {})
	expectLines(t, "boot 3", log3,
		"init: warning: perm: no ingot.perm=PARTUUID=<guid> on the kernel command line",
		"counter: held: needs /perm, which is not mounted",
		"init: power off now")
}

// checkBackoff checks the crasher's restart delays in the log: 100 ms
// doubling, each shortened by at most 20% jitter.
func checkBackoff(t *testing.T, log string) {
	t.Helper()
	re := regexp.MustCompile(`crasher: exited: exit status 1 after \S+; restarting in (\S+)`)
	ms := re.FindAllStringSubmatch(log, -1)
	if len(ms) < 4 {
		t.Errorf("crasher restarted %d times in 8 s, want at least 4 (100+200+400+800 ms of backoff)", len(ms))
	}
	for i, m := range ms {
		d, err := time.ParseDuration(m[1])
		want := min(100*time.Millisecond<<i, 30*time.Second)
		if err != nil || d < want*8/10-time.Millisecond || d > want {
			t.Errorf("crasher restart %d: delay %s, want %v..%v", i, m[1], want*8/10, want)
		}
	}
	if n := len(ms); n > 8 {
		t.Errorf("crasher restarted %d times in about 8 s; backoff should allow at most 8", n)
	}
}

func expectLines(t *testing.T, what, log string, want ...string) {
	t.Helper()
	var missing []string
	for _, w := range want {
		if !strings.Contains(log, w) {
			missing = append(missing, w)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%s: serial log lacks %q:\n%s", what, missing, tail(log))
	}
}

// permFile reads a file from the perm partition of the disk after a boot.
func permFile(t *testing.T, img *vmImage, path string) string {
	t.Helper()
	p := vmParts[3]
	disk, err := os.Open(img.disk)
	if err != nil {
		t.Fatal(err)
	}
	defer disk.Close()
	part := filepath.Join(img.dir, "perm-copy.img")
	out, err := os.Create(part)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, io.NewSectionReader(disk, p.first, p.size)); err != nil {
		t.Fatal(err)
	}
	out.Close()
	if b, err := exec.Command("e2fsck", "-fn", part).CombinedOutput(); err != nil {
		t.Errorf("perm is not clean after shutdown: %v\n%s", err, b)
	}
	b, err := exec.Command("debugfs", "-R", "cat "+path, part).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return string(b)
}

func run(t *testing.T, ctx context.Context, name string, args ...string) {
	t.Helper()
	if out, err := exec.CommandContext(ctx, name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}

func tail(s string) string {
	const keep = 6000
	if len(s) > keep {
		return "..." + s[len(s)-keep:]
	}
	return s
}
