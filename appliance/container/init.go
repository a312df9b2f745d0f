package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ingotdev/ingot/packer/format/spec"
)

// forwardedSignals are relayed from the namespace init to the program's
// process group. SIGCHLD and SIGURG (the Go runtime's preemption signal)
// are deliberately absent.
var forwardedSignals = []os.Signal{
	unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT,
	unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH,
}

// plan is what the namespace init hands the exec stage: everything it
// needs after pivot_root, when appliance.json is out of sight.
type plan struct {
	Argv       []string `json:"argv"`
	Env        []string `json:"env"`
	Dir        string   `json:"dir"`
	UID        uint32   `json:"uid"`
	GID        uint32   `json:"gid"`
	Groups     []uint32 `json:"groups,omitempty"`
	Privileged bool     `json:"privileged,omitempty"`
	// DropAllCaps empties the bounding set (the debug container).
	DropAllCaps bool `json:"drop_all_caps,omitempty"`
}

// newPlan is the plan for running argv in service name's container c of
// appliance a: the service's environment, working directory (/ when
// unset), user, groups and privilege. The launcher runs the image's
// command with it, `/init exec` the operator's.
func newPlan(a *spec.Appliance, name string, c *spec.Container, argv []string) plan {
	p := plan{
		Argv:       argv,
		Env:        containerEnv(c.Env, a.BuildID, name),
		Dir:        c.WorkingDir,
		UID:        c.UID,
		GID:        c.GID,
		Groups:     c.AdditionalGIDs,
		Privileged: c.Privileged,
	}
	if p.Dir == "" {
		p.Dir = "/"
	}
	return p
}

// runInit is stage 1, PID 1 of the new namespaces; it returns the exit
// status.
func runInit(args []string, o options) int {
	name := args[2]
	// Handlers first: PID 1 of a pid namespace drops signals it has no
	// handler for, and one that arrives during setup must not be lost.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, forwardedSignals...)

	if os.Getpid() != 1 {
		return report(name, fail("namespaces", fmt.Errorf("pid %d is not 1: the launcher must be started in new namespaces (container.CloneFlags), as the supervisor does", os.Getpid())))
	}
	a, err := spec.Load(o.appliancePath)
	if err != nil {
		return report(name, fail("appliance", err))
	}
	c, err := a.ContainerOf(name)
	if err != nil {
		return report(name, fail("appliance", fmt.Errorf("%s: %w", o.appliancePath, err)))
	}
	p := newPlan(a, name, c, c.Argv)
	host := c.Hostname
	if host == "" {
		host = name
	}
	// Stage 2 starts now, while the appliance's root is still ours: its
	// binary and, for a dynamically linked test binary, its ELF
	// interpreter are found there, and pivot_root below moves its root
	// and working directory (both the old root) along with ours. It waits
	// for its plan, which is sent once the mount tree is complete.
	pid, planW, readyR, err := startExec(args)
	if err != nil {
		return report(name, err)
	}
	defer planW.Close()
	// pivot_root must wait until the stage has loaded everything it
	// needs from the old root (a dynamic loader opens libraries after
	// execve returned); it says so by closing its end of the ready pipe.
	waitReady := func() error {
		defer readyR.Close()
		if _, err := io.Copy(io.Discard, readyR); err != nil {
			return fail("exec stage", fmt.Errorf("waiting for it to start: %w", err))
		}
		return nil
	}
	if err := unix.Sethostname([]byte(host)); err != nil {
		return report(name, fail("hostname", fmt.Errorf("%q: %w", host, err)))
	}
	warn := func(msg string) { fmt.Fprintf(os.Stderr, "container: %s: note: %s\n", name, msg) }
	if err := setupRoot(c, host, p.Dir, o, warn, waitReady); err != nil {
		return report(name, err)
	}
	select {
	case sig := <-sigs:
		// Asked to stop before the program ran: do not start it.
		fmt.Fprintf(os.Stderr, "container: %s: %v during setup; not starting %s\n", name, sig, c.Argv[0])
		return 128 + int(sig.(syscall.Signal))
	default:
	}
	// The pipe holds 64 KiB and the stage reads while we write, so a big
	// plan cannot deadlock; a failed write means the stage died, which
	// its exit status reports.
	_ = json.NewEncoder(planW).Encode(p)
	planW.Close()
	return superviseProgram(pid, sigs)
}

// startExec starts stage 2 and returns its pid, the pipe for its plan
// and the pipe it closes once it runs.
func startExec(args []string) (pid int, plan, ready *os.File, err error) {
	planR, planW, err := os.Pipe()
	if err != nil {
		return 0, nil, nil, fail("exec stage", err)
	}
	defer planR.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		planW.Close()
		return 0, nil, nil, fail("exec stage", err)
	}
	defer readyW.Close()
	attr := &os.ProcAttr{
		Dir:   "/",
		Env:   []string{},
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr, planR, readyW},
		// A session of its own: signals go to the program's group only
		// through us, once, and the program has no controlling tty.
		Sys: &syscall.SysProcAttr{Setsid: true},
	}
	proc, err := os.StartProcess("/proc/self/exe", []string{args[0], spec.ContainerSubcommand, args[2], execStage}, attr)
	if err != nil {
		planW.Close()
		readyR.Close()
		return 0, nil, nil, fail("exec stage", fmt.Errorf("start /proc/self/exe: %w", err))
	}
	pid = proc.Pid
	// We wait with wait4(-1) below, which also reaps orphans.
	_ = proc.Release()
	return pid, planW, readyR, nil
}

// superviseProgram is the init loop: reap everything, forward signals to
// the program's group, and return the program's exit status.
func superviseProgram(pid int, sigs <-chan os.Signal) int {
	done := make(chan unix.WaitStatus, 1)
	go func() {
		for {
			var ws unix.WaitStatus
			got, err := unix.Wait4(-1, &ws, 0, nil)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil { // ECHILD: cannot happen while the program lives
				done <- unix.WaitStatus(ExitSetup << 8)
				return
			}
			if got == pid {
				done <- ws
				return
			}
		}
	}()
	for {
		select {
		case sig := <-sigs:
			s := sig.(syscall.Signal)
			if err := unix.Kill(-pid, s); err != nil {
				_ = unix.Kill(pid, s)
			}
		case ws := <-done:
			switch {
			case ws.Exited():
				return ws.ExitStatus()
			case ws.Signaled():
				return 128 + int(ws.Signal())
			}
			return ExitSetup
		}
	}
}

// containerEnv is env with later duplicates winning (in the place of the
// first), PATH defaulted, HOME defaulted to "/", and the variables every
// ingot service gets.
func containerEnv(env []string, buildID, service string) []string {
	var keys []string
	vals := make(map[string]string, len(env)+4)
	set := func(kv string) {
		k, v, _ := strings.Cut(kv, "=")
		if _, ok := vals[k]; !ok {
			keys = append(keys, k)
		}
		vals[k] = v
	}
	for _, kv := range env {
		set(kv)
	}
	if _, ok := vals["PATH"]; !ok {
		set("PATH=" + DefaultPath)
	}
	if _, ok := vals["HOME"]; !ok {
		set("HOME=/")
	}
	set(spec.EnvBuildID + "=" + buildID)
	set(spec.EnvService + "=" + service)
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k + "=" + vals[k]
	}
	return out
}
