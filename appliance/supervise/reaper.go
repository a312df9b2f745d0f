package supervise

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ProcessExit is what the Reaper learned about a child that ended.
type ProcessExit struct {
	PID    int
	Status unix.WaitStatus
	Time   time.Time
}

// reapSafetyInterval makes the Reaper look for dead children even without
// SIGCHLD, so a lost signal cannot leave a zombie or a service that never
// restarts.
const reapSafetyInterval = 5 * time.Second

// ErrReaped is returned by Signal for a process that has already exited.
var ErrReaped = errors.New("supervise: process already exited")

// Reaper is the one place in the process that waits for children. PID 1
// (and any child subreaper) inherits orphans it never started, and must
// wait for them with a wildcard wait; if any other code waited for its own
// child by pid at the same time (os/exec's Cmd.Wait, os.Process.Wait) one
// of the two would lose the exit status. So every child is started through
// Spawn, which registers its pid before the Reaper can see it exit, and the
// Reaper hands each status to whoever registered it and discards the
// orphans'.
//
// Because registration and reaping share a lock, a registered pid is known
// to be alive or a zombie (never reused) while the lock is held; Signal and
// the group kill at exit rely on that.
//
// In a process with a Reaper running, do not use os/exec's Wait.
type Reaper struct {
	mu       sync.Mutex
	waiters  map[int]*waiter
	orphans  atomic.Uint64
	onOrphan func(ProcessExit)
}

type waiter struct {
	ch        chan<- ProcessExit
	killGroup bool
}

// ReaperOption configures a Reaper.
type ReaperOption func(*Reaper)

// WithOrphanHook calls f (outside the Reaper's lock) for every child that
// nobody registered: orphans inherited from exited services.
func WithOrphanHook(f func(ProcessExit)) ReaperOption {
	return func(r *Reaper) { r.onOrphan = f }
}

// SpawnOption configures one Spawn.
type SpawnOption func(*waiter)

// KillGroupOnExit makes the Reaper SIGKILL the child's process group when
// the child (its leader) exits, before reaping it so the group id cannot
// have been reused: whatever the run left behind dies with it.
func KillGroupOnExit() SpawnOption { return func(w *waiter) { w.killGroup = true } }

// NewReaper returns a Reaper; call Run to make it work.
func NewReaper(opts ...ReaperOption) *Reaper {
	r := &Reaper{waiters: make(map[int]*waiter)}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Run reaps children whenever SIGCHLD arrives until ctx ends.
func (r *Reaper) Run(ctx context.Context) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, unix.SIGCHLD)
	defer signal.Stop(sig)
	tick := time.NewTicker(reapSafetyInterval)
	defer tick.Stop()
	for {
		r.reapAll()
		select {
		case <-ctx.Done():
			return
		case <-sig:
		case <-tick.C:
		}
	}
}

// Spawn runs start, which must start exactly one child and return its pid,
// while holding the Reaper's lock, so the child cannot be reaped before its
// exit channel exists. The channel receives the child's exit once. start
// may wait for its own child only if it failed to start (as os.StartProcess
// does); the lock keeps the Reaper away meanwhile.
func (r *Reaper) Spawn(start func() (pid int, err error), opts ...SpawnOption) (int, <-chan ProcessExit, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := start()
	if err != nil {
		return 0, nil, err
	}
	ch := make(chan ProcessExit, 1)
	w := &waiter{ch: ch}
	for _, o := range opts {
		o(w)
	}
	r.waiters[pid] = w
	return pid, ch, nil
}

// Signal sends sig to a spawned child's process group and to the child
// itself (in case it left the group), if the child has not been reaped.
func (r *Reaper) Signal(pid int, sig unix.Signal) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.waiters[pid]; !ok {
		return ErrReaped
	}
	gerr := unix.Kill(-pid, sig)
	perr := unix.Kill(pid, sig)
	if gerr != nil && perr != nil {
		return perr
	}
	return nil
}

// Orphans returns how many children nobody registered have been reaped.
func (r *Reaper) Orphans() uint64 { return r.orphans.Load() }

// siginfoPIDOffset is where si_pid sits in siginfo_t: after si_signo,
// si_errno and si_code, at the union that is pointer-aligned.
const siginfoPIDOffset = 12 + (unsafe.Sizeof(uintptr(0)) - 4)

func (r *Reaper) reapAll() {
	var orphans []ProcessExit
	r.mu.Lock()
	for {
		// Peek first (WNOWAIT): the child stays a zombie, so its pid and
		// process group id stay reserved while the group is killed.
		var info unix.Siginfo
		err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			break // ECHILD: no children
		}
		pid := int(*(*int32)(unsafe.Add(unsafe.Pointer(&info), siginfoPIDOffset)))
		if pid <= 0 {
			break // none has exited
		}
		w := r.waiters[pid]
		if w != nil && w.killGroup {
			_ = unix.Kill(-pid, unix.SIGKILL) // ESRCH when the group is empty
		}
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		for errors.Is(err, unix.EINTR) {
			got, err = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		}
		if err != nil || got != pid {
			break // cannot happen for a zombie we just saw; do not spin
		}
		ex := ProcessExit{PID: pid, Status: ws, Time: time.Now()}
		if w != nil {
			delete(r.waiters, pid)
			w.ch <- ex // buffered, never blocks
			continue
		}
		r.orphans.Add(1)
		orphans = append(orphans, ex)
	}
	r.mu.Unlock()
	if r.onOrphan != nil {
		for _, ex := range orphans {
			r.onOrphan(ex)
		}
	}
}
