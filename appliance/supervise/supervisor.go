// Package supervise runs an appliance's services: it starts them in their
// After order, each in its own session and process group, with the user,
// environment and working directory the spec asks for; captures their
// output into logs; restarts them by policy with exponential backoff and
// jitter; and stops them with SIGTERM, a grace period and SIGKILL.
//
// With WithCgroups every service runs in a cgroup v2 group of its own
// (package cgroup), entered at clone time, with the limits of its
// Resources; leftovers of a run are killed with the group, and OOM kills
// are counted. Image services (Container set) are started as their
// launcher, /init container <name>, in the new namespaces the launcher
// expects (package container), always as root: the launcher drops to the
// image's user itself.
//
// It is a library so that it can be tested on any Linux host without root;
// ingot-init's stage1 drives it as PID 1. Children are waited for only by a
// Reaper (see there), so orphans that PID 1 inherits cannot steal a
// service's exit status.
//
// A service's status is kept in the management protocol's form,
// mgmt.ServiceStatus, which the agent serves as it is: the supervisor's
// snapshot is exactly what the protocol reports, so there is one model
// and no conversion to drift.
package supervise

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ingotdev/ingot/appliance/cgroup"
	"github.com/ingotdev/ingot/appliance/logs"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// Defaults of the options.
const (
	DefaultBackoffInitial = 100 * time.Millisecond
	DefaultBackoffMax     = 30 * time.Second
	// DefaultBackoffReset: a run this long forgets earlier failures.
	DefaultBackoffReset = 60 * time.Second
	// DefaultJitter takes up to 20% off each backoff delay, so services
	// that failed together do not restart in lockstep.
	DefaultJitter = 0.2
	// DefaultKillWait is how long a stop waits after SIGKILL before it
	// gives up on a process stuck in the kernel.
	DefaultKillWait = 5 * time.Second
)

// Errors returned by Start, Stop and Restart.
var (
	ErrUnknownService = errors.New("supervise: unknown service")
	ErrNotRunning     = errors.New("supervise: supervisor is not running")
	ErrHeld           = errors.New("supervise: service is held")
)

// Option configures a Supervisor.
type Option func(*options)

type options struct {
	buildID                  string
	permDir                  string
	permMissing              string
	console                  *logs.Console
	forwarder                logs.Forwarder
	backoffInitial           time.Duration
	backoffMax, backoffReset time.Duration
	jitter                   float64
	killWait                 time.Duration
	logFileBytes             int64
	path                     string
	cgroups                  *cgroup.Hierarchy
	clock                    Clock
}

// Clock says whether the system clock has been set (by NTP), for
// services with WaitForClock.
type Clock interface {
	// Synced reports whether the clock is set; if not, why says why not
	// and changed is closed when that may have changed.
	Synced() (synced bool, why string, changed <-chan struct{})
}

// WithClock holds the first start of each service with WaitForClock until
// c is synced: once the services it is ordered after have started, it is
// in StateHeld with the clock's reason (a start on request is refused with
// ErrHeld), and goes on to start at the sync. Without WithClock,
// WaitForClock holds nothing.
func WithClock(c Clock) Option { return func(o *options) { o.clock = c } }

// WithBuildID sets INGOT_BUILD_ID for the services.
func WithBuildID(id string) Option { return func(o *options) { o.buildID = id } }

// WithPerm says the persistent partition is mounted at dir: services work
// in dir/<name> (created, owned by the service's user, mode 0700), logs are
// appended to dir/log/<name>.log, and services with NeedsPerm may run.
func WithPerm(dir string) Option { return func(o *options) { o.permDir = dir } }

// WithPermMissing records why there is no persistent partition; services
// with NeedsPerm are held with this reason.
func WithPermMissing(reason string) Option { return func(o *options) { o.permMissing = reason } }

// WithConsole sends every service's output to c, prefixed "name: ".
func WithConsole(c *logs.Console) Option { return func(o *options) { o.console = c } }

// WithForwarder sends every service's lines to f as well (a remote
// syslog); f must not block.
func WithForwarder(f logs.Forwarder) Option { return func(o *options) { o.forwarder = f } }

// WithBackoff sets the restart delay: initial after the first failure,
// doubling up to max, and forgotten after a run of at least reset.
func WithBackoff(initial, max, reset time.Duration) Option {
	return func(o *options) { o.backoffInitial, o.backoffMax, o.backoffReset = initial, max, reset }
}

