// Package cgroup puts ingot's services into cgroup v2 groups: one leaf per
// service under <root>/ingot, with the limits of spec.Resources written to
// memory.max, cpu.max and pids.max, and a directory handle for
// clone3(CLONE_INTO_CGROUP) so a service starts inside its group instead of
// being moved there after it already ran (and maybe forked).
//
// Layout (root is where cgroup2 is mounted, /sys/fs/cgroup in the guest):
//
//	root/                 memory cpu pids enabled for the children
//	root/ingot/           memory cpu pids enabled for the children; no processes
//	root/ingot/init       ingot-init itself (Setup moves it there)
//	root/ingot/<service>  one leaf per service
//
// cgroup v2 forbids processes in a non-root group that hands controllers
// to its children ("no internal processes"), so everything that runs sits
// in a leaf: ingot-init moves itself into ingot/init, which also accounts
// its own memory and CPU apart from the services'. The root group is
// exempt from the rule, so enabling controllers there is allowed while the
// kernel threads stay in it.
//
// The package only reads and writes files, so its logic is tested against
// a directory that mimics cgroupfs; the real kernel is exercised by the
// supervisor's tests and the VM tests.
package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ingotdev/ingot/packer/format/spec"
)

// DefaultRoot is where stage1 mounts cgroup2.
const DefaultRoot = "/sys/fs/cgroup"

// Names of the groups this package creates under the root.
const (
	// Subtree holds every group ingot creates.
	Subtree = "ingot"
	// InitGroup is ingot-init's own leaf. Service names cannot collide
	// with it: spec reserves "init".
	InitGroup = "init"
)

// cpuPeriodMicros is the cpu.max period; quota = CPUMillis * 100 makes
// 1000 millis one whole CPU per period.
const cpuPeriodMicros = 100000

// dirMode is the mode of the group directories (cgroupfs ignores most of
// it, but a fake one in tests does not).
const dirMode = 0o755

// wantedControllers are what services' Resources need.
var wantedControllers = []string{"memory", "cpu", "pids"}

// Hierarchy is ingot's subtree of a cgroup2 mount.
type Hierarchy struct {
	root        string
	controllers map[string]bool // enabled for the services' groups
}

// Option configures Setup.
type Option func(*options)

type options struct {
	moveSelf bool
}

// WithoutMovingSelf leaves the calling process in its group. Setup
// otherwise moves it (all its threads) into InitGroup, which ingot-init
// wants and a test process does not.
func WithoutMovingSelf() Option { return func(o *options) { o.moveSelf = false } }

// Setup prepares root (a cgroup2 mount or a group in one) for services:
// it enables the memory, cpu and pids controllers that root offers for
// root's and Subtree's children, creates Subtree and InitGroup, and moves
// the calling process into InitGroup. It is idempotent. A controller the
// kernel lacks is left out, not an error: Service then fails only for a
// service that sets the limit needing it.
func Setup(root string, opts ...Option) (*Hierarchy, error) {
	o := options{moveSelf: true}
	for _, opt := range opts {
		opt(&o)
	}
	avail, err := readControllers(filepath.Join(root, "cgroup.controllers"))
	if err != nil {
		return nil, fmt.Errorf("cgroup: %s is not a cgroup2 mount: %w", root, err)
	}
	var want []string
	for _, c := range wantedControllers {
		if avail[c] {
			want = append(want, c)
		}
	}
	if err := enable(root, want); err != nil {
		return nil, err
	}
	sub := filepath.Join(root, Subtree)
	if err := mkdir(sub); err != nil {
		return nil, err
	}
	if err := enable(sub, want); err != nil {
		return nil, err
	}
	initDir := filepath.Join(sub, InitGroup)
	if err := mkdir(initDir); err != nil {
		return nil, err
	}
	if o.moveSelf {
		if err := writeFile(initDir, "cgroup.procs", strconv.Itoa(os.Getpid())); err != nil {
			return nil, err
		}
	}
	// Trust what the kernel says is enabled, not what we asked for.
	enabled, err := readControllers(filepath.Join(sub, "cgroup.subtree_control"))
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	return &Hierarchy{root: sub, controllers: enabled}, nil
}

