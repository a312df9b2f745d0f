// Package session starts the processes of the agent's debug sessions
// (`ingot exec`, `ingot shell`) from PID 1: it allocates the terminal
// (/dev/ptmx, TIOCGPTPEER) or the pipes, and starts ingot-init again as
// `/init exec <service> -- CMD` in the service's cgroup with a pidfd of
// the service's launcher, or as `/init shell -- CMD` in new mount, uts and
// ipc namespaces. Everything that happens inside the container (joining
// its namespaces, giving up privileges) is package container's; this
// package only holds the host side: descriptors, the terminal's size,
// signals, and the exit status through the supervisor's Reaper (PID 1
// must never wait for a child itself).
package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ingotdev/ingot/appliance/container"
	"github.com/ingotdev/ingot/appliance/supervise"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// Services tells which process runs a service.
type Services interface {
	// Service returns the service's status (its PID is the launcher's
	// for an image service); false for an unknown name.
	Service(name string) (mgmt.ServiceStatus, bool)
}

// Starter starts sessions.
type Starter struct {
	spec     *spec.Appliance
	services Services
	reaper   *supervise.Reaper
	// argv0 is the helper's argv[0]; it runs /proc/self/exe, PID 1's
	// own binary.
	argv0 string
	logf  func(format string, args ...any)
	// cgroupRoot is where cgroup v2 is mounted in this namespace.
	cgroupRoot string

	mu     sync.Mutex
	shells uint64 // debug shells started, to name their cgroups
}

// NewStarter returns a Starter for the appliance a, whose services run
// under services and whose children are reaped by reaper. The helpers
// are this process's own binary (/proc/self/exe, ingot-init), with argv0
// as their argv[0]. logf gets what goes wrong after a session ended.
func NewStarter(a *spec.Appliance, services Services, reaper *supervise.Reaper, argv0 string, logf func(format string, args ...any)) *Starter {
	return &Starter{spec: a, services: services, reaper: reaper, argv0: argv0, logf: logf, cgroupRoot: "/sys/fs/cgroup"}
}

// HasShell reports whether the image has a debug container.
func (s *Starter) HasShell() bool { return s.spec.Debug != nil }

// ErrNoDebug refuses `ingot shell` on an image without a debug container.
var ErrNoDebug = errors.New("this appliance has no debug container: add `debug: {image: REF}` to ingot.yaml, build and update, then run ingot shell")

