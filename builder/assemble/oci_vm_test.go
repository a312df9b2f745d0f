package assemble

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/builder/oci/ocitest"
	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/hypervisor/vm"
	"github.com/ingotdev/ingot/internal/vmtest"
	"github.com/ingotdev/ingot/mgmt"
)

// boxScript is the container's entrypoint: it reports what it sees, one
// key=value per line, counts its starts in the volume, and on its first
// start ever allocates more than its memory limit.
const boxScript = `#!/bin/sh
echo "start"
echo "hostname=$(hostname)"
echo "pid=$$ ppid=$PPID"
echo "greeting=$GREETING"
echo "uid=$(id -u)"
if touch /rootfile 2>/dev/null; then echo "root=writable"; else echo "root=readonly"; fi
if [ -e /etc/removed.txt ]; then echo "whiteout=ignored"; else echo "whiteout=applied"; fi
echo "cgself=$(cat /proc/self/cgroup)"
echo "cgmax=$(cat /sys/fs/cgroup/memory.max)"
echo "sysrqro=$(grep -c '^proc /proc/sysrq-trigger proc ro,' /proc/mounts)"
echo "seccomp=$(grep -c '^Seccomp:.2$' /proc/self/status)"
echo "vsock=$(/app/vsockprobe)"
if (echo planted > /planted/kmsg) 2>/dev/null; then echo "imgdev=opened"; else echo "imgdev=denied"; fi
echo "imgsuid=$(/planted/busybox id -u)"
date >> /data/starts
echo "starts=$(wc -l < /data/starts)"
if [ ! -e /data/oom-tried ]; then
  touch /data/oom-tried
  echo "oom=trying"
  # One 128 MiB read buffer, filled by the kernel at once: anonymous
  # memory the cgroup cannot reclaim, so the OOM killer comes quickly
  # instead of the cgroup thrashing on page cache near its limit.
  dd if=/dev/zero of=/dev/null bs=128M count=1 && echo "oom=survived"
fi
# The resolver configuration is the appliance's, bound live: it fills in
# when the DHCP lease comes, even after the container started.
i=0
while [ $i -lt 600 ] && ! grep -q nameserver /etc/resolv.conf; do sleep 0.1; i=$((i+1)); done
echo "dns=$(grep nameserver /etc/resolv.conf)"
echo "etchostname=$(cat /etc/hostname)"
echo "ready"
exec sleep 1000000
`

// probeService is a Go service of the appliance (running as nobody, the
// default) that tries what issue 12's attack 5 did: open the device nodes
// and run the setuid-root program the box image plants, through the
// image's files in the appliance's root, and report the root's mount
// options.
const probeService = `package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
)

func result(err error) string {
	if errors.Is(err, syscall.EACCES) {
		return "EACCES"
	}
	return err.Error()
}

func main() {
	for _, n := range []struct {
		name string
		flag int
	}{{"kmsg", os.O_WRONLY}, {"vda", os.O_RDONLY}} {
		f, err := os.OpenFile("/oci/box/rootfs/planted/"+n.name, n.flag, 0)
		if err == nil {
			f.Close()
			fmt.Printf("probe %s=opened\n", n.name)
			continue
		}
		fmt.Printf("probe %s=%s\n", n.name, result(err))
	}
	if out, err := exec.Command("/oci/box/rootfs/planted/busybox", "id", "-u").Output(); err != nil {
		fmt.Printf("probe su=%s\n", result(err))
	} else {
		fmt.Printf("probe su=ran as %s\n", strings.TrimSpace(string(out)))
	}
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 5 && f[4] == "/" {
			fmt.Printf("probe rootopts=%s\n", f[5])
		}
	}
	fmt.Println("probe done")
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	<-stop
}
`

// busyboxApplets are linked to /bin/busybox in the image.
var busyboxApplets = []string{"sh", "echo", "hostname", "ls", "wc", "id", "touch", "date", "dd", "sleep", "cat", "grep"}

// TestVMContainer builds an appliance whose service is an OCI image made
// here from Debian's busybox-static (a base layer, and a second layer that
// whites out a file and adds the entrypoint), served by an in-process
// registry, boots it and checks through the agent's logs that the
// container has its own hostname and PID namespace, its env and user, a
// read-only root, the appliance's resolver configuration, its cgroup
// namespace and limit, /proc protections and seccomp, a volume that
// persists across a reboot, and that going over its memory limit gets it
// OOM-killed and restarted. The image also plants 0666 device nodes and a
// setuid-root program (issue 12, attack 5): inert in the container, and
// out of reach of the appliance's probe service (nobody) in a root
// mounted ro, nosuid and nodev.
func TestVMContainer(t *testing.T) {
	vmtest.Kernel(t, "amd64")
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("busybox-static (scripts/setup.sh installs it): %v", err)
	}
	testVMContainer(t, config.TargetVMAmd64, "amd64", busybox)
}

