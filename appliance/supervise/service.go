package supervise

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ingotdev/ingot/appliance/cgroup"
	"github.com/ingotdev/ingot/appliance/container"
	"github.com/ingotdev/ingot/appliance/health"
	"github.com/ingotdev/ingot/appliance/logs"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/spec"
)

type opKind int

const (
	opStart opKind = iota
	opStop
	opRestart
)

type command struct {
	op   opKind
	done chan error
}

// service is one supervised program. Its loop goroutine alone changes the
// fields below st; st and everStarted are guarded by env.mu so snapshots
// can be taken at any time, and change only through set.
type service struct {
	env   *env
	spec  spec.Service
	cred  spec.Credential
	sink  *logs.Sink
	after []*service // the services it is ordered after
	cmds  chan command
	done  chan struct{} // closed when the loop returns

	st          mgmt.ServiceStatus
	everStarted bool

	// Loop-only state.
	inst     *instance
	timer    *time.Timer
	failures int
	group    *cgroup.Group // nil until made, or without cgroups
	noGroup  bool          // the missing group was logged
	// check is the running instance's health check; nil without one.
	check *healthCheck
	// clockWhy is the reason of the wait for the clock last logged;
	// clockHeld is set while the service is held for the clock.
	clockWhy  string
	clockHeld bool
}

// healthCheck is the health check of one run.
type healthCheck struct {
	cancel  context.CancelFunc
	results chan error
	status  health.Status
	// killAt fires the SIGKILL of a run being ended as unhealthy, after
	// its grace period; nil otherwise.
	killAt *time.Timer
	// ending is set once the run is being ended as unhealthy.
	ending bool
}

// instance is one run of the program.
type instance struct {
	pid     int
	started time.Time
	exited  <-chan ProcessExit
	// oomBefore is the group's OOM kill count when the run started.
	oomBefore uint64
	// drained gets a value from each of the two output readers when it
	// has read its pipe to the end.
	drained chan struct{}
}

// outputWait bounds how long the end of a run waits for its output to be
// read to the end: a process outside the run's group may hold a pipe.
const outputWait = time.Second

// waitOutput waits until both output pipes of the run have been read to
// their end, or outputWait has passed.
func (inst *instance) waitOutput() {
	timeout := time.NewTimer(outputWait)
	defer timeout.Stop()
	for range 2 {
		select {
		case <-inst.drained:
		case <-timeout.C:
			return
		}
	}
}

func (sv *service) snapshotLocked() mgmt.ServiceStatus {
	st := sv.st
	if st.LastExit != nil {
		e := *st.LastExit
		st.LastExit = &e
	}
	if st.Health != nil {
		h := *st.Health
		st.Health = &h
	}
	return st
}

// set is the one way a service's status changes: f runs under the lock.
// Services waiting for this one look again when it first runs or is held.
func (sv *service) set(f func(st *mgmt.ServiceStatus)) {
	sv.env.mu.Lock()
	defer sv.env.mu.Unlock()
	before := sv.st.State
	f(&sv.st)
	first := sv.st.State == mgmt.StateRunning && !sv.everStarted
	if first {
		sv.everStarted = true
	}
	if first || (sv.st.State == mgmt.StateHeld && before != mgmt.StateHeld) {
		close(sv.env.changed)
		sv.env.changed = make(chan struct{})
	}
}

func (sv *service) reason() string {
	sv.env.mu.Lock()
	defer sv.env.mu.Unlock()
	return sv.st.Reason
}

func (sv *service) state() mgmt.ServiceState {
	sv.env.mu.Lock()
	defer sv.env.mu.Unlock()
	return sv.st.State
}

// depsReady reports whether every service sv is ordered after has started
// at least once; if not, it says which one is missing and returns a channel
// closed when that may have changed.
func (sv *service) depsReady() (bool, string, <-chan struct{}) {
	sv.env.mu.Lock()
	defer sv.env.mu.Unlock()
	for _, d := range sv.after {
		if !d.everStarted {
			reason := fmt.Sprintf("waiting for %s (%s)", d.spec.Name, d.st.State)
			if d.st.Reason != "" {
				reason = fmt.Sprintf("waiting for %s (%s: %s)", d.spec.Name, d.st.State, d.st.Reason)
			}
			return false, reason, sv.env.changed
		}
	}
	return true, "", nil
}