// WithJitter sets the fraction (0..1) by which each delay is randomly
// shortened; 0 makes delays exact.
func WithJitter(fraction float64) Option {
	return func(o *options) { o.jitter = min(max(fraction, 0), 1) }
}

// WithKillWait sets how long a stop waits for a process after SIGKILL.
func WithKillWait(d time.Duration) Option { return func(o *options) { o.killWait = d } }

// WithLogFileBytes sets the size at which a service's log file rotates.
func WithLogFileBytes(n int64) Option { return func(o *options) { o.logFileBytes = n } }

// WithCgroups runs every service in its own group of h (see
// cgroup.Hierarchy.Service), created at its first start. A service whose
// group cannot be made runs without one (and says so in its log) unless
// it sets Resources: a limit that cannot be enforced makes the start fail
// instead, so it never runs unlimited by accident. Without WithCgroups,
// services with Resources fail to start for the same reason.
func WithCgroups(h *cgroup.Hierarchy) Option { return func(o *options) { o.cgroups = h } }

// WithPath sets the services' default PATH.
func WithPath(p string) Option { return func(o *options) { o.path = p } }

// env is what a service needs from its supervisor: the options, the
// Reaper that starts and waits for its processes, and the lock that
// guards every service's status. The services of a Supervisor share one.
type env struct {
	options
	reaper *Reaper

	mu sync.Mutex
	// changed is closed and replaced when a service first runs or is
	// held, so services waiting for it look again.
	changed chan struct{}
}

// Supervisor runs a fixed set of services. Create it with New, run it with
// Run while a Reaper runs, and control it with Start, Stop and Restart.
type Supervisor struct {
	env      *env
	services []*service
	byName   map[string]*service
	// started and running are guarded by env.mu.
	started, running bool
}

// New checks the services (as spec.Appliance.Validate does) and prepares
// their logs; nothing starts before Run. Exits are learned from r, which
// must be running while the supervisor is.
func New(services []spec.Service, r *Reaper, opts ...Option) (*Supervisor, error) {
	e := &env{
		options: options{
			backoffInitial: DefaultBackoffInitial, backoffMax: DefaultBackoffMax, backoffReset: DefaultBackoffReset,
			jitter: DefaultJitter, killWait: DefaultKillWait, logFileBytes: logs.DefaultFileBytes,
			path: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		},
		reaper:  r,
		changed: make(chan struct{}),
	}
	for _, opt := range opts {
		opt(&e.options)
	}
	if e.backoffInitial <= 0 || e.backoffMax < e.backoffInitial {
		return nil, fmt.Errorf("supervise: backoff %v..%v: want 0 < initial <= max", e.backoffInitial, e.backoffMax)
	}
	s := &Supervisor{env: e, byName: make(map[string]*service, len(services))}
	for i, sp := range services {
		if err := sp.Validate(); err != nil {
			return nil, fmt.Errorf("supervise: services[%d] %q: %w", i, sp.Name, err)
		}
		if _, dup := s.byName[sp.Name]; dup {
			return nil, fmt.Errorf("supervise: services[%d] %q: duplicate name", i, sp.Name)
		}
		cred, _ := sp.Credential() // checked by Validate
		sv := &service{
			env:  e,
			spec: sp,
			cred: cred,
			sink: logs.NewSink(sp.Name, logs.NewRing(sp.LogBuffer()), e.console),
			cmds: make(chan command),
			done: make(chan struct{}),
			st:   mgmt.ServiceStatus{Name: sp.Name, State: mgmt.StateWaiting},
		}
		if e.forwarder != nil {
			sv.sink.SetForwarder(e.forwarder)
		}
		s.services = append(s.services, sv)
		s.byName[sp.Name] = sv
	}
	for _, sv := range s.services {
		for _, dep := range sv.spec.After {
			d, ok := s.byName[dep]
			if !ok {
				return nil, fmt.Errorf("supervise: service %q: after: unknown service %q", sv.spec.Name, dep)
			}
			sv.after = append(sv.after, d)
		}
	}
	if e.permDir != "" {
		s.openLogFiles()
	}
	return s, nil
}

// openLogFiles attaches dir/log/<name>.log to each service. A failure is
// written to the service's log and the service runs without a file.
func (s *Supervisor) openLogFiles() {
	dir := filepath.Join(s.env.permDir, "log")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		for _, sv := range s.services {
			sv.sink.Printf("no log file: %v", err)
		}
		return
	}
	for _, sv := range s.services {
		f, err := logs.OpenFile(filepath.Join(dir, sv.spec.Name+".log"), s.env.logFileBytes)
		if err != nil {
			sv.sink.Printf("no log file: %v", err)
			continue
		}
		sv.sink.SetFile(f)
	}
}

