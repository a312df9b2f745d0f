package container

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ingotdev/ingot/packer/format/spec"
)

// JoinPidFD is the descriptor on which `/init exec` receives a pidfd of
// the container's launcher (its namespace init).
const JoinPidFD = 3

// Lifeline descriptors: the read end of a pipe whose other end the agent
// holds for as long as the session lasts. When it ends (the client went
// away, or PID 1 died) the helper hangs up the command: SIGHUP to its
// process group, then SIGKILL after hangupGrace.
const (
	JoinLifelineFD  = 4
	ShellLifelineFD = 3
)

// hangupGrace is how long a command has after the session's SIGHUP.
const hangupGrace = 3 * time.Second

// JoinMain runs `/init exec <service> -- ARGV...`: it enters the running
// container of service and runs ARGV there with the container program's
// own restrictions, relays signals, and exits with its status. It never
// returns.
//
// The caller (the agent's session code, in PID 1) starts it in the
// service's cgroup (clone3 with CLONE_INTO_CGROUP), in a session of its
// own, with the command's stdin, stdout and stderr (a terminal or pipes)
// as fds 0-2, a pidfd of the service's launcher as JoinPidFD and the
// session's lifeline as JoinLifelineFD. On one
// locked OS thread it then:
//
//  1. unshares its filesystem attributes (CLONE_FS: a thread sharing
//     them cannot change its mount namespace) and joins the launcher's
//     mount, pid, uts and ipc namespaces, and net when the container has
//     its own, in one setns on the pidfd (which cannot name a recycled
//     pid); the root and working directory become the container's;
//  2. enters a new cgroup namespace rooted at the service's cgroup, as
//     the container's program did;
//  3. gives up everything the program gave up, through the same code
//     (dropPrivileges, installSeccomp): the bounding set, no inheritable
//     or ambient capabilities, no_new_privs, the image user and groups,
//     the seccomp filter; a command cannot get more than the service;
//  4. starts ARGV (looked up in the container's PATH) from that thread,
//     so it inherits all of the above and lands in the container's pid
//     namespace (a pid namespace applies to children), as a session
//     leader whose controlling terminal is fd 0 when that is a terminal.
//     (Not PR_SET_PDEATHSIG: Go's child checks getppid() after setting
//     it, and in another pid namespace the parent is 0, so the child
//     would kill itself. The lifeline does that job.)
//
// This process stays outside the container's pid namespace as the
// command's parent: it forwards SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1,
// SIGUSR2 and SIGWINCH to the command's process group and exits with its
// status (128+N for signal N). When the lifeline ends it hangs the
// command up.
func JoinMain(args []string, opts ...Option) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if len(args) < 5 || args[1] != spec.ExecSubcommand || args[3] != "--" {
		fmt.Fprintf(os.Stderr, "container: usage: %s %s <service> -- <command>...\n", args[0], spec.ExecSubcommand)
		os.Exit(ExitSetup)
	}
	os.Exit(runJoin(args[2], args[4:], o))
}

func runJoin(name string, argv []string, o options) int {
	// Namespaces, capabilities, no_new_privs and seccomp all belong to
	// the thread; the command is forked from this one. The thread is
	// never unlocked, so it dies with its changes instead of running
	// other goroutines.
	runtime.LockOSThread()
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, forwardedSignals...)

	a, err := spec.Load(o.appliancePath)
	if err != nil {
		return report(name, fail("appliance", err))
	}
	c, err := a.ContainerOf(name)
	if err != nil {
		return report(name, fail("appliance", fmt.Errorf("%s: %w", o.appliancePath, err)))
	}
	p := newPlan(a, name, c, argv)
	tty := isTerminal(0)
	if tty && envValue(p.Env, "TERM") == "" {
		p.Env = append(p.Env, "TERM=xterm")
	}
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return report(name, fail("join", fmt.Errorf("unshare CLONE_FS: %w", err)))
	}
	flags := unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC
	if c.NetworkNamespace {
		flags |= unix.CLONE_NEWNET
	}
	if err := unix.Setns(JoinPidFD, flags); err != nil {
		return report(name, fail("join", fmt.Errorf("setns into the launcher's namespaces (pidfd %d): %w", JoinPidFD, err)))
	}
	unix.Close(JoinPidFD)
	if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
		// As for the program: it runs anyway, seeing the appliance's
		// cgroup paths.
		fmt.Fprintf(os.Stderr, "container: %s: note: cgroup namespace: %v\n", name, err)
	}
	return startAndRelay(name, p, tty, sigs, JoinLifelineFD)
}

// startAndRelay gives up the privileges p does not have on the calling
// (locked) thread, starts p's command from it and relays signals until it
// exits; it returns the exit status.
func startAndRelay(name string, p plan, tty bool, sigs <-chan os.Signal, lifelineFD int) int {
	// The command must not inherit the lifeline: only this process
	// watches it.
	unix.CloseOnExec(lifelineFD)
	lifeline := os.NewFile(uintptr(lifelineFD), "lifeline")
	if err := dropPrivileges(p); err != nil {
		return report(name, err)
	}
	if err := unix.Chdir(p.Dir); err != nil {
		return report(name, fail("working_dir", fmt.Errorf("chdir %s as uid %d: %w", p.Dir, p.UID, err)))
	}
	prog, err := lookPath(p.Argv[0], envValue(p.Env, "PATH"))
	if err != nil {
		return report(name, err)
	}
	unix.Umask(0o022)
	if !p.Privileged {
		if err := installSeccomp(); err != nil {
			return report(name, fail("seccomp", err))
		}
	}
	proc, err := os.StartProcess(prog, p.Argv, &os.ProcAttr{
		Env:   p.Env,
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
		Sys: &syscall.SysProcAttr{
			Setsid:  true,
			Setctty: tty,
			Ctty:    0,
		},
	})
	if err != nil {
		code := ExitCannotExec
		if errors.Is(err, unix.ENOENT) {
			code = ExitNotFound
		}
		return report(name, &stepError{step: "exec", err: fmt.Errorf("%s: %w", prog, err), code: code})
	}
	done := make(chan *os.ProcessState, 1)
	go func() {
		st, _ := proc.Wait()
		done <- st
	}()
	hangup := make(chan struct{})
	go func() {
		// Nothing is ever written: a read returns at EOF (or if the
		// lifeline was not given, at once, which hangs up too).
		var b [1]byte
		_, _ = lifeline.Read(b[:])
		close(hangup)
	}()
	var kill <-chan time.Time
	for {
		select {
		case <-hangup:
			hangup = nil
			signalGroup(proc, syscall.SIGHUP)
			kill = time.After(hangupGrace)
		case <-kill:
			signalGroup(proc, syscall.SIGKILL)
		case sig := <-sigs:
			signalGroup(proc, sig.(syscall.Signal))
		case st := <-done:
			if st == nil {
				return ExitSetup
			}
			ws := st.Sys().(syscall.WaitStatus)
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

// isTerminal reports whether fd is a terminal.
func isTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}

// signalGroup sends s to the command's process group, or to the command
// alone if the group is gone.
func signalGroup(proc *os.Process, s syscall.Signal) {
	if err := unix.Kill(-proc.Pid, s); err != nil {
		_ = proc.Signal(s)
	}
}