// clockReady reports whether a service with WaitForClock may start: the
// clock is synced, or no Clock was given. If not, it says why and returns
// a channel closed when that may have changed.
func (sv *service) clockReady() (bool, string, <-chan struct{}) {
	if !sv.spec.WaitForClock || sv.env.clock == nil {
		return true, "", nil
	}
	synced, why, changed := sv.env.clock.Synced()
	if synced {
		if sv.clockWhy != "" {
			sv.sink.Printf("the clock is synced; starting")
		}
		return true, "", nil
	}
	reason := "waiting for the clock (wait_for_clock): " + why
	if reason != sv.clockWhy {
		// Logged when it changes: the clock retries every few seconds.
		sv.clockWhy = reason
		sv.sink.Printf("%s", reason)
	}
	return false, reason, changed
}

func (sv *service) heldReason() string {
	// A container's volumes live on /perm; its launcher would only fail.
	needsPerm := sv.spec.NeedsPerm || (sv.spec.Container != nil && len(sv.spec.Container.Volumes) > 0)
	if needsPerm && sv.env.permDir == "" {
		if r := sv.env.permMissing; r != "" {
			return "needs /perm, which is not mounted: " + r
		}
		return "needs /perm, which is not mounted"
	}
	return ""
}

func (sv *service) run(ctx context.Context) {
	if reason := sv.heldReason(); reason != "" {
		sv.set(func(st *mgmt.ServiceStatus) { st.State, st.Reason = mgmt.StateHeld, reason })
		sv.sink.Printf("held: %s", reason)
	}
	defer sv.stopTimer()
	for {
		var (
			exitC    <-chan ProcessExit
			timerC   <-chan time.Time
			changedC <-chan struct{}
			healthC  <-chan error
			killC    <-chan time.Time
		)
		switch sv.state() {
		case mgmt.StateWaiting:
			ready, reason, ch := sv.depsReady()
			if !ready {
				sv.set(func(st *mgmt.ServiceStatus) { st.Reason = reason })
				changedC = ch
				break
			}
			// Held, not waiting: like a service without its /perm, it
			// could not run on any slot now, so a trial does not count it.
			if ok, why, clockC := sv.clockReady(); !ok {
				sv.clockHeld = true
				sv.set(func(st *mgmt.ServiceStatus) { st.State, st.Reason = mgmt.StateHeld, why })
				changedC = clockC
				break
			}
			sv.launch()
			continue
		case mgmt.StateHeld:
			if !sv.clockHeld {
				break // held for good (perm): only a command or the end
			}
			ok, why, clockC := sv.clockReady()
			if ok {
				sv.clockHeld = false
				sv.set(func(st *mgmt.ServiceStatus) { st.State, st.Reason = mgmt.StateWaiting, "" })
				continue
			}
			sv.set(func(st *mgmt.ServiceStatus) { st.Reason = why })
			changedC = clockC
		case mgmt.StateRunning:
			if sv.inst == nil { // cannot happen; never dereference nil in PID 1
				sv.set(func(st *mgmt.ServiceStatus) { st.State, st.Reason = mgmt.StateStopped, "lost track of its process" })
				continue
			}
			exitC = sv.inst.exited
			if sv.check != nil {
				healthC = sv.check.results
				if sv.check.killAt != nil {
					killC = sv.check.killAt.C
				}
			}
		case mgmt.StateBackoff:
			timerC = sv.timer.C
		}
		select {
		case <-ctx.Done():
			if sv.inst != nil {
				sv.sink.Printf("stopping for shutdown")
				sv.terminate()
			}
			switch sv.state() {
			case mgmt.StateRunning, mgmt.StateBackoff, mgmt.StateWaiting:
				sv.set(func(st *mgmt.ServiceStatus) {
					st.State, st.Reason, st.NextStart = mgmt.StateStopped, "shutdown", time.Time{}
				})
			}
			return
		case <-changedC:
		case ex := <-exitC:
			sv.exited(ex, false)
		case err := <-healthC:
			sv.observeHealth(err)
		case <-killC:
			sv.check.killAt = nil
			sv.sink.Printf("health: still running %s after SIGTERM: sending SIGKILL", sv.spec.Grace())
			_ = sv.env.reaper.Signal(sv.inst.pid, unix.SIGKILL)
		case <-timerC:
			sv.timer = nil
			sv.launch()
		case c := <-sv.cmds:
			c.done <- sv.handle(c.op)
		}
	}
}

