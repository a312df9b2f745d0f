package supervise

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ingotdev/ingot/appliance/cgroup"
	"github.com/ingotdev/ingot/appliance/container"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// Env of the container launcher when this test binary plays /init (see
// TestMain): the services' Env carries it through the supervisor.
const (
	envLauncherSpec = "SUPERVISE_TEST_CONTAINER_SPEC"
	envLauncherRoot = "SUPERVISE_TEST_CONTAINER_ROOT"
	envLauncherPerm = "SUPERVISE_TEST_CONTAINER_PERM"
)

// launcherMain runs the container launcher for a test; it never returns.
func launcherMain() {
	var opts []container.Option
	if v := os.Getenv(envLauncherSpec); v != "" {
		opts = append(opts, container.WithAppliancePath(v))
	}
	if v := os.Getenv(envLauncherRoot); v != "" {
		opts = append(opts, container.WithRootDir(v))
	}
	if v := os.Getenv(envLauncherPerm); v != "" {
		opts = append(opts, container.WithPermDir(v))
	}
	container.Main(os.Args, opts...)
}

// testHierarchy returns a cgroup.Hierarchy in a fresh group of the host's
// cgroup2 mount (mounting one if the host has none), removed when the test
// ends. The test process itself stays where it is.
func testHierarchy(t *testing.T) (*cgroup.Hierarchy, string) {
	t.Helper()
	mnt := cgroup2Mount(t)
	base := filepath.Join(mnt, fmt.Sprintf("ingot-supervise-test-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "_")))
	if err := os.Mkdir(base, 0o755); err != nil {
		t.Fatalf("cgroup2: %v (tests need root)", err)
	}
	t.Cleanup(func() { removeCgroupTree(t, base) })
	h, err := cgroup.Setup(base, cgroup.WithoutMovingSelf())
	if err != nil {
		t.Fatalf("cgroup.Setup(%s) = %v", base, err)
	}
	return h, base
}

// cgroup2Mount finds where cgroup2 is mounted, or mounts it.
func cgroup2Mount(t *testing.T) string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ... mount-point ... - fstype source options
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields := strings.Fields(pre)
		if ok && strings.HasPrefix(post, "cgroup2 ") && len(fields) >= 5 {
			return fields[4]
		}
	}
	dir := t.TempDir()
	if err := unix.Mount("cgroup2", dir, "cgroup2", 0, ""); err != nil {
		t.Fatalf("no cgroup2 mounted and mounting one on %s: %v (tests need root and a kernel with cgroup v2)", dir, err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// removeCgroupTree kills everything in dir's groups and removes them,
// deepest first.
func removeCgroupTree(t *testing.T, dir string) {
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		_ = os.WriteFile(filepath.Join(dirs[i], "cgroup.kill"), []byte("1"), 0)
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := unix.Rmdir(dirs[i])
			if err == nil || errors.Is(err, unix.ENOENT) {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("removing test cgroup %s: %v", dirs[i], err)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestCgroupPlacement: the service starts inside its group (no race: the
// first thing it prints is already there), and what it leaves behind in
// another session is killed with the group when it exits.
func TestCgroupPlacement(t *testing.T) {
	h, base := testHierarchy(t)
	svc := sh("cg", `echo "cgroup $(grep ^0:: /proc/self/cgroup)"; setsid sleep 1000 & echo "left $!"; sleep 0.2; exit 0`)
	svc.Restart = spec.RestartNever
	s := start(t, []spec.Service{svc}, WithCgroups(h))
	rel := strings.TrimPrefix(filepath.Join(h.Dir(), "cg"), cgroup2Mount(t))
	if got := logLine(t, s, "cg", "cgroup "); !strings.HasSuffix(got, rel) {
		t.Errorf("service's /proc/self/cgroup = %q, want it to end in %q", got, rel)
	}
	var left int
	if _, err := fmt.Sscan(logLine(t, s, "cg", "left "), &left); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the service to exit", func() bool { return status(t, s, "cg").State == mgmt.StateExited })
	waitFor(t, 5*time.Second, "the setsid'd leftover to be killed", func() bool { return dead(left) })
	procs, err := os.ReadFile(filepath.Join(base, cgroup.Subtree, "cg", "cgroup.procs"))
	if err != nil || strings.TrimSpace(string(procs)) != "" {
		t.Errorf("group after exit has processes %q (%v), want none", procs, err)
	}
}

func TestResourcesNeedCgroups(t *testing.T) {
	svc := sh("limited", "exec sleep 1000")
	svc.Resources = spec.Resources{Pids: 10}
	svc.Restart = spec.RestartNever
	s := start(t, []spec.Service{svc})
	waitFor(t, 5*time.Second, "the start to fail", func() bool { return status(t, s, "limited").State == mgmt.StateExited })
	st := status(t, s, "limited")
	if st.LastExit == nil || !strings.Contains(st.LastExit.Error, "cgroups are not available, so the limits cannot be enforced") {
		t.Errorf("service with resources but no cgroups: last exit %+v, want a start failure saying why", st.LastExit)
	}
}

// TestCgroupFailurePolicy uses a fake cgroupfs: a limit that cannot be
// set fails the start; a service without limits whose group cannot be made
// runs anyway and says so.
func TestCgroupFailurePolicy(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{root, filepath.Join(root, cgroup.Subtree), filepath.Join(root, cgroup.Subtree, cgroup.InitGroup)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "cgroup.subtree_control"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("cpu pids\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := cgroup.Setup(root, cgroup.WithoutMovingSelf())
	if err != nil {
		t.Fatal(err)
	}
	// A file where the group should be: the group cannot be opened.
	if err := os.WriteFile(filepath.Join(root, cgroup.Subtree, "free"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	limited := sh("limited", "exec sleep 1000")
	limited.Resources = spec.Resources{MemoryBytes: 64 << 20}
	limited.Restart = spec.RestartNever
	free := sh("free", `echo up; exec sleep 1000`)
	s := start(t, []spec.Service{limited, free}, WithCgroups(h))
	waitFor(t, 5*time.Second, "the limited start to fail", func() bool { return status(t, s, "limited").State == mgmt.StateExited })
	if st := status(t, s, "limited"); st.LastExit == nil || !strings.Contains(st.LastExit.Error, "memory controller is not available") {
		t.Errorf("limited service: last exit %+v, want a start failure naming the memory controller", st.LastExit)
	}
	logLine(t, s, "free", "up")
	if got := logLine(t, s, "free", "running without a cgroup: "); !strings.Contains(got, filepath.Join(root, cgroup.Subtree, "free")) {
		t.Errorf("free service log = %q, want the group path", got)
	}
}

// TestContainerService runs an image service through the supervisor as
// stage1 would: the supervisor starts this test binary as /init container
// <name> in new namespaces and in its cgroup; the container sees its own
// hostname and pid namespace, and a stop reaches the program.
func TestContainerService(t *testing.T) {
	h, _ := testHierarchy(t)
	dir := t.TempDir()
	rootDir := filepath.Join(dir, "root")
	rootfs := filepath.Join(rootDir, spec.ContainerRoot, "box", "rootfs")
	perm := filepath.Join(dir, "perm")
	for _, d := range []string{filepath.Join(rootfs, "bin"), perm} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("busybox-static is needed: %v", err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin/busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := &spec.Container{
		Image: "example.test/box:1", Digest: "sha256:" + strings.Repeat("cd", 32),
		Rootfs: spec.ContainerRoot + "/box/rootfs",
		Argv: []string{"/bin/busybox", "sh", "-c",
			`echo "host $(busybox hostname)"; echo "pid1 $(busybox cat /proc/1/cmdline | busybox tr '\0' ' ')"; echo "cgroup $(busybox grep ^0:: /proc/self/cgroup)"; echo "data $(echo hi > /data/f && busybox cat /data/f)"; exec busybox sleep 1000`},
		UID: 1000, GID: 1000,
		Volumes: []spec.Volume{{Source: "/perm/box", Target: "/data"}},
	}
	specPath := filepath.Join(dir, "appliance.json")
	svc := spec.Service{
		Name: "box", Path: exe, Args: []string{spec.ContainerSubcommand, "box"}, Container: c,
		Env: map[string]string{envLauncherSpec: specPath, envLauncherRoot: rootDir, envLauncherPerm: perm},
	}
	a := &spec.Appliance{Name: "app", BuildID: "b1", Arch: "amd64", Services: []spec.Service{svc}}
	b, err := a.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(specPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	s := start(t, []spec.Service{svc}, WithCgroups(h), WithPerm(perm))
	for _, tc := range []struct{ prefix, want string }{
		{"host ", "box"},
		{"pid1 ", exe + " container box "},
		{"data ", "hi"},
	} {
		if got := logLine(t, s, "box", tc.prefix); got != tc.want {
			t.Errorf("container log %q = %q, want %q", tc.prefix, got, tc.want)
		}
	}
	// Inside, its group is the root of its cgroup namespace; outside, the
	// launcher is in the service's group.
	if got := logLine(t, s, "box", "cgroup "); got != "0::/" {
		t.Errorf("container's cgroup = %q, want 0::/ (its own cgroup namespace)", got)
	}
	pid := status(t, s, "box").PID
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid)); err != nil || !strings.Contains(string(b), "/"+cgroup.Subtree+"/box\n") {
		t.Errorf("launcher %d's cgroup = %q, %v; want the service's group", pid, b, err)
	}
	ctx := t.Context()
	if err := s.Stop(ctx, "box"); err != nil {
		t.Fatalf("Stop(box) = %v", err)
	}
	st := status(t, s, "box")
	// The program has no SIGTERM handler and is not its namespace's init,
	// so SIGTERM (forwarded by the launcher) ends it: 128+15, not a
	// SIGKILL after the grace period.
	if st.LastExit == nil || st.LastExit.Code != 128+int(unix.SIGTERM) || st.LastExit.Ran() > 5*time.Second {
		t.Errorf("stopped container: last exit %+v, want exit status %d well within the grace period", st.LastExit, 128+int(unix.SIGTERM))
	}
}
