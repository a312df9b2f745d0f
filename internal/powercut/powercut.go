// Package powercut cuts the power of a VM appliance in the middle of an A/B
// update and checks what comes back. A Rig builds a small appliance whose
// one service keeps a marker file on /perm, boots it with vm.Run, measures
// how long each phase of one push.Update lasts, and then, trial after
// trial, starts another update, SIGKILLs QEMU at a random point of a
// chosen phase (mid-stream, commit → reboot, trial boot), starts the VM
// again on the same disk and reports which slot and build came back and
// whether the marker survived. TestVMUpdatePowerLoss (mgmt/push) and
// bench/powercut share it.
package powercut

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ingotdev/ingot/builder/assemble"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/hypervisor/bootloader"
	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/hypervisor/vm"
	"github.com/ingotdev/ingot/internal/powercut/marker"
	"github.com/ingotdev/ingot/internal/vmtest"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/mgmt/push"
)

// Limits of a rig. They are generous: a TCG boot on a busy host takes
// several times as long as on an idle one.
const (
	// FirstBootLimit bounds the first boot of the image until healthy.
	FirstBootLimit = 3 * time.Minute
	// RecoveryLimit bounds the boot after a cut until healthy: an
	// appliance that is not healthy by then counts as bricked.
	RecoveryLimit = 4 * time.Minute
	// phaseStartLimit bounds the wait for the phase a cut is planned in.
	phaseStartLimit = 5 * time.Minute
	// killLimit bounds the wait for a QEMU process to kill (the VM may be
	// between two boots) and for vm.Run to return after the kill.
	killLimit = time.Minute
	// updateWaitLimit is push's limit for the reboot and the trial.
	updateWaitLimit = 3 * time.Minute
	pollInterval    = 300 * time.Millisecond
	vmMemoryMiB     = 512
)

// The greetings of the two builds a rig alternates between: an update
// always pushes the one that is not running.
const (
	greetingOne = "greeting one"
	greetingTwo = "greeting two"
)

// greeting returns the greeting of build i, 0 or 1.
func greeting(i int) string {
	if i == 0 {
		return greetingOne
	}
	return greetingTwo
}

// writeApp writes the marker appliance (its own module) to dir with the
// given greeting and token and returns its config.
func writeApp(dir, greeting string, token []byte) (*config.Config, error) {
	files := map[string]string{
		"go.mod":             "module marker\n\ngo 1.26\n",
		"cmd/marker/main.go": marker.Source,
		".ingot/token":       string(token),
		config.FileName: fmt.Sprintf(`name: powerloss
targets: [vm-amd64]
services:
  - name: marker
    go: ./cmd/marker
    env:
      GREETING: %s
    restart: always
    needs_perm: true
    health: {http: "http://127.0.0.1:%d/", interval: 1s, timeout: 500ms}
update:
  health_window: 3s
`, greeting, marker.Port),
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return nil, fmt.Errorf("powercut: write app: %w", err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			return nil, fmt.Errorf("powercut: write app: %w", err)
		}
	}
	cfg, err := config.Load(filepath.Join(dir, config.FileName))
	if err != nil {
		return nil, fmt.Errorf("powercut: %w", err)
	}
	return cfg, nil
}

// NewRand returns the generator of a run's kill points: the same seed
// gives the same phases' delays in the test and in bench/powercut.
func NewRand(seed uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
}

// Phase is a stretch of push.Update a cut is planned in or lands in.
type Phase int

// The phases of an update, in order. Stream, Commit and Trial are the ones
// cuts are planned in; a cut planned near the end of the stream may land
// in PushToCommit, after the last byte and before the commit returned.
const (
	BeforePush   Phase = iota // before the root upload began
	Stream                    // mid-stream of the root upload
	PushToCommit              // upload done, commit not yet returned
	Commit                    // after the commit, while the reboot is asked for and the guest goes down
	Trial                     // during the trial boot, until it is confirmed
)

