package container

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/ingotdev/ingot/appliance/netconf"
	"github.com/ingotdev/ingot/internal/vmtest"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// The tests run the launcher for real, as root on the host: the test
// binary re-executes itself as `<test> container <service>` in new
// namespaces (exactly as the supervisor starts /init), and TestMain
// dispatches that to Main with paths pointing into a temporary directory.
// The container image is busybox-static (Debian's busybox-static package
// installs /bin/busybox).

const (
	envTestSpec = "INGOT_CONTAINER_TEST_SPEC"
	envTestRoot = "INGOT_CONTAINER_TEST_ROOT"
	envTestPerm = "INGOT_CONTAINER_TEST_PERM"
	envTestDNS  = "INGOT_CONTAINER_TEST_RESOLV"
	envTestStg  = "INGOT_CONTAINER_TEST_STAGE"

	busyboxPath   = "/bin/busybox"
	launchTimeout = 30 * time.Second
	testBuildID   = "build-123"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == spec.ContainerSubcommand {
		var opts []Option
		if v := os.Getenv(envTestSpec); v != "" {
			opts = append(opts, WithAppliancePath(v))
		}
		if v := os.Getenv(envTestRoot); v != "" {
			opts = append(opts, WithRootDir(v))
		}
		if v := os.Getenv(envTestPerm); v != "" {
			opts = append(opts, WithPermDir(v))
		}
		if v := os.Getenv(envTestDNS); v != "" {
			opts = append(opts, WithResolvConf(v))
		}
		if v := os.Getenv(envTestStg); v != "" {
			opts = append(opts, WithStageDir(v))
		}
		Main(os.Args, opts...)
	}
	os.Exit(m.Run())
}

// testEnv is one appliance with one container service "web".
type testEnv struct {
	dir, rootDir, rootfs, perm, specPath string
	// resolvConf stands for init's copy of the resolver configuration.
	resolvConf, stageDir string
}

// testResolvConf is what the appliance's resolver configuration holds.
const testResolvConf = "nameserver 192.0.2.53\n"