func (sv *service) handle(op opKind) error {
	if sv.state() == mgmt.StateHeld {
		if op == opStop {
			return nil
		}
		return fmt.Errorf("%w: %s: %s", ErrHeld, sv.spec.Name, sv.reason())
	}
	switch op {
	case opStop:
		sv.stopTimer()
		if sv.inst != nil {
			sv.sink.Printf("stopping on request")
			sv.terminate()
		}
		sv.set(func(st *mgmt.ServiceStatus) {
			st.State, st.Reason, st.NextStart = mgmt.StateStopped, "stopped on request", time.Time{}
		})
		return nil
	case opRestart:
		if sv.inst != nil {
			sv.sink.Printf("restarting on request")
			sv.terminate()
		}
	case opStart:
		if sv.inst != nil {
			return nil
		}
	}
	sv.stopTimer()
	sv.failures = 0
	return sv.launch()
}

func (sv *service) stopTimer() {
	if sv.timer != nil {
		sv.timer.Stop()
		sv.timer = nil
	}
}

// launch starts the program; a failure to start counts as a failed run.
func (sv *service) launch() error {
	now := time.Now()
	inst, err := sv.spawn()
	if err != nil {
		sv.sink.Printf("start failed: %v", err)
		ex := mgmt.Exit{Time: now, Code: -1, Error: err.Error()}
		sv.set(func(st *mgmt.ServiceStatus) {
			st.StartedAt = now
			if sv.everStarted || st.LastExit != nil {
				st.Restarts++
			}
			st.LastExit = &ex
		})
		sv.afterRun(ex)
		return err
	}
	sv.inst = inst
	sv.sink.Printf("started pid %d", inst.pid)
	sv.startHealth()
	sv.set(func(st *mgmt.ServiceStatus) {
		if sv.everStarted || st.LastExit != nil {
			st.Restarts++
		}
		st.State, st.Reason, st.PID = mgmt.StateRunning, "", inst.pid
		st.StartedAt, st.NextStart = inst.started, time.Time{}
	})
	return nil
}

// exited records the end of the current run and schedules what follows.
func (sv *service) exited(pe ProcessExit, requested bool) {
	inst := sv.inst
	sv.inst = nil
	ex := exitFromStatus(pe.Status, pe.Time, pe.Time.Sub(inst.started))
	ex.Requested = requested
	if sv.check != nil {
		ex.Unhealthy = sv.check.ending && !requested
		sv.stopHealth()
	}
	var ooms uint64
	if g := sv.group; g != nil {
		var err error
		if ooms, err = g.OOMKills(); err != nil {
			sv.sink.Printf("%v", err)
		}
		ex.OOMKilled = ooms > inst.oomBefore
		// What the run left behind, even in another session, ends with it.
		if err := g.Kill(); err != nil {
			sv.sink.Printf("killing what is left in %s: %v", g.Dir(), err)
		}
	}
	// The run's last output comes before the lines about its end, and
	// reaches the log file before a shutdown closes it.
	inst.waitOutput()
	sv.set(func(st *mgmt.ServiceStatus) {
		st.PID, st.Health, st.LastExit = 0, nil, &ex
		st.OOMKills = max(st.OOMKills, ooms)
	})
	if requested {
		sv.sink.Printf("stopped: %s after %s", ex, ex.Ran().Round(time.Millisecond))
		return
	}
	sv.afterRun(ex)
}

// afterRun applies the restart policy to a run that ended by itself.
// A non-zero exit, a signal or no start at all (Code -1) counts as a
// failure for the on-failure policy.
func (sv *service) afterRun(ex mgmt.Exit) {
	policy := sv.spec.RestartPolicy()
	ran := ex.Ran().Round(time.Millisecond)
	if policy == spec.RestartNever || (policy == spec.RestartOnFailure && ex.Code == 0) {
		sv.sink.Printf("exited: %s after %s; restart policy %s: not restarting", ex, ran, policy)
		sv.set(func(st *mgmt.ServiceStatus) { st.State, st.Reason = mgmt.StateExited, "" })
		return
	}
	if ex.Ran() >= sv.env.backoffReset {
		sv.failures = 0
	}
	delay := sv.env.backoff(sv.failures)
	sv.failures++
	sv.timer = time.NewTimer(delay)
	next := time.Now().Add(delay)
	sv.sink.Printf("exited: %s after %s; restarting in %s", ex, ran, delay.Round(time.Millisecond))
	sv.set(func(st *mgmt.ServiceStatus) { st.State, st.Reason, st.NextStart = mgmt.StateBackoff, "", next })
}