// Dir is the Subtree directory.
func (h *Hierarchy) Dir() string { return h.root }

// Controllers lists the controllers the services' groups get, sorted.
func (h *Hierarchy) Controllers() []string {
	var out []string
	for _, c := range wantedControllers {
		if h.controllers[c] {
			out = append(out, c)
		}
	}
	return out
}

// Group is one service's cgroup.
type Group struct {
	dir string
}

// Service creates (or reuses) the leaf for the named service and writes
// its limits. Zero limits are not written: a new group is unlimited, and
// the group of a service lives exactly as long as the boot, so a limit
// cannot linger from an older spec. An error means a limit the service
// asks for is not in force.
func (h *Hierarchy) Service(name string, r spec.Resources) (*Group, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || name == InitGroup {
		return nil, fmt.Errorf("cgroup: service name %q cannot name a group", name)
	}
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("cgroup: %s: %w", name, err)
	}
	g := &Group{dir: filepath.Join(h.root, name)}
	if err := mkdir(g.dir); err != nil {
		return nil, err
	}
	need := func(controller, field string) error {
		if !h.controllers[controller] {
			return fmt.Errorf("cgroup: %s: %s is set but the %s controller is not available (enabled: %s)",
				name, field, controller, strings.Join(h.Controllers(), " "))
		}
		return nil
	}
	if r.MemoryBytes > 0 {
		if err := need("memory", "memory_bytes"); err != nil {
			return nil, err
		}
		if err := writeFile(g.dir, "memory.max", strconv.FormatInt(r.MemoryBytes, 10)); err != nil {
			return nil, err
		}
		// Without this the limit would only push the service into swap.
		// The file exists only with swap accounting, which is fine to lack.
		if err := writeFile(g.dir, "memory.swap.max", "0"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		// Kill the whole group on OOM, not one process of it: a service
		// (or a container and its launcher) half killed is worse than a
		// restarted one.
		if err := writeFile(g.dir, "memory.oom.group", "1"); err != nil {
			return nil, err
		}
	}
	if r.CPUMillis > 0 {
		if err := need("cpu", "cpu_millis"); err != nil {
			return nil, err
		}
		v := fmt.Sprintf("%d %d", r.CPUMillis*(cpuPeriodMicros/1000), cpuPeriodMicros)
		if err := writeFile(g.dir, "cpu.max", v); err != nil {
			return nil, err
		}
	}
	if r.Pids > 0 {
		if err := need("pids", "pids"); err != nil {
			return nil, err
		}
		if err := writeFile(g.dir, "pids.max", strconv.FormatInt(r.Pids, 10)); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// Dir is the group's directory.
func (g *Group) Dir() string { return g.dir }

// Open returns a handle of the group's directory for
// syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd())}; the caller
// closes it once the process has started.
func (g *Group) Open() (*os.File, error) {
	fd, err := unix.Open(g.dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("cgroup: open %s: %w", g.dir, err)
	}
	return os.NewFile(uintptr(fd), g.dir), nil
}

// OOMKills returns how many processes the OOM killer has killed in the
// group since it was created (memory.events, oom_kill); 0 without the
// memory controller.
func (g *Group) OOMKills() (uint64, error) {
	b, err := os.ReadFile(filepath.Join(g.dir, "memory.events"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("cgroup: %w", err)
	}
	return parseKeyed(b, "oom_kill", filepath.Join(g.dir, "memory.events"))
}

// Kill SIGKILLs every process in the group (cgroup.kill, Linux 5.14+),
// so nothing a run left behind, even in another session, outlives it. On
// older kernels, where the file is missing, it does nothing.
func (g *Group) Kill() error {
	err := writeFile(g.dir, "cgroup.kill", "1")
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// Procs returns the pids in the group.
func (g *Group) Procs() ([]int, error) {
	b, err := os.ReadFile(filepath.Join(g.dir, "cgroup.procs"))
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	var out []int
	for i, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("cgroup: %s/cgroup.procs: line %d: %q is not a pid", g.dir, i+1, f)
		}
		out = append(out, pid)
	}
	return out, nil
}

// Remove deletes the group; it must have no processes left.
func (g *Group) Remove() error {
	if err := unix.Rmdir(g.dir); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("cgroup: rmdir %s: %w", g.dir, err)
	}
	return nil
}

// enable turns controllers on in dir's cgroup.subtree_control with one
// write, which the kernel applies all or nothing.
func enable(dir string, controllers []string) error {
	on, err := readControllers(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		return fmt.Errorf("cgroup: %w", err)
	}
	var add []string
	for _, c := range controllers {
		if !on[c] {
			add = append(add, "+"+c)
		}
	}
	if len(add) == 0 {
		return nil
	}
	return writeFile(dir, "cgroup.subtree_control", strings.Join(add, " "))
}

// readControllers parses a space-separated controller list.
func readControllers(path string) (map[string]bool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m := make(map[string]bool)
	for _, f := range strings.Fields(string(b)) {
		m[strings.TrimPrefix(f, "+")] = true
	}
	return m, nil
}

// parseKeyed finds "key N" in a flat keyed file such as memory.events.
func parseKeyed(b []byte, key, path string) (uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for line := 1; sc.Scan(); line++ {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok || k != key {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cgroup: %s: line %d: %s: %q is not a number", path, line, key, v)
		}
		return n, nil
	}
	return 0, nil
}

func mkdir(dir string) error {
	if err := os.Mkdir(dir, dirMode); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("cgroup: %w", err)
	}
	return nil
}