// Start starts the command of req (validated by the caller).
func (s *Starter) Start(ctx context.Context, req mgmt.ExecRequest) (*Session, error) {
	var argv []string
	var shellGroup string
	attr := &os.ProcAttr{Dir: "/", Env: []string{}, Sys: &syscall.SysProcAttr{Setsid: true}}
	var extra []*os.File
	if req.Shell {
		if s.spec.Debug == nil {
			return nil, fmt.Errorf("%w: %w", ErrNoDebug, mgmt.ErrConflict)
		}
		argv = append([]string{s.argv0, spec.ShellSubcommand, "--"}, req.Argv...)
		attr.Sys.Cloneflags = container.ShellCloneFlags
		// A cgroup of its own, killed when the shell exits, so that
		// nothing it started outlives the session.
		dir, cg, err := s.shellCgroup()
		if err != nil {
			return nil, fmt.Errorf("shell: %w", err)
		}
		if cg != nil {
			defer cg.Close()
			attr.Sys.UseCgroupFD = true
			attr.Sys.CgroupFD = int(cg.Fd())
			shellGroup = dir
		}
	} else {
		if _, err := s.spec.ContainerOf(req.Service); err != nil {
			return nil, fmt.Errorf("%w: %w", err, mgmt.ErrNotFound)
		}
		st, ok := s.services.Service(req.Service)
		if !ok {
			return nil, fmt.Errorf("no service %q: %w", req.Service, mgmt.ErrNotFound)
		}
		if st.State != mgmt.StateRunning || st.PID == 0 {
			return nil, fmt.Errorf("service %q is %s, not running: %w", req.Service, st.State, mgmt.ErrConflict)
		}
		pidfd, err := unix.PidfdOpen(st.PID, 0)
		if err != nil {
			return nil, fmt.Errorf("service %q: pidfd of its launcher (pid %d): %w", req.Service, st.PID, err)
		}
		pf := os.NewFile(uintptr(pidfd), "pidfd")
		defer pf.Close()
		// The pid was read before the pidfd was opened: make sure it is
		// still the service's, not a recycled number.
		if now, ok := s.services.Service(req.Service); !ok || now.PID != st.PID {
			return nil, fmt.Errorf("service %q restarted while the session started; try again: %w", req.Service, mgmt.ErrConflict)
		}
		cg, err := s.cgroupOf(st.PID)
		if err != nil {
			return nil, fmt.Errorf("service %q: %w", req.Service, err)
		}
		defer cg.Close()
		attr.Sys.UseCgroupFD = true
		attr.Sys.CgroupFD = int(cg.Fd())
		extra = append(extra, pf)
		argv = append([]string{s.argv0, spec.ExecSubcommand, req.Service, "--"}, req.Argv...)
	}
	sess := &Session{tty: req.TTY, group: shellGroup, logf: s.logf}
	defer func() {
		if sess.pid == 0 && shellGroup != "" {
			_ = unix.Rmdir(shellGroup) // nothing started in it
		}
	}()
	var child []*os.File // the child's ends, closed here once it started
	defer func() {
		for _, f := range child {
			f.Close()
		}
	}()
	if req.TTY {
		master, slave, err := openPTY()
		if err != nil {
			return nil, err
		}
		child = append(child, slave)
		sess.master = master
		if req.Rows > 0 && req.Cols > 0 {
			_ = sess.Resize(req.Rows, req.Cols)
		}
		attr.Files = []*os.File{slave, slave, slave}
	} else {
		var ends [3][2]*os.File
		for i := range ends {
			r, w, err := os.Pipe()
			if err != nil {
				for _, e := range ends[:i] {
					e[0].Close()
					e[1].Close()
				}
				return nil, fmt.Errorf("session: pipe: %w", err)
			}
			ends[i] = [2]*os.File{r, w}
		}
		sess.stdin, sess.stdout, sess.stderr = ends[0][1], ends[1][0], ends[2][0]
		child = append(child, ends[0][0], ends[1][1], ends[2][1])
		attr.Files = []*os.File{ends[0][0], ends[1][1], ends[2][1]}
	}
	// The lifeline: the helper hangs the command up when it ends.
	lifeR, lifeW, err := os.Pipe()
	if err != nil {
		sess.closeFiles()
		return nil, fmt.Errorf("session: pipe: %w", err)
	}
	child = append(child, lifeR)
	sess.lifeline = lifeW
	// Fds 3 and on: container.JoinPidFD and JoinLifelineFD, or
	// container.ShellLifelineFD.
	attr.Files = append(append(attr.Files, extra...), lifeR)
	pid, exited, err := s.reaper.Spawn(func() (int, error) {
		p, err := os.StartProcess("/proc/self/exe", argv, attr)
		if err != nil {
			return 0, err
		}
		pid := p.Pid
		_ = p.Release()
		return pid, nil
	})
	if err != nil {
		sess.closeFiles()
		return nil, fmt.Errorf("session: start %s: %w", strings.Join(argv[:2], " "), err)
	}
	sess.pid, sess.reaper, sess.done = pid, s.reaper, make(chan struct{})
	go sess.wait(exited)
	return sess, nil
}

// cgroupOf opens the cgroup v2 directory of pid (for CLONE_INTO_CGROUP).
func (s *Starter) cgroupOf(pid int) (*os.File, error) {
	dir, err := s.cgroupDirOf(strconv.Itoa(pid))
	if err != nil {
		return nil, err
	}
	return openDir(dir)
}

// cgroupDirOf is the cgroup v2 directory of /proc/<pid>.
func (s *Starter) cgroupDirOf(pid string) (string, error) {
	b, err := os.ReadFile("/proc/" + pid + "/cgroup")
	if err != nil {
		return "", fmt.Errorf("its cgroup: %w", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rel, ok := strings.CutPrefix(l, "0::"); ok {
			return filepath.Join(s.cgroupRoot, filepath.Clean("/"+rel)), nil
		}
	}
	return "", fmt.Errorf("its cgroup: no cgroup v2 line in /proc/%s/cgroup", pid)
}

func openDir(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", dir, err)
	}
	return os.NewFile(uintptr(fd), dir), nil
}

// shellGroupPrefix names the debug shells' cgroups, beside init's and the
// services' leaves; a service name cannot start with a dot.
const shellGroupPrefix = ".shell-"

// shellCgroup makes a new cgroup for a debug shell beside init's own
// leaf (cgroup.InitGroup) and returns it; nil when init runs in the root
// group (no cgroup set-up), where the shell goes without one.
func (s *Starter) shellCgroup() (string, *os.File, error) {
	self, err := s.cgroupDirOf("self")
	if err != nil {
		return "", nil, err
	}
	if filepath.Clean(self) == filepath.Clean(s.cgroupRoot) {
		return "", nil, nil
	}
	s.mu.Lock()
	s.shells++
	dir := filepath.Join(filepath.Dir(self), shellGroupPrefix+strconv.FormatUint(s.shells, 10))
	s.mu.Unlock()
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", nil, fmt.Errorf("cgroup: %w", err)
	}
	f, err := openDir(dir)
	if err != nil {
		_ = unix.Rmdir(dir)
		return "", nil, err
	}
	return dir, f, nil
}

// removeGroup kills what is left in a debug shell's cgroup (cgroup.kill)
// and removes it, waiting up to a second for the killed to go.
func removeGroup(dir string) error {
	if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cgroup: %w", err)
	}
	var err error
	for i := 0; i < 100; i++ {
		if err = unix.Rmdir(dir); err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("cgroup: rmdir %s: %w", dir, err)
}