// healthFirstProbe is how long after a start the first probe comes.
const healthFirstProbe = time.Second

// startHealth starts the health check of the run that just started.
func (sv *service) startHealth() {
	h := sv.spec.Health
	if h == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &healthCheck{cancel: cancel, results: make(chan error), status: health.Status{State: health.Starting}}
	sv.check = c
	go health.Run(ctx, *h, min(healthFirstProbe, h.Interval()), c.results)
	sv.set(func(st *mgmt.ServiceStatus) { st.Health = healthStatus(c.status) })
}

// stopHealth ends the current run's health check.
func (sv *service) stopHealth() {
	if c := sv.check; c != nil {
		c.cancel()
		if c.killAt != nil {
			c.killAt.Stop()
		}
		sv.check = nil
	}
}

// observeHealth records a probe's result; a check that turns unhealthy
// with Restart set ends the run as a failure (SIGTERM now, SIGKILL after
// the grace period), so the restart policy and the trial see it.
func (sv *service) observeHealth(err error) {
	h, c := sv.spec.Health, sv.check
	var changed bool
	c.status, changed = c.status.Observe(err, time.Now(), h.RetryCount())
	now := c.status
	sv.set(func(st *mgmt.ServiceStatus) { st.Health = healthStatus(now) })
	if !changed {
		return
	}
	switch now.State {
	case health.Healthy:
		sv.sink.Printf("health: healthy (%s)", h.Target())
	case health.Unhealthy:
		sv.sink.Printf("health: unhealthy after %d failed probes: %s", now.Failures, now.LastError)
		if h.Restart && sv.inst != nil && !c.ending {
			sv.sink.Printf("health: ending pid %d to restart it", sv.inst.pid)
			c.ending = true
			_ = sv.env.reaper.Signal(sv.inst.pid, unix.SIGTERM)
			c.killAt = time.NewTimer(sv.spec.Grace())
		}
	}
}

// terminate stops the running instance: SIGTERM to its process group, the
// grace period, SIGKILL, and a bounded wait for the exit.
func (sv *service) terminate() {
	inst := sv.inst
	_ = sv.env.reaper.Signal(inst.pid, unix.SIGTERM)
	grace := time.NewTimer(sv.spec.Grace())
	defer grace.Stop()
	select {
	case pe := <-inst.exited:
		sv.exited(pe, true)
		return
	case <-grace.C:
	}
	sv.sink.Printf("still running %s after SIGTERM: sending SIGKILL", sv.spec.Grace())
	_ = sv.env.reaper.Signal(inst.pid, unix.SIGKILL)
	wait := time.NewTimer(sv.env.killWait)
	defer wait.Stop()
	select {
	case pe := <-inst.exited:
		sv.exited(pe, true)
	case <-wait.C:
		// Stuck in the kernel (D state). Nothing more can be done; the
		// exit, if it ever comes, goes to a channel nobody reads.
		sv.sink.Printf("pid %d did not exit %s after SIGKILL; giving up on it", inst.pid, sv.env.killWait)
		sv.inst = nil
		sv.stopHealth()
		sv.set(func(st *mgmt.ServiceStatus) { st.PID, st.Health = 0, nil })
	}
}

