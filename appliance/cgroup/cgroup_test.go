package cgroup

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ingotdev/ingot/packer/format/spec"
)

// These tests run against a directory that mimics cgroupfs: the kernel
// creates a group's interface files on mkdir, so the fake creates them up
// front, and Setup's and Service's mkdirs find them existing.

var groupFiles = []string{"cgroup.procs", "cgroup.subtree_control", "cgroup.kill",
	"memory.max", "memory.swap.max", "memory.oom.group", "memory.events", "cpu.max", "pids.max"}

func fakeGroup(t *testing.T, dir string, omit ...string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range groupFiles {
		if contains(omit, f) {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// fakeRoot makes a root offering controllers, with ingot/ and ingot/init.
func fakeRoot(t *testing.T, controllers string) string {
	t.Helper()
	root := t.TempDir()
	fakeGroup(t, root)
	if err := os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte(controllers+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fakeGroup(t, filepath.Join(root, Subtree))
	fakeGroup(t, filepath.Join(root, Subtree, InitGroup))
	return root
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSetup(t *testing.T) {
	for _, tc := range []struct {
		name, controllers string
		opts              []Option
		wantSubtree       string
		wantControllers   []string
		wantProcs         string
	}{
		{name: "all", controllers: "cpuset cpu io memory hugetlb pids rdma misc",
			wantSubtree: "+memory +cpu +pids", wantControllers: []string{"memory", "cpu", "pids"},
			wantProcs: strconv.Itoa(os.Getpid())},
		{name: "no memory controller", controllers: "cpu pids",
			wantSubtree: "+cpu +pids", wantControllers: []string{"cpu", "pids"},
			wantProcs: strconv.Itoa(os.Getpid())},
		{name: "none", controllers: "", wantSubtree: "", wantProcs: strconv.Itoa(os.Getpid())},
		{name: "without moving self", controllers: "memory", opts: []Option{WithoutMovingSelf()},
			wantSubtree: "+memory", wantControllers: []string{"memory"}, wantProcs: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeRoot(t, tc.controllers)
			h, err := Setup(root, tc.opts...)
			if err != nil {
				t.Fatalf("Setup(%q) = %v", tc.controllers, err)
			}
			for _, dir := range []string{root, filepath.Join(root, Subtree)} {
				if got := read(t, filepath.Join(dir, "cgroup.subtree_control")); got != tc.wantSubtree {
					t.Errorf("Setup(%q): %s/cgroup.subtree_control = %q, want %q", tc.controllers, dir, got, tc.wantSubtree)
				}
			}
			if got := read(t, filepath.Join(root, Subtree, InitGroup, "cgroup.procs")); got != tc.wantProcs {
				t.Errorf("Setup(%q): init's cgroup.procs = %q, want %q", tc.controllers, got, tc.wantProcs)
			}
			if diff := cmp.Diff(tc.wantControllers, h.Controllers()); diff != "" {
				t.Errorf("Setup(%q).Controllers() mismatch (-want +got):\n%s", tc.controllers, diff)
			}
			if h.Dir() != filepath.Join(root, Subtree) {
				t.Errorf("Dir() = %q, want %q", h.Dir(), filepath.Join(root, Subtree))
			}
			// Idempotent: a second Setup changes nothing and succeeds.
			if _, err := Setup(root, tc.opts...); err != nil {
				t.Errorf("second Setup(%q) = %v", tc.controllers, err)
			}
		})
	}
}

func TestSetupNotCgroup2(t *testing.T) {
	root := t.TempDir()
	_, err := Setup(root)
	if err == nil || !strings.Contains(err.Error(), "is not a cgroup2 mount") {
		t.Errorf("Setup(empty dir) = %v, want an error saying it is not a cgroup2 mount", err)
	}
}

func TestService(t *testing.T) {
	for _, tc := range []struct {
		name    string
		res     spec.Resources
		avail   string
		omit    []string
		want    map[string]string
		wantErr string
	}{
		{name: "unlimited", avail: "memory cpu pids", want: map[string]string{
			"memory.max": "", "cpu.max": "", "pids.max": "", "memory.oom.group": "", "memory.swap.max": ""}},
		{name: "all limits", avail: "memory cpu pids",
			res: spec.Resources{MemoryBytes: 128 << 20, CPUMillis: 500, Pids: 256},
			want: map[string]string{"memory.max": "134217728", "memory.swap.max": "0", "memory.oom.group": "1",
				"cpu.max": "50000 100000", "pids.max": "256"}},
		{name: "two CPUs", avail: "cpu", res: spec.Resources{CPUMillis: 2000},
			want: map[string]string{"cpu.max": "200000 100000", "memory.max": ""}},
		{name: "no swap accounting", avail: "memory", omit: []string{"memory.swap.max"},
			res:  spec.Resources{MemoryBytes: 4096},
			want: map[string]string{"memory.max": "4096", "memory.oom.group": "1"}},
		{name: "memory without the controller", avail: "cpu pids", res: spec.Resources{MemoryBytes: 1 << 20},
			wantErr: `cgroup: web: memory_bytes is set but the memory controller is not available (enabled: cpu pids)`},
		{name: "pids without the controller", avail: "memory", res: spec.Resources{Pids: 1},
			wantErr: `cgroup: web: pids is set but the pids controller is not available (enabled: memory)`},
		{name: "negative", avail: "memory", res: spec.Resources{CPUMillis: -1},
			wantErr: `cgroup: web: resources: cpu_millis: -1 is negative`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeRoot(t, tc.avail)
			h, err := Setup(root, WithoutMovingSelf())
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(root, Subtree, "web")
			fakeGroup(t, dir, tc.omit...)
			g, err := h.Service("web", tc.res)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("Service(web, %+v) = %v, want error %q", tc.res, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Service(web, %+v) = %v", tc.res, err)
			}
			if g.Dir() != dir {
				t.Errorf("Dir() = %q, want %q", g.Dir(), dir)
			}
			for f, want := range tc.want {
				if got := read(t, filepath.Join(dir, f)); got != want {
					t.Errorf("Service(web, %+v): %s = %q, want %q", tc.res, f, got, want)
				}
			}
		})
	}
}

func TestServiceBadName(t *testing.T) {
	h, err := Setup(fakeRoot(t, "memory"), WithoutMovingSelf())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"", ".", "..", "a/b", InitGroup} {
		if _, err := h.Service(name, spec.Resources{}); err == nil {
			t.Errorf("Service(%q) = nil error, want one", name)
		}
	}
}

func TestGroupFiles(t *testing.T) {
	root := fakeRoot(t, "memory")
	h, err := Setup(root, WithoutMovingSelf())
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, Subtree, "web")
	fakeGroup(t, dir)
	g, err := h.Service("web", spec.Resources{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		events  string
		want    uint64
		wantErr bool
	}{
		{events: "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 1\n", want: 2},
		{events: "", want: 0},
		{events: "oom_kill x\n", wantErr: true},
	} {
		if err := os.WriteFile(filepath.Join(dir, "memory.events"), []byte(tc.events), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := g.OOMKills()
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("OOMKills(%q) = %d, %v; want %d (error: %v)", tc.events, got, err, tc.want, tc.wantErr)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte("12\n34\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := g.Procs(); err != nil || !cmp.Equal(got, []int{12, 34}) {
		t.Errorf("Procs() = %v, %v; want [12 34]", got, err)
	}
	if err := g.Kill(); err != nil || read(t, filepath.Join(dir, "cgroup.kill")) != "1" {
		t.Errorf("Kill() = %v, cgroup.kill = %q; want nil, \"1\"", err, read(t, filepath.Join(dir, "cgroup.kill")))
	}
	f, err := g.Open()
	if err != nil {
		t.Fatalf("Open() = %v", err)
	}
	f.Close()
	// Without the files (old kernel, no memory controller): no error.
	for _, n := range []string{"memory.events", "cgroup.kill"} {
		if err := os.Remove(filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := g.OOMKills(); n != 0 || err != nil {
		t.Errorf("OOMKills() without memory.events = %d, %v; want 0, nil", n, err)
	}
	if err := g.Kill(); err != nil {
		t.Errorf("Kill() without cgroup.kill = %v, want nil", err)
	}
}

func TestUsage(t *testing.T) {
	root := t.TempDir()
	h := &Hierarchy{root: root}
	dir := filepath.Join(root, "web")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Usage("db"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Usage(no group) = %v, want ErrNotExist", err)
	}
	os.WriteFile(filepath.Join(dir, "cpu.stat"), []byte("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "memory.current"), []byte("123456\n"), 0o644)
	if u, err := h.Usage("web"); err != nil || u != (Usage{CPUSeconds: 2.5, MemoryBytes: 123456}) {
		t.Errorf("Usage(web) = %+v, %v", u, err)
	}
	os.WriteFile(filepath.Join(dir, "memory.current"), []byte("lots\n"), 0o644)
	if _, err := h.Usage("web"); err == nil || !strings.Contains(err.Error(), "memory.current") {
		t.Errorf("Usage(bad memory.current) = %v, want an error naming the file", err)
	}
	if _, err := h.Usage("../x"); err == nil {
		t.Errorf("Usage(../x) succeeded")
	}
}