// TestVMContainerARM64 is TestVMContainer on vm-arm64 under
// qemu-system-aarch64, with Debian's arm64 busybox-static: the launcher,
// its seccomp filter (the arm64 syscall table and audit arch) and the
// cgroup and namespace setup on the other architecture.
func TestVMContainerARM64(t *testing.T) {
	vmtest.Kernel(t, "arm64")
	deb := vmtest.BusyboxARM64(t)
	dir := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "-x", deb, dir).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x %s: %v\n%s", deb, err, out)
	}
	busybox, err := os.ReadFile(filepath.Join(dir, "bin/busybox"))
	if err != nil {
		t.Fatal(err)
	}
	if f, err := elf.NewFile(bytes.NewReader(busybox)); err != nil || f.Machine != elf.EM_AARCH64 {
		t.Fatalf("%s: bin/busybox is not an arm64 ELF (%v)", deb, err)
	}
	testVMContainer(t, config.TargetVMArm64, "arm64", busybox)
}

func testVMContainer(t *testing.T, target config.Target, arch string, busybox []byte) {
	base := []ocitest.Entry{
		{Name: "bin/busybox", Body: busybox, Mode: 0o755},
		ocitest.File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"),
		ocitest.File("etc/group", "root:x:0:\napp:x:1000:\n"),
		ocitest.File("etc/removed.txt", "a later layer deletes this\n"),
		ocitest.Dir("data"),
		// What an image can plant (issue 12, attack 5): world-writable
		// nodes of the kernel log (1:11) and of the first virtio disk
		// (254:0 under these kernels), and a setuid-root busybox.
		ocitest.Dir("planted"),
		{Name: "planted/kmsg", Type: tar.TypeChar, Mode: 0o666, DevMajor: 1, DevMinor: 11},
		{Name: "planted/vda", Type: tar.TypeBlock, Mode: 0o666, DevMajor: 254, DevMinor: 0},
		{Name: "planted/busybox", Body: busybox, Mode: 0o4755},
	}
	for _, a := range busyboxApplets {
		base = append(base, ocitest.Symlink("bin/"+a, "busybox"))
	}
	l1, err := ocitest.LayerOf(base...)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := ocitest.LayerOf(ocitest.Whiteout("etc", "removed.txt"),
		ocitest.Entry{Name: "app/run.sh", Body: []byte(boxScript), Mode: 0o755},
		ocitest.Entry{Name: "app/vsockprobe", Body: buildVsockProbe(t, arch), Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	img, err := ocitest.Image(v1.Platform{OS: "linux", Architecture: arch}, v1.Config{
		Entrypoint: []string{"/app/run.sh"}, User: "app", WorkingDir: "/",
		Env: []string{"PATH=/bin", "GREETING=from the image"},
	}, l1, l2)
	if err != nil {
		t.Fatal(err)
	}
	reg := ocitest.NewRegistry()
	defer reg.Close()
	ref := reg.Host + "/box:1"
	if err := ocitest.Push(ref, img); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	appDir := filepath.Join(dir, "app")
	if err := os.CopyFS(filepath.Join(appDir, ".ingot"), os.DirFS("../../examples/hello/.ingot")); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"go.mod": "module probe\n\ngo 1.22\n", "cmd/probe/main.go": probeService} {
		p := filepath.Join(appDir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	yaml := fmt.Sprintf(`name: boxapp
targets: [%s]
services:
  - name: box
    image: %s
    env: {GREETING: from ingot.yaml}
    volumes: ["/perm/box:/data"]
    resources: {memory: 48Mi}
  - name: probe
    go: ./cmd/probe
`, target, ref)
	if err := os.WriteFile(filepath.Join(appDir, config.FileName), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(filepath.Join(appDir, config.FileName))
	if err != nil {
		t.Fatal(err)
	}
	image := filepath.Join(dir, "boxapp.img")
	if _, err := Image(t.Context(), cfg, target, image, WithCacheDir(filepath.Join(dir, "cache"))); err != nil {
		t.Fatal(err)
	}

	runDir := filepath.Join(dir, "run")
	console := &vmtest.Console{}
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- vm.Run(ctx, vm.Config{Image: image, RunDir: runDir, Accel: qemu.AccelTCG, MemoryMiB: 512, Console: console, Logf: t.Logf})
	}()
	defer func() {
		stop()
		<-done
		if t.Failed() {
			t.Logf("console (tail):\n%s", console.Tail(150))
		}
	}()
	tok, err := os.ReadFile(filepath.Join(appDir, ".ingot/token"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := mgmt.NewClient(fmt.Sprintf("unix://%s?port=%d", vm.VsockPath(runDir), config.DefaultVsockPort), string(tok))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// First boot: the first start goes over the limit and is killed; the
	// restart reports and settles.
	lines := waitServiceLog(t, c, "box", func(l []string) bool { return count(l, "ready") >= 1 && count(l, "start") >= 2 }, 4*time.Minute)
	for _, want := range []string{"hostname=box", "greeting=from ingot.yaml", "uid=1000", "root=readonly", "whiteout=applied", "oom=trying", "starts=2", "dns=nameserver 10.0.2.3", "etchostname=box",
		// Its cgroup namespace: its own group is "/", with its limit.
		"cgself=0::/", "cgmax=50331648", "sysrqro=1", "seccomp=1",
		// Issue 12, attack 1: no AF_VSOCK socket, so no bind of the agent's port.
		"vsock=denied",
		// The image's own nodes and setuid bits are inert in it too.
		"imgdev=denied", "imgsuid=1000"} {
		if count(lines, want) == 0 {
			t.Errorf("container log lacks %q:\n%s", want, strings.Join(lines, "\n"))
		}
	}
	if n := count(lines, "oom=survived"); n != 0 {
		t.Errorf("the container allocated past its 48 MiB memory limit and lived:\n%s", strings.Join(lines, "\n"))
	}
	// In its own PID namespace the shell is one of the first processes,
	// a child of the namespace's PID 1 (the launcher).
	for _, l := range lines {
		var pid, ppid int
		if _, err := fmt.Sscanf(l, "pid=%d ppid=%d", &pid, &ppid); err == nil && (pid > 10 || ppid != 1) {
			t.Errorf("the container's shell has pid %d, parent %d; want a small pid under PID 1 (a new PID namespace)", pid, ppid)
		}
	}
	if count(lines, "pid=") == 0 {
		t.Errorf("container log has no pid= line")
	}
	if st, err := c.Status(t.Context()); err != nil {
		t.Error(err)
	} else {
		for _, s := range st.Services {
			if s.Name == "box" && (s.Restarts < 1 || s.OOMKills < 1) {
				t.Errorf("box restarts = %d, oom kills = %d after going over its memory limit; want both at least 1", s.Restarts, s.OOMKills)
			}
		}
	}

	// A non-root service of the appliance cannot reach what the image
	// planted, and the root would not honour it anyway.
	probe := waitServiceLog(t, c, "probe", func(l []string) bool { return count(l, "probe done") >= 1 }, time.Minute)
	for _, want := range []string{"probe kmsg=EACCES", "probe vda=EACCES", "probe su=EACCES"} {
		if count(probe, want) == 0 {
			t.Errorf("probe log lacks %q: a non-root service reached the image's files:\n%s", want, strings.Join(probe, "\n"))
		}
	}
	for _, l := range probe {
		if opts, ok := strings.CutPrefix(l, "probe rootopts="); ok {
			if o := strings.Split(opts, ","); !slices.Contains(o, "nosuid") || !slices.Contains(o, "nodev") || !slices.Contains(o, "ro") {
				t.Errorf("the appliance's root is mounted %s, want ro,nosuid,nodev", opts)
			}
		}
	}
	if count(probe, "probe rootopts=") == 0 {
		t.Errorf("probe log has no rootopts= line:\n%s", strings.Join(probe, "\n"))
	}

	// The volume persists across a reboot of the appliance.
	if err := c.Reboot(t.Context()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	lines = waitServiceLog(t, c, "box", func(l []string) bool { return count(l, "starts=3") >= 1 && count(l, "ready") >= 1 }, 4*time.Minute)
	if count(lines, "oom=trying") != 0 {
		t.Errorf("after the reboot the container tried the OOM again: the volume lost /data/oom-tried")
	}
}

// waitServiceLog polls the agent for the service's whole log until done
// accepts its lines.
func waitServiceLog(t *testing.T, c *mgmt.Client, name string, done func([]string) bool, limit time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(limit)
	var lines []string
	for time.Now().Before(deadline) {
		lines = lines[:0]
		if s, err := c.Logs(t.Context(), name, -1, false); err == nil {
			for {
				l, err := s.Next()
				if err != nil {
					break
				}
				lines = append(lines, strings.TrimSpace(l.Text))
			}
			s.Close()
			if done(lines) {
				return lines
			}
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("service %s log did not get there within %s:\n%s", name, limit, strings.Join(lines, "\n"))
	return nil
}

func count(lines []string, s string) int {
	n := 0
	for _, l := range lines {
		if l == s || strings.HasPrefix(l, s) {
			n++
		}
	}
	return n
}