// writeFile writes one value the way cgroupfs wants it: a single write(2)
// to an existing file, no O_CREAT, no truncation games. Errors keep
// os.ErrNotExist detectable.
func writeFile(dir, name, value string) error {
	p := filepath.Join(dir, name)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("cgroup: %w", err)
	}
	_, werr := f.WriteString(value)
	cerr := f.Close()
	if werr != nil {
		return fmt.Errorf("cgroup: write %q to %s: %w", value, p, werr)
	}
	if cerr != nil {
		return fmt.Errorf("cgroup: write %q to %s: %w", value, p, cerr)
	}
	return nil
}

// Usage is what a group has used: CPU time since it was created and
// memory now.
type Usage struct {
	// CPUSeconds is cpu.stat's usage_usec (user and system time).
	CPUSeconds float64
	// MemoryBytes is memory.current; 0 without the memory controller.
	MemoryBytes uint64
}

// Usage reads the usage of the named service's group. An error wrapping
// os.ErrNotExist means the group was not made (the service never ran).
func (h *Hierarchy) Usage(name string) (Usage, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return Usage{}, fmt.Errorf("cgroup: service name %q cannot name a group", name)
	}
	dir := filepath.Join(h.root, name)
	statPath := filepath.Join(dir, "cpu.stat")
	b, err := os.ReadFile(statPath)
	if err != nil {
		return Usage{}, fmt.Errorf("cgroup: %w", err)
	}
	usec, err := parseKeyed(b, "usage_usec", statPath)
	if err != nil {
		return Usage{}, err
	}
	u := Usage{CPUSeconds: float64(usec) / 1e6}
	memPath := filepath.Join(dir, "memory.current")
	b, err = os.ReadFile(memPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return Usage{}, fmt.Errorf("cgroup: %w", err)
	default:
		n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return Usage{}, fmt.Errorf("cgroup: %s: %q is not a number", memPath, strings.TrimSpace(string(b)))
		}
		u.MemoryBytes = n
	}
	return u, nil
}
