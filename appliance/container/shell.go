package container

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/ingotdev/ingot/packer/format/spec"
)

// ShellCloneFlags are the namespaces the debug container's launcher is
// started in: its own mounts, hostname and IPC, but the appliance's pid
// namespace (so its /proc lists the services) and network.
const ShellCloneFlags = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC

// ShellMain runs `/init shell -- [COMMAND...]`: the debug container of
// the appliance (spec.Appliance.Debug, ingot.yaml's debug:), started by
// the agent for `ingot shell` with ShellCloneFlags, in a session of its
// own, with the terminal or pipes as fds 0-2 and the session's lifeline
// as ShellLifelineFD. It never returns.
//
// What the debug container sees and may touch:
//
//   - its image, read-only, nodev, nosuid, with the same /dev, /tmp,
//     /run, /sys (read-only, masked) and /etc files as a service's
//     container; no volumes, so nothing of perm;
//   - /proc of the appliance's pid namespace, mounted read-only with the
//     same masked and read-only paths as a container's: ps and top list
//     every service;
//   - the appliance's network namespace (ip, netstat, wget to a service);
//     its seccomp filter refuses AF_VSOCK, so not the agent's port;
//   - it runs as spec.DebugID, which no service may use, with no
//     capabilities at all (an empty bounding set), no_new_privs and the
//     containers' seccomp filter: it cannot signal or ptrace a service,
//     read another process's environ, fd, maps or mem, write a sysctl,
//     mount, or gain anything through setuid files.
//
// Unlike a service's launcher this one is not PID 1 of anything: after
// building the mount tree it forks the command itself, from one locked
// thread, and relays signals to it (startAndRelay).
func ShellMain(args []string, opts ...Option) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if len(args) < 3 || args[1] != spec.ShellSubcommand || args[2] != "--" {
		fmt.Fprintf(os.Stderr, "container: usage: %s %s -- [<command>...]\n", args[0], spec.ShellSubcommand)
		os.Exit(ExitSetup)
	}
	o.readOnlyProc = true
	os.Exit(runShell(args[3:], o))
}

func runShell(argv []string, o options) int {
	const name = spec.DebugHostname
	runtime.LockOSThread()
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, forwardedSignals...)
	a, err := spec.Load(o.appliancePath)
	if err != nil {
		return report(name, fail("appliance", err))
	}
	c := a.Debug
	if c == nil {
		return report(name, fail("appliance", errors.New(o.appliancePath+": the image has no debug container (ingot.yaml's debug:)")))
	}
	if len(argv) == 0 {
		argv = c.Argv
	}
	p := plan{
		Argv:        argv,
		Env:         containerEnv(c.Env, a.BuildID, name),
		Dir:         c.WorkingDir,
		UID:         spec.DebugID,
		GID:         spec.DebugID,
		DropAllCaps: true,
	}
	if p.Dir == "" {
		p.Dir = "/"
	}
	tty := isTerminal(0)
	if tty && envValue(p.Env, "TERM") == "" {
		p.Env = append(p.Env, "TERM=xterm")
	}
	if err := unix.Sethostname([]byte(spec.DebugHostname)); err != nil {
		return report(name, fail("hostname", err))
	}
	warn := func(msg string) { fmt.Fprintf(os.Stderr, "container: %s: note: %s\n", name, msg) }
	dc := *c
	dc.Privileged = false
	if err := setupRoot(&dc, spec.DebugHostname, p.Dir, o, warn, func() error { return nil }); err != nil {
		return report(name, err)
	}
	return startAndRelay(name, p, tty, sigs, ShellLifelineFD)
}