// Planned lists the phases cuts are planned in, in the order a run cycles
// through them.
var Planned = [...]Phase{Stream, Commit, Trial}

func (p Phase) String() string {
	switch p {
	case BeforePush:
		return "before push"
	case Stream:
		return "mid-stream"
	case PushToCommit:
		return "push→commit"
	case Commit:
		return "commit→reboot"
	case Trial:
		return "trial boot"
	}
	return "phase " + strconv.Itoa(int(p))
}

// events turns push's step and progress lines and the VM's boots into
// timestamps of the phase starts. Each event fires once per update.
type events struct {
	logf      func(format string, args ...any)
	mu        sync.Mutex
	pushStart chan struct{}
	pushEnd   chan struct{}
	committed chan struct{}
	trialBoot chan struct{}
	times     map[chan struct{}]time.Time
}

func newEvents(logf func(format string, args ...any)) *events {
	return &events{logf: logf, pushStart: make(chan struct{}), pushEnd: make(chan struct{}),
		committed: make(chan struct{}), trialBoot: make(chan struct{}), times: map[chan struct{}]time.Time{}}
}

// fire closes c once and records when; e.mu is held.
func (e *events) fire(c chan struct{}) {
	if _, done := e.times[c]; !done {
		e.times[c] = time.Now()
		close(c)
	}
}

// Write receives push's log lines: "push: …" progress lines come during
// the upload, the "push" step line ends it, the "commit" line follows the
// commit.
func (e *events) Write(b []byte) (int, error) {
	line := strings.TrimRight(string(b), "\n")
	e.logf("%s", line)
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case strings.HasPrefix(line, "push:"):
		e.fire(e.pushStart)
	case strings.HasPrefix(line, "push "):
		e.fire(e.pushStart)
		e.fire(e.pushEnd)
	case strings.HasPrefix(line, "commit "):
		e.fire(e.committed)
	}
	return len(b), nil
}

func (e *events) onBoot(b *bootloader.Boot) {
	if !b.Trial {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fire(e.trialBoot)
}

// at returns when the event c fired (zero if it did not).
func (e *events) at(c chan struct{}) time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.times[c]
}

// anchor returns the event that starts the planned phase p.
func (e *events) anchor(p Phase) chan struct{} {
	switch p {
	case Commit:
		return e.committed
	case Trial:
		return e.trialBoot
	}
	return e.pushStart
}

// reached names the last phase an update got to.
func (e *events) reached() Phase {
	e.mu.Lock()
	defer e.mu.Unlock()
	fired := func(c chan struct{}) bool { _, ok := e.times[c]; return ok }
	switch {
	case fired(e.trialBoot):
		return Trial
	case fired(e.committed):
		return Commit
	case fired(e.pushEnd):
		return PushToCommit
	case fired(e.pushStart):
		return Stream
	}
	return BeforePush
}

// qemuPIDs returns the qemu-system processes whose command line mentions
// runDir, which is unique to one VM.
func qemuPIDs(runDir string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := bytes.Split(b, []byte{0})
		if bytes.Contains(args[0], []byte("qemu-system")) && bytes.Contains(b, []byte(runDir)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killQEMU waits until this VM's QEMU runs (it may be between two boots)
// and SIGKILLs it, as a power cut would stop the machine.
func killQEMU(ctx context.Context, runDir string, limit time.Duration) (int, error) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		pids := qemuPIDs(runDir)
		for _, pid := range pids {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				return pid, fmt.Errorf("kill %d: %w", pid, err)
			}
		}
		if len(pids) > 0 {
			return pids[0], nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return 0, fmt.Errorf("no qemu-system process with %s in its command line within %s", runDir, limit)
}

// runner runs one image with vm.Run and starts it again after a kill.
type runner struct {
	cfg    vm.Config
	mu     sync.Mutex
	ev     *events
	done   chan error
	cancel context.CancelFunc
}

func (r *runner) setEvents(ev *events) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ev = ev
}