// newTestEnv makes an image rootfs with only /bin/busybox and the
// applets the scripts use as symlinks, plus dirs; the image lacks /proc,
// /dev, /tmp and /run unless listed, so the launcher has to shadow.
func newTestEnv(t *testing.T, dirs ...string) *testEnv {
	t.Helper()
	e := &testEnv{dir: t.TempDir()}
	e.rootDir = filepath.Join(e.dir, "root")
	e.rootfs = filepath.Join(e.rootDir, spec.ContainerRoot, "web", "rootfs")
	e.perm = filepath.Join(e.dir, "perm")
	e.specPath = filepath.Join(e.dir, "appliance.json")
	e.resolvConf = filepath.Join(e.dir, "resolv.conf")
	e.stageDir = filepath.Join(e.dir, "stage")
	if err := os.WriteFile(e.resolvConf, []byte(testResolvConf), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range append([]string{"bin", "etc", e.perm}, dirs...) {
		p := d
		if !filepath.IsAbs(d) {
			p = filepath.Join(e.rootfs, d)
		}
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bb, err := os.ReadFile(busyboxPath)
	if err != nil {
		t.Fatalf("busybox-static is needed (apt-get install busybox-static): %v", err)
	}
	if err := os.WriteFile(filepath.Join(e.rootfs, "bin/busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, applet := range []string{"sh", "cat", "echo", "id", "hostname", "touch", "ls", "grep", "sleep", "stat", "head", "wc", "pwd", "mkdir", "readlink", "tr", "cut", "true", "unshare"} {
		if err := os.Symlink("busybox", filepath.Join(e.rootfs, "bin", applet)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(e.rootfs, "etc/image-file"), []byte("from the image\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

func testContainer(script string) spec.Container {
	return spec.Container{
		Image:  "example.test/web:1",
		Digest: "sha256:" + strings.Repeat("ab", 32),
		Rootfs: spec.ContainerRoot + "/web/rootfs",
		Argv:   []string{"sh", "-c", script},
		Env:    []string{"PATH=/bin", "FOO=image", "FOO=config", "BAR=bar baz"},
	}
}

type result struct {
	stdout, stderr string
	code           int
	kv             map[string]string
}

// start writes appliance.json and starts the launcher the way the
// supervisor does.
func (e *testEnv) start(t *testing.T, c spec.Container) (*exec.Cmd, *vmtest.Console, *vmtest.Console) {
	t.Helper()
	a := &spec.Appliance{
		Name: "app", BuildID: testBuildID, Arch: "amd64",
		Services: []spec.Service{{
			Name: "web", Path: "/init", Args: []string{spec.ContainerSubcommand, "web"},
			User: "root", Container: &c,
		}},
	}
	if err := a.Validate(); err != nil {
		t.Fatalf("test spec: %v", err)
	}
	b, err := a.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.specPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, spec.ContainerSubcommand, "web")
	cmd.Env = []string{
		envTestSpec + "=" + e.specPath, envTestRoot + "=" + e.rootDir, envTestPerm + "=" + e.perm,
		envTestDNS + "=" + e.resolvConf, envTestStg + "=" + e.stageDir,
	}
	var stdout, stderr vmtest.Console
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: CloneFlags(&c), Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the launcher: %v", err)
	}
	return cmd, &stdout, &stderr
}

// run runs the container to its end and parses "key=value" lines of its
// stdout.
func (e *testEnv) run(t *testing.T, c spec.Container) result {
	t.Helper()
	cmd, stdout, stderr := e.start(t, c)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(launchTimeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("container did not finish in %s; stdout:\n%s\nstderr:\n%s", launchTimeout, stdout, stderr)
	}
	r := result{stdout: stdout.String(), stderr: stderr.String(), kv: map[string]string{}}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			r.kv[k] = v
		}
	}
	return r
}

// probeScript prints what the tests check, one key=value per line.
const probeScript = `
echo hostname=$(hostname)
echo pid=$$
echo ppid=$PPID
echo pid1=$(cat /proc/1/cmdline | tr '\0' ' ' 2>/dev/null || cat /proc/1/cmdline)
echo procs=$(ls /proc | grep -c '^[0-9]')
echo foo=$FOO
echo bar=$BAR
echo build=$INGOT_BUILD_ID
echo service=$INGOT_SERVICE
echo path=$PATH
echo home=$HOME
echo pwd=$(pwd)
echo uid=$(id -u)
echo gid=$(id -g)
echo groups=$(id -G)
echo capbnd=$(grep CapBnd /proc/self/status | cut -f2 2>/dev/null || grep CapBnd /proc/self/status)
echo caps=$(grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status | tr -s ' \t' ':' | tr '\n' ' ')
echo nnp=$(grep NoNewPrivs /proc/self/status)
echo rootwrite=$(touch /rootfile 2>&1 && echo ok)
echo etcwrite=$(touch /etc/new 2>&1 && echo ok)
echo imagefile=$(cat /etc/image-file)
echo tmpwrite=$(touch /tmp/x 2>&1 && echo ok)
echo runwrite=$(touch /run/x 2>&1 && echo ok)
echo shmwrite=$(touch /dev/shm/x 2>&1 && echo ok)
echo devwrite=$(touch /dev/new 2>&1 && echo ok)
echo devnull=$(echo x > /dev/null && echo ok)
echo urandom=$(head -c 16 /dev/urandom | wc -c)
echo zero=$(head -c 5 /dev/zero | wc -c)
echo devs=$(stat -c '%n:%F:%t,%T:%a' /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty | tr '\n' ' ')
echo links=$(for l in fd stdin stdout stderr ptmx; do readlink /dev/$l; done | tr '\n' ' ')
echo pts=$(ls -d /dev/pts/ptmx 2>&1)
echo datawrite=$(echo persisted > /data/hello 2>&1 && echo ok)
echo subwrite=$(echo nested > /data/sub/file 2>&1 && echo ok)
echo rowrite=$(touch /ro/x 2>&1 && echo ok)
echo roread=$(cat /ro/seed)
echo resolv=$(cat /etc/resolv.conf)
echo resolvwrite=$( (echo x >> /etc/resolv.conf) 2>&1 && echo ok)
echo hosts=$(grep -c -e '^127.0.0.1	localhost$' -e '^127.0.1.1	webhost$' /etc/hosts)
echo etchostname=$(cat /etc/hostname)
echo sysrq=$( (echo h > /proc/sysrq-trigger) 2>&1 && echo ok)
echo sysctl=$( (echo ingot > /proc/sys/kernel/domainname) 2>&1 && echo ok)
echo timerlist=$(head -c 1 /proc/timer_list 2>&1 | wc -c)
echo keys=$(cat /proc/keys 2>&1 | wc -c)
echo procsysro=$(grep -c '^proc /proc/sys proc ro,' /proc/mounts)
echo firmware=$(ls -A /sys/firmware | wc -l)
echo syswrite=$(touch /sys/kernel/x 2>&1 && echo ok)
echo sysmounted=$(ls -d /sys/kernel 2>&1)
echo cgroupns=$(grep '^0::' /proc/self/cgroup)
echo cgroupfs=$(grep -c '^cgroup2 /sys/fs/cgroup cgroup2 ro,' /proc/mounts)
echo cgroupwrite=$(touch /sys/fs/cgroup/x 2>&1 && echo ok)
echo seccomp=$(grep '^Seccomp:' /proc/self/status | tr -d ' \t')
echo userns=$(unshare -U true 2>&1 && echo ok)
echo mknod=$(busybox mknod /tmp/sda b 8 0 2>&1 && head -c 1 /tmp/sda 2>/dev/null | wc -c)
echo suidmounts=$(grep -vc '^[^ ]* [^ ]* [^ ]* r[ow],nosuid' /proc/mounts)
`

func TestContainerRoot(t *testing.T) {
	e := newTestEnv(t)
	if err := os.MkdirAll(filepath.Join(e.perm, "web/ro"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.perm, "web/ro/seed"), []byte("seeded\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := testContainer(probeScript)
	c.Hostname = "webhost"
	c.WorkingDir = "/work/dir"
	c.Volumes = []spec.Volume{
		{Source: "/perm/web/data", Target: "/data"},
		{Source: "/perm/web/ro", Target: "/ro", ReadOnly: true},
		{Source: "/perm/web/sub", Target: "/data/sub"},
	}
	r := e.run(t, c)
	if r.code != 0 {
		t.Fatalf("exit status %d, want 0; stderr:\n%s\nstdout:\n%s", r.code, r.stderr, r.stdout)
	}
	const rofs = "Read-only file system"
	// A kernel without CONFIG_MAGIC_SYSRQ has no trigger to protect.
	sysrqWant := rofs
	if _, err := os.Stat("/proc/sysrq-trigger"); errors.Is(err, os.ErrNotExist) {
		sysrqWant = "nonexistent"
	}
	for _, tc := range []struct {
		key, want string
		contains  bool
	}{
		{key: "hostname", want: "webhost"},
		// The launcher is PID 1 of the fresh namespace, the program 2.
		{key: "ppid", want: "1"},
		{key: "pid1", want: "container web", contains: true},
		{key: "foo", want: "config"},
		{key: "bar", want: "bar baz"},
		{key: "build", want: testBuildID},
		{key: "service", want: "web"},
		{key: "path", want: "/bin"},
		{key: "home", want: "/"},
		{key: "pwd", want: "/work/dir"},
		{key: "uid", want: "0"},
		{key: "gid", want: "0"},
		{key: "nnp", want: "NoNewPrivs: 1"},
		{key: "caps", want: fmt.Sprintf("CapInh:0000000000000000 CapPrm:%016x CapEff:%016x CapBnd:%016x CapAmb:0000000000000000", dockerDefaultCaps, dockerDefaultCaps, dockerDefaultCaps), contains: true},
		{key: "rootwrite", want: rofs, contains: true},
		{key: "etcwrite", want: rofs, contains: true},
		{key: "imagefile", want: "from the image"},
		{key: "tmpwrite", want: "ok"},
		{key: "runwrite", want: "ok"},
		{key: "shmwrite", want: "ok"},
		{key: "devwrite", want: rofs, contains: true},
		{key: "devnull", want: "ok"},
		{key: "urandom", want: "16"},
		{key: "zero", want: "5"},
		{key: "devs", want: "/dev/null:character special file:1,3:666 /dev/zero:character special file:1,5:666 /dev/full:character special file:1,7:666 /dev/random:character special file:1,8:666 /dev/urandom:character special file:1,9:666 /dev/tty:character special file:5,0:666"},
		{key: "links", want: "/proc/self/fd /proc/self/fd/0 /proc/self/fd/1 /proc/self/fd/2 pts/ptmx"},
		{key: "pts", want: "/dev/pts/ptmx"},
		{key: "datawrite", want: "ok"},
		{key: "subwrite", want: "ok"},
		{key: "rowrite", want: rofs, contains: true},
		{key: "roread", want: "seeded"},
		{key: "resolv", want: strings.TrimSpace(testResolvConf)},
		{key: "resolvwrite", want: rofs, contains: true},
		{key: "hosts", want: "2"},
		{key: "etchostname", want: "webhost"},
		// What reaches beyond the container is read-only or masked.
		{key: "sysrq", want: sysrqWant, contains: true},
		{key: "sysctl", want: rofs, contains: true},
		{key: "timerlist", want: "0"},
		{key: "keys", want: "0"},
		{key: "procsysro", want: "1"},
		{key: "firmware", want: "0"},
		{key: "syswrite", want: rofs, contains: true},
		{key: "sysmounted", want: "/sys/kernel"},
		// Its own cgroup is the root of its cgroup namespace.
		{key: "cgroupns", want: "0::/"},
		{key: "cgroupfs", want: "1"},
		{key: "cgroupwrite", want: rofs, contains: true},
		// The seccomp filter: a user namespace needs no capability, so
		// only the filter stops it.
		{key: "seccomp", want: "Seccomp:2"},
		{key: "userns", want: "Operation not permitted", contains: true},
		// The node can be made in /tmp (CAP_MKNOD) but not used: nodev.
		{key: "mknod", want: "0"},
		// No mount honours setuid bits, the image's own included (issue
		// 12, attack 5; its device nodes: nodev, as mknod shows).
		{key: "suidmounts", want: "0"},
	} {
		got, ok := r.kv[tc.key]
		if !ok || (tc.contains && !strings.Contains(got, tc.want)) || (!tc.contains && got != tc.want) {
			t.Errorf("container %s = %q, want %q (contains: %v)", tc.key, got, tc.want, tc.contains)
		}
	}
	// The launcher, the shell and its command substitution (sh, ls, grep):
	// nothing of the host.
	if n, err := strconv.Atoi(r.kv["procs"]); err != nil || n > 5 {
		t.Errorf("container sees %q processes in /proc, want at most 5 (launcher, program, ls, grep, subshell)", r.kv["procs"])
	}
	if pid, err := strconv.Atoi(r.kv["pid"]); err != nil || pid < 2 || pid > 100 {
		t.Errorf("container pid = %q, want a small pid of the fresh namespace", r.kv["pid"])
	}
	// Volumes persist in the host directories, owned by the container user.
	for _, f := range []struct{ path, want string }{
		{"web/data/hello", "persisted\n"},
		{"web/sub/file", "nested\n"},
	} {
		b, err := os.ReadFile(filepath.Join(e.perm, f.path))
		if err != nil || string(b) != f.want {
			t.Errorf("perm %s = %q, %v; want %q", f.path, b, err, f.want)
		}
	}
	// Nothing of the container's mounts leaked into the host.
	if b, err := os.ReadFile("/proc/self/mountinfo"); err != nil || strings.Contains(string(b), e.rootfs) {
		t.Errorf("host mountinfo mentions the container rootfs %s (err %v)", e.rootfs, err)
	}
	for _, p := range []string{"proc", "etc/resolv.conf", "etc/hosts", "etc/hostname"} {
		if _, err := os.Lstat(filepath.Join(e.rootfs, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("image rootfs got /%s (%v); the launcher must not write to the image", p, err)
		}
	}
	if ents, err := os.ReadDir(e.stageDir); err != nil || len(ents) != 0 {
		t.Errorf("host stage dir %s holds %v (%v); the files belong on the launcher's private tmpfs", e.stageDir, ents, err)
	}
}

func TestContainerEtcFiles(t *testing.T) {
	const probe = `echo resolv=$(cat /etc/resolv.conf); echo hostname=$(cat /etc/hostname); ` +
		`echo hosts=$(grep -c '^127.0.1.1	web$' /etc/hosts); echo other=$(cat /etc/other 2>&1)`
	for _, tc := range []struct {
		name string
		// image prepares the image's /etc.
		image   func(t *testing.T, etc string)
		volumes []spec.Volume
		// want are the probe's values; note is in stderr.
		want map[string]string
		note string
	}{{
		name: "image without /etc",
		image: func(t *testing.T, etc string) {
			if err := os.RemoveAll(etc); err != nil {
				t.Fatal(err)
			}
		},
		want: map[string]string{"resolv": strings.TrimSpace(testResolvConf), "hostname": "web", "hosts": "1"},
	}, {
		name: "image files and symlinks replaced",
		image: func(t *testing.T, etc string) {
			for _, err := range []error{
				os.Symlink("../run/systemd/resolve/stub-resolv.conf", filepath.Join(etc, "resolv.conf")),
				os.WriteFile(filepath.Join(etc, "hosts"), []byte("10.0.0.1 image\n"), 0o644),
				os.Symlink("/nonexistent", filepath.Join(etc, "hostname")),
				os.WriteFile(filepath.Join(etc, "other"), []byte("kept\n"), 0o644),
			} {
				if err != nil {
					t.Fatal(err)
				}
			}
		},
		want: map[string]string{"resolv": strings.TrimSpace(testResolvConf), "hostname": "web", "hosts": "1", "other": "kept"},
	}, {
		name:    "volume over /etc",
		image:   func(t *testing.T, etc string) {},
		volumes: []spec.Volume{{Source: "/perm/web/etc", Target: "/etc"}},
		want:    map[string]string{"hosts": "", "resolv": ""},
		note:    "/etc/resolv.conf: not provided, volume /etc is mounted there",
	}, {
		name: "/etc is a symlink",
		image: func(t *testing.T, etc string) {
			if err := os.Rename(etc, etc+"2"); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("etc2", etc); err != nil {
				t.Fatal(err)
			}
		},
		want: map[string]string{"hosts": "", "resolv": ""},
		note: "/etc/hosts: not provided: mount point /etc: /etc is a symlink in the image",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			tc.image(t, filepath.Join(e.rootfs, "etc"))
			before := treeListing(t, e.rootfs)
			c := testContainer(probe)
			c.Volumes = tc.volumes
			r := e.run(t, c)
			if r.code != 0 {
				t.Fatalf("exit status %d, want 0; stderr:\n%s\nstdout:\n%s", r.code, r.stderr, r.stdout)
			}
			for k, want := range tc.want {
				if got := r.kv[k]; got != want {
					t.Errorf("container %s = %q, want %q", k, got, want)
				}
			}
			if tc.note != "" && !strings.Contains(r.stderr, "container: web: note: "+tc.note) {
				t.Errorf("stderr lacks the note %q:\n%s", tc.note, r.stderr)
			}
			if after := treeListing(t, e.rootfs); after != before {
				t.Errorf("the image changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

// treeListing lists every path under root with its type and link target.
func treeListing(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target, _ := os.Readlink(p)
		fmt.Fprintf(&b, "%s %v %s\n", strings.TrimPrefix(p, root), d.Type(), target)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestContainerResolvConfFollows rewrites the resolver configuration in
// place, as init does on a new DHCP lease, while the container runs.
func TestContainerResolvConfFollows(t *testing.T) {
	e := newTestEnv(t)
	c := testContainer(`cat /etc/resolv.conf; echo ready; ` +
		`while ! grep -q 198.51.100.7 /etc/resolv.conf; do sleep 0.05; done; echo updated`)
	cmd, stdout, stderr := e.start(t, c)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(launchTimeout)
	for !strings.Contains(stdout.String(), "ready") {
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			t.Fatalf("container not ready; stdout:\n%s\nstderr:\n%s", stdout, stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := netconf.WriteInPlace(e.resolvConf, []byte("nameserver 198.51.100.7\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil || !strings.Contains(stdout.String(), "updated") {
			t.Errorf("container: %v; stdout:\n%s\nstderr:\n%s", err, stdout, stderr)
		}
	case <-time.After(launchTimeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("the container never saw the new resolver; stdout:\n%s", stdout)
	}
}

func TestContainerUser(t *testing.T) {
	e := newTestEnv(t, "proc", "dev", "tmp", "run", "data")
	c := testContainer(probeScript)
	c.UID, c.GID, c.AdditionalGIDs = 1000, 1001, []uint32{1002, 1003}
	c.Volumes = []spec.Volume{{Source: "/perm/web/data", Target: "/data"}}
	// An existing volume owned by someone else follows the user.
	if err := os.MkdirAll(filepath.Join(e.perm, "web/data"), 0o700); err != nil {
		t.Fatal(err)
	}
	r := e.run(t, c)
	if r.code != 0 {
		t.Fatalf("exit status %d, want 0; stderr:\n%s", r.code, r.stderr)
	}
	for _, tc := range []struct{ key, want string }{
		{"uid", "1000"},
		{"gid", "1001"},
		{"groups", "1001 1002 1003"},
		{"caps", fmt.Sprintf("CapInh:0000000000000000 CapPrm:0000000000000000 CapEff:0000000000000000 CapBnd:%016x CapAmb:0000000000000000", dockerDefaultCaps)},
		{"nnp", "NoNewPrivs: 1"},
		{"datawrite", "ok"},
		{"pwd", "/"},
	} {
		if got := r.kv[tc.key]; got != tc.want {
			t.Errorf("container %s = %q, want %q", tc.key, got, tc.want)
		}
	}
	for _, p := range []string{"web", "web/data"} {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(e.perm, p), &st); err != nil {
			t.Fatal(err)
		}
		// web existed (made by MkdirAll above as root) and is not the
		// volume itself, so only web/data is re-owned.
		want := [2]uint32{0, 0}
		if p == "web/data" {
			want = [2]uint32{1000, 1001}
		}
		if got := [2]uint32{st.Uid, st.Gid}; got != want {
			t.Errorf("owner of perm/%s = %v, want %v", p, got, want)
		}
	}
}

func TestContainerPrivileged(t *testing.T) {
	e := newTestEnv(t)
	// Unprotected, the sysrq line would really reach the kernel.
	script := strings.ReplaceAll(probeScript, "echo sysrq=$( (echo h > /proc/sysrq-trigger) 2>&1 && echo ok)\n", "")
	if script == probeScript {
		t.Fatal("probeScript's sysrq line changed; keep it out of the privileged run")
	}
	c := testContainer(script)
	c.Privileged = true
	r := e.run(t, c)
	if r.code != 0 {
		t.Fatalf("exit status %d, want 0; stderr:\n%s", r.code, r.stderr)
	}
	host, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	var want string
	for _, l := range strings.Split(string(host), "\n") {
		if v, ok := strings.CutPrefix(l, "CapBnd:\t"); ok {
			want = "CapBnd:" + v
		}
	}
	if got := r.kv["caps"]; !strings.Contains(got, want) {
		t.Errorf("privileged container caps = %q, want the host's %q", got, want)
	}
	if got := r.kv["nnp"]; got != "NoNewPrivs: 1" {
		t.Errorf("privileged container nnp = %q, want NoNewPrivs 1", got)
	}
	if got := r.kv["seccomp"]; got != "Seccomp:0" {
		t.Errorf("privileged container %s, want no seccomp filter", got)
	}
	// Nothing masked or read-only beyond the read-only /sys.
	if got := r.kv["procsysro"]; got != "0" {
		t.Errorf("privileged container: /proc/sys read-only mounts = %q, want none", got)
	}
	if got := r.kv["timerlist"]; got != "1" {
		t.Errorf("privileged container read %q bytes of /proc/timer_list, want it unmasked", got)
	}
}

func TestContainerExitStatus(t *testing.T) {
	e := newTestEnv(t)
	if err := os.Symlink("/etc", filepath.Join(e.rootfs, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.rootfs, "bin/noexec"), []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.rootfs, "bin/nointerp"), []byte("#!/no/such/shell\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		argv       []string
		volumes    []spec.Volume
		wantCode   int
		wantStderr string
	}{
		{name: "exit code passes through", argv: []string{"sh", "-c", "exit 3"}, wantCode: 3},
		{name: "killed by a signal", argv: []string{"sh", "-c", "kill -9 $$"}, wantCode: 128 + 9},
		{name: "not in PATH", argv: []string{"nosuchprog"}, wantCode: ExitNotFound,
			wantStderr: `container: web: exec: "nosuchprog": not found in PATH /bin`},
		{name: "absolute path missing", argv: []string{"/bin/nope"}, wantCode: ExitNotFound,
			wantStderr: "container: web: exec: /bin/nope: no such file or directory"},
		{name: "interpreter missing", argv: []string{"/bin/nointerp"}, wantCode: ExitNotFound,
			wantStderr: "container: web: exec: /bin/nointerp: no such file or directory"},
		{name: "not executable", argv: []string{"/bin/noexec"}, wantCode: ExitCannotExec,
			wantStderr: "container: web: exec: /bin/noexec: permission denied"},
		{name: "volume through a symlink", argv: []string{"true"}, wantCode: ExitSetup,
			volumes:    []spec.Volume{{Source: "/perm/web/x", Target: "/link/x"}},
			wantStderr: "container: web: mount point /link/x: /link is a symlink in the image"},
		{name: "volume onto a file", argv: []string{"true"}, wantCode: ExitSetup,
			volumes:    []spec.Volume{{Source: "/perm/web/x", Target: "/etc/image-file"}},
			wantStderr: "container: web: mount point /etc/image-file: /etc/image-file exists in the image and is not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testContainer("")
			c.Argv = tc.argv
			c.Volumes = tc.volumes
			r := e.run(t, c)
			if r.code != tc.wantCode || !strings.Contains(r.stderr, tc.wantStderr) {
				t.Errorf("launcher(%q) = exit %d, stderr %q; want exit %d, stderr containing %q", tc.argv, r.code, r.stderr, tc.wantCode, tc.wantStderr)
			}
		})
	}
}

func TestContainerNotPID1(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, spec.ContainerSubcommand, "web")
	cmd.Env = []string{}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != ExitSetup || !strings.Contains(string(out), "container: web: namespaces: pid") {
		t.Errorf("launcher outside new namespaces = %v, %q; want exit %d naming the namespaces step", err, out, ExitSetup)
	}
}

// TestContainerStop stops a running container the way the supervisor
// does (SIGTERM to the launcher's process group and to the launcher); the
// program, which installs no handler, must die of it at once.
func TestContainerStop(t *testing.T) {
	e := newTestEnv(t)
	c := testContainer("echo ready; exec sleep 1000")
	cmd, stdout, stderr := e.start(t, c)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(launchTimeout)
	for !strings.Contains(stdout.String(), "ready") {
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("container never got ready; stderr:\n%s", stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // past the exec of sleep
	pid := cmd.Process.Pid
	_ = unix.Kill(-pid, unix.SIGTERM)
	_ = unix.Kill(pid, unix.SIGTERM)
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 128+int(unix.SIGTERM) {
			t.Errorf("stopped container = %v, want exit status %d", err, 128+int(unix.SIGTERM))
		}
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("container ignored SIGTERM for 5s")
	}
}

func TestContainerEnv(t *testing.T) {
	for _, tc := range []struct {
		in, want []string
	}{
		{in: nil, want: []string{"PATH=" + DefaultPath, "HOME=/", "INGOT_BUILD_ID=b", "INGOT_SERVICE=s"}},
		{in: []string{"A=1", "PATH=/x", "A=2", "HOME=/root", "EMPTY="},
			want: []string{"A=2", "PATH=/x", "HOME=/root", "EMPTY=", "INGOT_BUILD_ID=b", "INGOT_SERVICE=s"}},
		{in: []string{"INGOT_SERVICE=fake", "B=x=y"}, want: []string{"INGOT_SERVICE=s", "B=x=y", "PATH=" + DefaultPath, "HOME=/", "INGOT_BUILD_ID=b"}},
	} {
		if diff := cmp.Diff(tc.want, containerEnv(tc.in, "b", "s")); diff != "" {
			t.Errorf("containerEnv(%q) mismatch (-want +got):\n%s", tc.in, diff)
		}
	}
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []struct {
		name string
		mode os.FileMode
	}{{"a/prog", 0o755}, {"b/prog", 0o755}, {"a/plain", 0o644}, {"b/plain", 0o755}} {
		p := filepath.Join(dir, f.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "a/dironly"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "a") + ":" + filepath.Join(dir, "b")
	for _, tc := range []struct{ name, want string }{
		{"prog", filepath.Join(dir, "a/prog")},
		{"plain", filepath.Join(dir, "b/plain")},
		{"dironly", ""},
		{"./rel/x", "./rel/x"},
		{"/abs", "/abs"},
	} {
		got, err := lookPath(tc.name, path)
		if got != tc.want || (tc.want == "") != (err != nil) {
			t.Errorf("lookPath(%q) = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}