// spawn starts one run of the program.
func (sv *service) spawn() (*instance, error) {
	c := sv.spec.Container
	dir := "/" // the launcher's own directory does not matter
	if c == nil {
		dir = sv.workDir()
	}
	env := sv.environ(dir)
	cg, err := sv.cgroupDir()
	if err != nil {
		return nil, err
	}
	var oomBefore uint64
	if cg != nil {
		defer cg.Close()
		oomBefore, _ = sv.group.OOMKills() // an error shows at exit
	}
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer devNull.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, err
	}
	attr := &os.ProcAttr{
		Dir:   dir,
		Env:   env,
		Files: []*os.File{devNull, outW, errW},
		Sys: &syscall.SysProcAttr{
			// A session of its own makes the process a group leader (so a
			// stop reaches everything it forked) with no controlling tty.
			Setsid: true,
		},
	}
	switch {
	case c != nil:
		// The launcher needs root for its mounts and drops to the
		// image's user itself.
		attr.Sys.Cloneflags = container.CloneFlags(c)
	case !sv.cred.IsRoot():
		attr.Sys.Credential = &syscall.Credential{Uid: sv.cred.UID, Gid: sv.cred.GID, Groups: []uint32{}}
	}
	if cg != nil {
		// clone3(CLONE_INTO_CGROUP): the process is in its group from its
		// first instruction, with no window to fork around a limit.
		attr.Sys.UseCgroupFD = true
		attr.Sys.CgroupFD = int(cg.Fd())
	}
	argv := append([]string{sv.spec.Path}, sv.spec.Args...)
	var started time.Time
	pid, exited, err := sv.env.reaper.Spawn(func() (int, error) {
		p, err := os.StartProcess(sv.spec.Path, argv, attr)
		if err != nil {
			return 0, err
		}
		started = time.Now()
		pid := p.Pid
		// The Reaper waits; the handle (a pidfd) is not needed.
		_ = p.Release()
		return pid, nil
	}, KillGroupOnExit()) // what a run leaves in its group dies with it
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, err
	}
	// The readers end when every holder of the write ends (the program and
	// anything it forked) has exited or closed them.
	drained := make(chan struct{}, 2)
	go sv.drain(logs.Stdout, outR, drained)
	go sv.drain(logs.Stderr, errR, drained)
	return &instance{pid: pid, started: started, exited: exited, oomBefore: oomBefore, drained: drained}, nil
}

// cgroupDir returns an open handle of the service's cgroup, creating the
// group and writing its limits on first use; nil (and no error) when the
// service runs without one. See WithCgroups for when that is allowed.
func (sv *service) cgroupDir() (*os.File, error) {
	h := sv.env.cgroups
	res := sv.spec.Resources
	if h == nil {
		if !res.IsZero() {
			return nil, fmt.Errorf("resources %+v: cgroups are not available, so the limits cannot be enforced", res)
		}
		return nil, nil
	}
	var err error
	if sv.group == nil {
		sv.group, err = h.Service(sv.spec.Name, res)
	}
	var f *os.File
	if err == nil {
		if f, err = sv.group.Open(); err == nil {
			return f, nil
		}
	}
	if !res.IsZero() {
		return nil, err
	}
	if !sv.noGroup {
		sv.noGroup = true
		sv.sink.Printf("running without a cgroup: %v", err)
	}
	return nil, nil
}

func (sv *service) drain(stream logs.Stream, r *os.File, done chan<- struct{}) {
	defer func() { done <- struct{}{} }()
	defer r.Close()
	if err := sv.sink.ReadFrom(stream, r); err != nil && !errors.Is(err, os.ErrClosed) {
		sv.sink.Printf("reading %s: %v", stream, err)
	}
}

// workDir returns /perm/<name>, created and owned by the service's user,
// or "/" without perm or when it cannot be made.
func (sv *service) workDir() string {
	if sv.env.permDir == "" {
		return "/"
	}
	dir := filepath.Join(sv.env.permDir, sv.spec.Name)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		sv.sink.Printf("working directory %s: %v; using /", dir, err)
		return "/"
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		sv.sink.Printf("working directory %s: not a directory (%v); using /", dir, err)
		return "/"
	}
	if st.Uid != sv.cred.UID || st.Gid != sv.cred.GID {
		// The user may have changed since the last image; follow it so the
		// service can still use its own data.
		if err := os.Lchown(dir, int(sv.cred.UID), int(sv.cred.GID)); err != nil {
			sv.sink.Printf("working directory %s: %v", dir, err)
		}
	}
	return dir
}

// environ returns the program's environment, sorted: PATH and HOME
// defaults, the spec's env, then INGOT_BUILD_ID and INGOT_SERVICE.
func (sv *service) environ(home string) []string {
	m := map[string]string{"PATH": sv.env.path, "HOME": home}
	for k, v := range sv.spec.Env {
		m[k] = v
	}
	m[spec.EnvBuildID] = sv.env.buildID
	m[spec.EnvService] = sv.spec.Name
	env := make([]string, 0, len(m))
	for k, v := range m {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return env
}