func (r *runner) onBoot(b *bootloader.Boot) {
	r.mu.Lock()
	ev := r.ev
	r.mu.Unlock()
	if ev != nil {
		ev.onBoot(b)
	}
}

func (r *runner) start(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	r.cancel, r.done = cancel, done
	cfg := r.cfg
	cfg.OnBoot = r.onBoot
	go func() { done <- vm.Run(ctx, cfg) }()
}

// wait returns vm.Run's result, or an error when it is still running after
// limit. A run still going then is stopped and waited for (up to limit
// again): left going, it would hold the image and the forwarded port
// against the next start. (A SIGKILL can hit a QEMU that was exiting for
// a guest reboot anyway; vm.Run then boots the next one and goes on.
// TestVMUpdatePowerLoss once failed so: the next start's QEMU could not
// forward the port the orphan still held.)
func (r *runner) wait(limit time.Duration) error {
	select {
	case err := <-r.done:
		r.cancel()
		return err
	case <-time.After(limit):
	}
	r.cancel()
	select {
	case err := <-r.done:
		return fmt.Errorf("vm.Run still running after %s; stopped: %v", limit, err)
	case <-time.After(limit):
		return fmt.Errorf("vm.Run still running after %s, and %s after it was told to stop", limit, limit)
	}
}

// exited returns vm.Run's error once it has returned while it should be
// running, so a VM that failed to start is seen at once.
func (r *runner) exited() error {
	select {
	case err := <-r.done:
		r.cancel()
		r.done = make(chan error, 1)
		r.done <- err
		return fmt.Errorf("vm.Run returned: %v", err)
	default:
		return nil
	}
}

func (r *runner) stop() error {
	r.cancel()
	return r.wait(killLimit)
}

// Config says where and how a rig runs.
type Config struct {
	// Dir is an empty directory the rig owns: app sources, image, caches,
	// VM run directory. The caller removes it.
	Dir string
	// Token is the management bearer token the appliance is built with.
	Token []byte
	// Accel is QEMU's accelerator.
	Accel qemu.Accel
	// Logf receives progress: push's lines, boots, the measured phases.
	Logf func(format string, args ...any)
	// Console, when set, receives the serial console too (the rig keeps
	// its own copy for Console()).
	Console io.Writer
}

// Rig is one marker appliance on one disk, running under vm.Run.
type Rig struct {
	cfg     Config
	appDir  string
	img     string
	url     string
	cache   assemble.Option
	client  *mgmt.Client
	run     *runner
	console *vmtest.Console
	spans   map[Phase]time.Duration
	running int // the build that runs, 0 or 1 (see greeting)
}

// Spans returns how long each planned phase lasted in the measured update.
func (r *Rig) Spans() map[Phase]time.Duration { return r.spans }

// Console returns the serial console of all boots so far.
func (r *Rig) Console() string { return r.console.String() }