// Run starts the services and supervises them until ctx ends; then it stops
// every running service (SIGTERM, its grace period, SIGKILL) in parallel,
// closes the log files and returns. Run may be called once.
func (s *Supervisor) Run(ctx context.Context) error {
	s.env.mu.Lock()
	if s.started {
		s.env.mu.Unlock()
		return errors.New("supervise: Run called twice")
	}
	s.started, s.running = true, true
	s.env.mu.Unlock()
	var wg sync.WaitGroup
	for _, sv := range s.services {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(sv.done)
			sv.run(ctx)
		}()
	}
	wg.Wait()
	s.env.mu.Lock()
	s.running = false
	s.env.mu.Unlock()
	var errs []error
	for _, sv := range s.services {
		if err := sv.sink.Close(); err != nil {
			errs = append(errs, fmt.Errorf("supervise: %s: closing log file: %w", sv.spec.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Status returns a snapshot of every service, in spec order.
func (s *Supervisor) Status() []mgmt.ServiceStatus {
	s.env.mu.Lock()
	defer s.env.mu.Unlock()
	out := make([]mgmt.ServiceStatus, len(s.services))
	for i, sv := range s.services {
		out[i] = sv.snapshotLocked()
	}
	return out
}

// Service returns a snapshot of one service.
func (s *Supervisor) Service(name string) (mgmt.ServiceStatus, bool) {
	sv, ok := s.byName[name]
	if !ok {
		return mgmt.ServiceStatus{}, false
	}
	s.env.mu.Lock()
	defer s.env.mu.Unlock()
	return sv.snapshotLocked(), true
}

// Logs returns a service's log.
func (s *Supervisor) Logs(name string) (*logs.Sink, bool) {
	sv, ok := s.byName[name]
	if !ok {
		return nil, false
	}
	return sv.sink, true
}

// Names returns the service names in spec order.
func (s *Supervisor) Names() []string {
	out := make([]string, len(s.services))
	for i, sv := range s.services {
		out[i] = sv.spec.Name
	}
	return out
}

// Start starts a service that is not running, now, without waiting for
// its After services or its backoff. It returns the start error, if any.
func (s *Supervisor) Start(ctx context.Context, name string) error {
	return s.send(ctx, name, opStart)
}

// Stop stops a service (SIGTERM, grace period, SIGKILL) and keeps it
// stopped until Start or Restart. It returns when the process has exited
// or ctx ends (the stop goes on regardless).
func (s *Supervisor) Stop(ctx context.Context, name string) error {
	return s.send(ctx, name, opStop)
}

// Restart stops the service if it runs and starts it again, resetting its
// backoff.
func (s *Supervisor) Restart(ctx context.Context, name string) error {
	return s.send(ctx, name, opRestart)
}

func (s *Supervisor) send(ctx context.Context, name string, op opKind) error {
	sv, ok := s.byName[name]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownService, name)
	}
	s.env.mu.Lock()
	running := s.running
	s.env.mu.Unlock()
	if !running {
		return ErrNotRunning
	}
	c := command{op: op, done: make(chan error, 1)}
	select {
	case sv.cmds <- c:
	case <-sv.done:
		return ErrNotRunning
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-c.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// backoff returns the delay before the next start after failures
// consecutive quick exits.
func (o *options) backoff(failures int) time.Duration {
	d := o.backoffInitial
	for i := 0; i < failures && d < o.backoffMax; i++ {
		d *= 2
	}
	d = min(d, o.backoffMax)
	if o.jitter > 0 {
		d -= time.Duration(float64(d) * o.jitter * rand.Float64())
	}
	return d
}

// Usage returns the CPU time and memory of the named service's cgroup;
// an error without cgroups, for an unknown service, or before its group
// was made.
func (s *Supervisor) Usage(name string) (cgroup.Usage, error) {
	if _, ok := s.byName[name]; !ok {
		return cgroup.Usage{}, fmt.Errorf("%w: %q", ErrUnknownService, name)
	}
	if s.env.cgroups == nil {
		return cgroup.Usage{}, errors.New("supervise: no cgroups")
	}
	return s.env.cgroups.Usage(name)
}