// openPTY allocates a terminal: the master (non-blocking, so Close ends a
// read) and the slave, opened from the master (TIOCGPTPEER) rather than
// by a /dev/pts path.
func openPTY() (master, slave *os.File, err error) {
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("session: open /dev/ptmx: %w", err)
	}
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(m)
		return nil, nil, fmt.Errorf("session: unlock the terminal: %w", err)
	}
	sfd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(m), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	if errno != 0 {
		unix.Close(m)
		return nil, nil, fmt.Errorf("session: open the terminal's slave (TIOCGPTPEER): %w", errno)
	}
	if err := unix.SetNonblock(m, true); err != nil {
		unix.Close(m)
		unix.Close(int(sfd))
		return nil, nil, fmt.Errorf("session: terminal: %w", err)
	}
	return os.NewFile(uintptr(m), "ptmx"), os.NewFile(sfd, "pty"), nil
}

// Session is one started command; it implements the agent's Session.
type Session struct {
	tty    bool
	master *os.File // TTY
	stdin  *os.File // pipes
	stdout *os.File
	stderr *os.File

	// lifeline is held open for as long as the session lasts.
	lifeline *os.File
	// group is a debug shell's own cgroup, killed and removed when the
	// shell exits; empty for exec, which runs in the service's.
	group string
	logf  func(format string, args ...any)

	pid    int
	reaper *supervise.Reaper
	// done is closed once the helper exited; status and waitErr are set
	// then.
	done    chan struct{}
	status  int
	waitErr error
	closed  sync.Once
}

// killGrace is how long Close lets the helper hang the command up before
// it kills the helper.
const killGrace = 10 * time.Second

// Stdin is the command's input.
func (s *Session) Stdin() io.Writer {
	if s.tty {
		return s.master
	}
	return s.stdin
}

// CloseStdin ends the input of a command without a terminal.
func (s *Session) CloseStdin() error {
	if s.tty {
		return nil
	}
	return s.stdin.Close()
}

// Stdout is the command's output; with a terminal, all of it.
func (s *Session) Stdout() io.Reader {
	if s.tty {
		return ptyReader{s.master}
	}
	return s.stdout
}

// Stderr is the command's error output; nil with a terminal.
func (s *Session) Stderr() io.Reader {
	if s.tty {
		return nil
	}
	return s.stderr
}

// Resize sets the terminal's size; the kernel sends SIGWINCH to its
// foreground process group.
func (s *Session) Resize(rows, cols uint16) error {
	if !s.tty {
		return nil
	}
	return unix.IoctlSetWinsize(int(s.master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
}

// Signal sends sig to the helper, which forwards it to the command's
// process group.
func (s *Session) Signal(sig syscall.Signal) error {
	return s.reaper.Signal(s.pid, sig)
}

func (s *Session) wait(exited <-chan supervise.ProcessExit) {
	defer close(s.done)
	ws := (<-exited).Status
	if s.group != "" {
		if err := removeGroup(s.group); err != nil {
			s.logf("session: debug shell (helper pid %d): %v", s.pid, err)
		}
	}
	switch {
	case ws.Exited():
		s.status = ws.ExitStatus()
	case ws.Signaled():
		s.status = 128 + int(ws.Signal())
	default:
		s.waitErr = fmt.Errorf("session: helper pid %d: wait status %#x", s.pid, uint32(ws))
	}
	if s.waitErr != nil {
		s.waitErr = fmt.Errorf("session: %w", s.waitErr)
	}
}

// Wait returns the command's exit status once the helper exited (it
// exits with the command's status).
func (s *Session) Wait() (int, error) {
	<-s.done
	return s.status, s.waitErr
}

// Close ends the lifeline, so the helper hangs the command up (SIGHUP,
// then SIGKILL), releases the terminal or pipes, and kills the helper if
// it is still there after killGrace.
func (s *Session) Close() error {
	s.closed.Do(func() {
		s.closeFiles()
		go func() {
			t := time.NewTimer(killGrace)
			defer t.Stop()
			select {
			case <-s.done:
			case <-t.C:
				_ = s.reaper.Signal(s.pid, syscall.SIGKILL)
			}
		}()
	})
	return nil
}

func (s *Session) closeFiles() {
	for _, f := range []*os.File{s.lifeline, s.master, s.stdin, s.stdout, s.stderr} {
		if f != nil {
			f.Close()
		}
	}
}

// ptyReader turns the master's EIO, which it returns once no process
// holds the slave any more, into io.EOF.
type ptyReader struct{ f *os.File }

func (r ptyReader) Read(b []byte) (int, error) {
	n, err := r.f.Read(b)
	if err != nil && errors.Is(err, syscall.EIO) {
		err = io.EOF
	}
	return n, err
}