// New builds the marker appliance with the first greeting, boots it,
// waits until its service has created the marker on /perm, and measures
// one update to the second greeting without a cut, so that cuts can be
// spread over the whole of each phase. Close stops the VM.
func New(ctx context.Context, cfg Config) (*Rig, error) {
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	r := &Rig{cfg: cfg, appDir: filepath.Join(cfg.Dir, "app"), img: filepath.Join(cfg.Dir, "powercut.img"),
		cache: assemble.WithCacheDir(filepath.Join(cfg.Dir, "cache")), console: &vmtest.Console{}}
	start := time.Now()
	app, err := writeApp(r.appDir, greeting(0), cfg.Token)
	if err != nil {
		return nil, err
	}
	if _, err := assemble.Image(ctx, app, config.TargetVMAmd64, r.img, r.cache); err != nil {
		return nil, fmt.Errorf("powercut: build: %w", err)
	}
	port, err := vmtest.FreeTCPPort()
	if err != nil {
		return nil, fmt.Errorf("powercut: %w", err)
	}
	r.url = fmt.Sprintf("http://127.0.0.1:%d/", port)
	runDir := filepath.Join(cfg.Dir, "run")
	var console io.Writer = r.console
	if cfg.Console != nil {
		console = io.MultiWriter(r.console, cfg.Console)
	}
	r.client, err = mgmt.NewClient(fmt.Sprintf("unix://%s?port=%d", vm.VsockPath(runDir), config.DefaultVsockPort), string(cfg.Token))
	if err != nil {
		return nil, fmt.Errorf("powercut: %w", err)
	}
	r.run = &runner{cfg: vm.Config{
		Image: r.img, RunDir: runDir, Accel: cfg.Accel, MemoryMiB: vmMemoryMiB,
		Forwards: []qemu.Forward{{Proto: "tcp", HostPort: port, GuestPort: marker.Port}},
		Console:  console, Logf: cfg.Logf,
	}}
	r.run.start(ctx)
	ok := false
	defer func() {
		if !ok {
			r.Close()
		}
	}()

	_, body, err := r.healthy(ctx, FirstBootLimit)
	if err != nil {
		return nil, fmt.Errorf("powercut: first boot: %w", err)
	}
	if !strings.Contains(body, "marker created") || !strings.Contains(body, greeting(0)) {
		return nil, fmt.Errorf("powercut: first boot: GET %s = %q, want %q and a created marker", r.url, body, greeting(0))
	}
	cfg.Logf("first boot healthy %s after start", time.Since(start).Round(time.Millisecond))

	ev := newEvents(cfg.Logf)
	r.run.setEvents(ev)
	upStart := time.Now()
	if err := r.update(ctx, ev, 1); err != nil {
		return nil, fmt.Errorf("powercut: measured update: %w", err)
	}
	upEnd := time.Now()
	r.spans = map[Phase]time.Duration{
		Stream: ev.at(ev.pushEnd).Sub(ev.at(ev.pushStart)),
		Commit: ev.at(ev.trialBoot).Sub(ev.at(ev.committed)),
		Trial:  upEnd.Sub(ev.at(ev.trialBoot)),
	}
	cfg.Logf("measured update %s: build until push %s, %s %s, %s %s, %s %s", upEnd.Sub(upStart).Round(time.Millisecond),
		ev.at(ev.pushStart).Sub(upStart).Round(time.Millisecond),
		Stream, r.spans[Stream].Round(time.Millisecond),
		Commit, r.spans[Commit].Round(time.Millisecond),
		Trial, r.spans[Trial].Round(time.Millisecond))
	r.running = 1
	if _, body, err := r.healthy(ctx, time.Minute); err != nil || !strings.Contains(body, greeting(1)) || !strings.Contains(body, "marker ok") {
		return nil, fmt.Errorf("powercut: after the measured update: GET %s = %q, %v; want %q and marker ok", r.url, body, err, greeting(1))
	}
	ok = true
	return r, nil
}

// update runs push.Update to the build with greeting index next, its log
// going to ev.
func (r *Rig) update(ctx context.Context, ev *events, next int) error {
	app, err := writeApp(r.appDir, greeting(next), r.cfg.Token)
	if err != nil {
		return err
	}
	_, err = push.New(r.client, push.WithPollInterval(pollInterval), push.WithWaitTimeout(updateWaitLimit),
		push.WithAssembleOptions(r.cache), push.WithLog(ev)).Update(ctx, app)
	return err
}

// Close stops the VM and closes the management client.
func (r *Rig) Close() error {
	err := r.run.stop()
	if cerr := r.client.Close(); err == nil {
		err = cerr
	}
	return err
}

// Cut is what one power cut did and what came back after it.
type Cut struct {
	Planned Phase         // the phase the cut was planned in
	Delay   time.Duration // how long after that phase began
	Reached Phase         // the phase the update had reached at the kill
	PID     int           // the QEMU process killed
	// RunErr is vm.Run's error after the kill; nil would mean vm.Run took
	// the kill for a clean exit.
	RunErr    error
	UpdateErr error // push.Update's error (the update was cancelled after the kill)
	// Bricked says no slot came up healthy within RecoveryLimit; Err
	// says why.
	Bricked bool
	// PermLost says the marker on /perm was missing or changed; Verdict
	// has the service's words.
	PermLost bool
	Verdict  string
	Err      error
	Slot     string // the slot that came back
	NewBuild bool   // whether the build being pushed came back (else the one that ran before)
	Greeting string // the greeting that answered
	Took     time.Duration
}

// Cut starts an update to the build that does not run, SIGKILLs QEMU at a
// random point (drawn from rng) of phase p, starts the VM again on the
// same disk and waits for it to come back healthy. What came back,
// bricked or not, is in the Cut. An error means the cut could not be
// made: no QEMU to kill, the phase did not begin in time, or the
// appliance refused the update (which after an earlier cut means that cut
// left it healthy but unable to update: a failure of the appliance, not
// of the harness).
func (r *Rig) Cut(ctx context.Context, p Phase, rng *rand.Rand) (Cut, error) {
	start := time.Now()
	c := Cut{Planned: p}
	next := 1 - r.running
	ev := newEvents(r.cfg.Logf)
	r.run.setEvents(ev)
	uctx, cancelUpdate := context.WithCancel(ctx)
	defer cancelUpdate()
	upDone := make(chan error, 1)
	go func() { upDone <- r.update(uctx, ev, next) }()
	c.Delay = time.Duration(rng.Int64N(int64(max(r.spans[p], time.Millisecond))))
	select {
	case <-ev.anchor(p):
	case err := <-upDone:
		// The appliance answered healthy after the cut before but
		// refused this update: the earlier cut left it unable to update.
		return c, fmt.Errorf("the appliance refused the update before the %s phase: %v", p, err)
	case <-time.After(phaseStartLimit):
		return c, fmt.Errorf("the %s phase did not begin within %s", p, phaseStartLimit)
	case <-ctx.Done():
		return c, ctx.Err()
	}
	select {
	case <-time.After(c.Delay):
	case <-ctx.Done():
		return c, ctx.Err()
	}
	pid, err := killQEMU(ctx, r.run.cfg.RunDir, killLimit)
	c.Reached, c.PID = ev.reached(), pid
	if err != nil {
		return c, err
	}
	c.RunErr = r.run.wait(killLimit)
	cancelUpdate()
	c.UpdateErr = <-upDone

	r.run.start(ctx)
	st, body, err := r.healthy(ctx, RecoveryLimit)
	c.Took = time.Since(start)
	if err != nil {
		if ctx.Err() != nil {
			return c, ctx.Err()
		}
		c.Bricked, c.Err = true, err
		return c, nil
	}
	c.Slot = st.Slot
	if _, v, ok := strings.Cut(body, "marker "); ok {
		c.Verdict, _, _ = strings.Cut(v, "\n")
	}
	c.PermLost = c.Verdict != "ok"
	switch {
	case strings.Contains(body, greeting(next)):
		r.running, c.NewBuild, c.Greeting = next, true, greeting(next)
	case strings.Contains(body, greeting(1-next)):
		c.Greeting = greeting(1 - next)
	default:
		return c, fmt.Errorf("GET %s = %q, want one of the two greetings", r.url, body)
	}
	return c, nil
}

// healthy waits until the rig's appliance is healthy (marker.Healthy).
func (r *Rig) healthy(ctx context.Context, limit time.Duration) (mgmt.Status, string, error) {
	return marker.Healthy(ctx, r.run.exited, r.client, r.url, limit)
}

// KeepImage copies the rig's disk image into dir (for a look with
// fsck.fat or mtools after a failed cut) and returns the copy's path.
func (r *Rig) KeepImage(dir string) (string, error) {
	b, err := os.ReadFile(r.img)
	if err != nil {
		return "", fmt.Errorf("powercut: keep image: %w", err)
	}
	dst := filepath.Join(dir, filepath.Base(r.img))
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		return "", fmt.Errorf("powercut: keep image: %w", err)
	}
	return dst, nil
}
