package push

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ingotdev/ingot/internal/vmtest"

	"github.com/ingotdev/ingot/builder/assemble"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/hypervisor/bootloader"
	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/hypervisor/vm"
	"github.com/ingotdev/ingot/mgmt"
)

// defaultPowerLossKills is how many times TestVMUpdatePowerLoss kills QEMU
// unless INGOT_POWERLOSS_N says otherwise.
const defaultPowerLossKills = 20

// markerSource is the service of the power-loss appliance: at its first
// start it writes a marker file of fixed content to its /perm directory
// (synced, renamed into place, directory synced) and at every later start
// compares the file with that content. It prints the verdict to the
// console and serves it over HTTP with the greeting, so the test sees at
// once whether /perm survived.
const markerSource = `package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"net/http"
	"os"
)

func content() []byte {
	var b bytes.Buffer
	for i := 0; i < 1024; i++ {
		fmt.Fprintf(&b, "ingot power-loss marker line %04d\n", i)
	}
	return b.Bytes()
}

func write(want []byte) error {
	f, err := os.OpenFile("marker.tmp", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(want); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename("marker.tmp", "marker"); err != nil {
		return err
	}
	d, err := os.Open(".")
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func check() string {
	want := content()
	got, err := os.ReadFile("marker")
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := write(want); err != nil {
			return "BAD: write: " + err.Error()
		}
		return "created"
	case err != nil:
		return "BAD: " + err.Error()
	case !bytes.Equal(got, want):
		return fmt.Sprintf("BAD: %d bytes differ from the %d written", len(got), len(want))
	}
	return "ok"
}

func main() {
	verdict := check()
	fmt.Printf("marker %s\n", verdict)
	greeting, build := os.Getenv("GREETING"), os.Getenv("INGOT_BUILD_ID")
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s\nbuild %s\nmarker %s\n", greeting, build, verdict)
	})
	log.Fatal(http.ListenAndServe(":8080", nil))
}
`

// writeMarkerApp writes the power-loss appliance (its own module) to dir
// with the given greeting and returns its config.
func writeMarkerApp(t *testing.T, dir, greeting string) *config.Config {
	t.Helper()
	files := map[string]string{
		"go.mod":             "module marker\n\ngo 1.26\n",
		"cmd/marker/main.go": markerSource,
		config.FileName: fmt.Sprintf(`name: powerloss
targets: [vm-amd64]
services:
  - name: marker
    go: ./cmd/marker
    env:
      GREETING: %s
    restart: always
    needs_perm: true
    health: {http: "http://127.0.0.1:8080/", interval: 1s, timeout: 500ms}
update:
  health_window: 3s
`, greeting),
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile(filepath.Join(repo, "examples/hello/.ingot/token"))
	if err != nil {
		t.Fatal(err)
	}
	files[".ingot/token"] = string(tok)
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := config.Load(filepath.Join(dir, config.FileName))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Update phases the test kills in.
const (
	phaseStream = iota // mid-stream of the root upload
	phaseCommit        // after the commit, while the reboot is asked for and the guest goes down
	phaseTrial         // during the trial boot, until it is confirmed
	phaseCount
)

var phaseNames = [phaseCount]string{"mid-stream", "commit→reboot", "trial boot"}

// phaseEvents turns push's step and progress lines and the VM's boots into
// timestamps of the phase starts. Each event fires once per update.
type phaseEvents struct {
	t          *testing.T
	mu         sync.Mutex
	pushStart  chan struct{}
	pushEnd    chan struct{}
	committed  chan struct{}
	trialBoot  chan struct{}
	pushClosed bool
	endClosed  bool
	comClosed  bool
	trClosed   bool
	times      map[chan struct{}]time.Time
}

func newPhaseEvents(t *testing.T) *phaseEvents {
	return &phaseEvents{t: t, pushStart: make(chan struct{}), pushEnd: make(chan struct{}),
		committed: make(chan struct{}), trialBoot: make(chan struct{}), times: map[chan struct{}]time.Time{}}
}

// fire closes c once and records when; p.mu is held.
func (p *phaseEvents) fire(c chan struct{}, done *bool) {
	if !*done {
		*done = true
		p.times[c] = time.Now()
		close(c)
	}
}

// Write receives push's log lines: "push: …" progress lines come during
// the upload, the "push" step line ends it, the "commit" line follows the
// commit.
func (p *phaseEvents) Write(b []byte) (int, error) {
	line := strings.TrimRight(string(b), "\n")
	p.t.Log(line)
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case strings.HasPrefix(line, "push:"):
		p.fire(p.pushStart, &p.pushClosed)
	case strings.HasPrefix(line, "push "):
		p.fire(p.pushStart, &p.pushClosed)
		p.fire(p.pushEnd, &p.endClosed)
	case strings.HasPrefix(line, "commit "):
		p.fire(p.committed, &p.comClosed)
	}
	return len(b), nil
}

func (p *phaseEvents) onBoot(b *bootloader.Boot) {
	if !b.Trial {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fire(p.trialBoot, &p.trClosed)
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
func killQEMU(runDir string, limit time.Duration) (int, error) {
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
		time.Sleep(10 * time.Millisecond)
	}
	return 0, fmt.Errorf("no qemu-system process with %s in its command line within %s", runDir, limit)
}

// vmRunner runs one image with vm.Run and starts it again after a kill.
type vmRunner struct {
	cfg    vm.Config
	mu     sync.Mutex
	ev     *phaseEvents
	done   chan error
	cancel context.CancelFunc
}

func (r *vmRunner) setEvents(ev *phaseEvents) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ev = ev
}

func (r *vmRunner) onBoot(b *bootloader.Boot) {
	r.mu.Lock()
	ev := r.ev
	r.mu.Unlock()
	if ev != nil {
		ev.onBoot(b)
	}
}

func (r *vmRunner) start(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	r.cancel, r.done = cancel, done
	cfg := r.cfg
	cfg.OnBoot = r.onBoot
	go func() { done <- vm.Run(ctx, cfg) }()
}

// wait returns vm.Run's result, or an error when it is still running after
// limit.
func (r *vmRunner) wait(limit time.Duration) error {
	select {
	case err := <-r.done:
		r.cancel()
		return err
	case <-time.After(limit):
		return fmt.Errorf("vm.Run still running after %s", limit)
	}
}

// exited returns vm.Run's error once it has returned while it should be
// running, so a VM that failed to start fails the test at once.
func (r *vmRunner) exited() error {
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

func (r *vmRunner) stop() error {
	r.cancel()
	return r.wait(time.Minute)
}

// healthy waits until the appliance behind c answers on a slot with no
// trial pending, and its service answers at url with the marker verdict.
// It returns the status and the HTTP body.
func healthy(ctx context.Context, r interface{ exited() error }, c *mgmt.Client, url string, limit time.Duration) (mgmt.Status, string, error) {
	deadline := time.Now().Add(limit)
	var st mgmt.Status
	var body string
	var err error
	for time.Now().Before(deadline) {
		if err := r.exited(); err != nil {
			return st, body, err
		}
		st, err = callStatus(ctx, c)
		if err == nil && (st.Slot != "a" && st.Slot != "b" || st.SlotState == nil || st.SlotState.Trial != "" || st.ShuttingDown) {
			err = fmt.Errorf("slot %q, slot.json %+v, shutting down %v", st.Slot, st.SlotState, st.ShuttingDown)
		}
		if err == nil {
			body, err = getGreeting(url)
			if err == nil && !strings.Contains(body, "marker ") {
				err = fmt.Errorf("body %q has no marker verdict", body)
			}
			if err == nil {
				return st, body, nil
			}
		}
		select {
		case <-ctx.Done():
			return st, body, ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
	return st, body, fmt.Errorf("not healthy within %s: %w", limit, err)
}

// reached names the last phase an update got to before the kill.
func (p *phaseEvents) reached() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.trClosed:
		return phaseNames[phaseTrial]
	case p.comClosed:
		return phaseNames[phaseCommit]
	case p.endClosed:
		return "push→commit"
	case p.pushClosed:
		return phaseNames[phaseStream]
	}
	return "before push"
}

// TestVMUpdatePowerLoss cuts the power (SIGKILL of QEMU) at random points
// of push.Update: mid-stream of the root upload, between the commit and
// the reboot, and during the trial boot. After each cut the VM is started
// again on the same image and must come up healthy on one of its two
// slots, its agent answering, and with the file its service wrote to /perm
// before the first update unchanged.
func TestVMUpdatePowerLoss(t *testing.T) {
	vmtest.Kernel(t, "amd64")
	kills := defaultPowerLossKills
	if s := os.Getenv("INGOT_POWERLOSS_N"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("INGOT_POWERLOSS_N=%q: want a positive count", s)
		}
		kills = n
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("INGOT_POWERLOSS_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("INGOT_POWERLOSS_SEED=%q: %v", s, err)
		}
		seed = n
	}
	t.Logf("%d kills, seed %d (INGOT_POWERLOSS_SEED=%d repeats the kill points)", kills, seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))

	ctx := t.Context()
	tmp := t.TempDir()
	cache := assemble.WithCacheDir(filepath.Join(tmp, "cache"))
	appDir := filepath.Join(tmp, "app")
	greetings := [2]string{"greeting one", "greeting two"}
	img := filepath.Join(tmp, "powerloss.img")
	start := time.Now()
	if _, err := assemble.Image(ctx, writeMarkerApp(t, appDir, greetings[0]), config.TargetVMAmd64, img, cache); err != nil {
		t.Fatal(err)
	}

	port := vmtest.FreePort(t)
	runDir := filepath.Join(tmp, "run")
	console := &vmtest.Console{}
	r := &vmRunner{cfg: vm.Config{
		Image: img, RunDir: runDir, Accel: qemu.AccelTCG, MemoryMiB: 512,
		Forwards: []qemu.Forward{{Proto: "tcp", HostPort: port, GuestPort: 8080}},
		Console:  console, Logf: t.Logf,
	}}
	r.start(ctx)
	defer func() {
		if err := r.stop(); err != nil {
			t.Errorf("stop VM: %v", err)
		}
		if t.Failed() {
			s := console.String()
			t.Logf("console (last 20000 bytes):\n%s", s[max(0, len(s)-20000):])
		}
	}()
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	target := fmt.Sprintf("unix://%s?port=%d", vm.VsockPath(runDir), config.DefaultVsockPort)
	tok, err := os.ReadFile(filepath.Join(appDir, ".ingot/token"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := mgmt.NewClient(target, string(tok))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	_, body, err := healthy(ctx, r, c, url, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(body, "marker created") || !strings.Contains(body, greetings[0]) {
		t.Fatalf("first boot: GET %s = %q, want %q and a created marker", url, body, greetings[0])
	}
	t.Logf("first boot healthy %s after start", time.Since(start).Round(time.Millisecond))
	opts := []Option{WithPollInterval(300 * time.Millisecond), WithWaitTimeout(3 * time.Minute), WithAssembleOptions(cache)}

	// One update without a cut measures how long each phase lasts, so the
	// random cuts spread over the whole of each.
	ev := newPhaseEvents(t)
	r.setEvents(ev)
	upStart := time.Now()
	if _, err := New(c, append(opts, WithLog(ev))...).Update(ctx, writeMarkerApp(t, appDir, greetings[1])); err != nil {
		t.Fatal(err)
	}
	upEnd := time.Now()
	span := [phaseCount]time.Duration{
		phaseStream: ev.at(ev.pushEnd).Sub(ev.at(ev.pushStart)),
		phaseCommit: ev.at(ev.trialBoot).Sub(ev.at(ev.committed)),
		phaseTrial:  upEnd.Sub(ev.at(ev.trialBoot)),
	}
	t.Logf("measured update %s: build until push %s, %s %s, %s %s, %s %s", upEnd.Sub(upStart).Round(time.Millisecond),
		ev.at(ev.pushStart).Sub(upStart).Round(time.Millisecond),
		phaseNames[phaseStream], span[phaseStream].Round(time.Millisecond),
		phaseNames[phaseCommit], span[phaseCommit].Round(time.Millisecond),
		phaseNames[phaseTrial], span[phaseTrial].Round(time.Millisecond))
	running := 1
	if _, body, err := healthy(ctx, r, c, url, time.Minute); err != nil || !strings.Contains(body, greetings[1]) || !strings.Contains(body, "marker ok") {
		t.Fatalf("after the measured update: GET %s = %q, %v; want %q and marker ok", url, body, err, greetings[1])
	}

	type outcome struct{ kills, newBuild, oldBuild int }
	results := map[string]*outcome{}
	var order []string
	loopStart := time.Now()
	for i := range kills {
		iterStart := time.Now()
		phase := i % phaseCount
		next := 1 - running
		cfg := writeMarkerApp(t, appDir, greetings[next])
		ev := newPhaseEvents(t)
		r.setEvents(ev)
		uctx, cancelUpdate := context.WithCancel(ctx)
		upDone := make(chan error, 1)
		go func() {
			_, err := New(c, append(opts, WithLog(ev))...).Update(uctx, cfg)
			upDone <- err
		}()
		anchor := [phaseCount]chan struct{}{ev.pushStart, ev.committed, ev.trialBoot}[phase]
		delay := time.Duration(rng.Int64N(int64(max(span[phase], time.Millisecond))))
		select {
		case <-anchor:
		case err := <-upDone:
			cancelUpdate()
			t.Fatalf("kill %d: update ended (%v) before the %s phase", i+1, err, phaseNames[phase])
		case <-time.After(5 * time.Minute):
			cancelUpdate()
			t.Fatalf("kill %d: the %s phase did not begin within 5 minutes", i+1, phaseNames[phase])
		}
		time.Sleep(delay)
		pid, err := killQEMU(runDir, time.Minute)
		reached := ev.reached()
		if err != nil {
			cancelUpdate()
			t.Fatalf("kill %d: %v", i+1, err)
		}
		runErr := r.wait(time.Minute)
		cancelUpdate()
		upErr := <-upDone
		t.Logf("kill %d: planned %s +%s, reached %s: SIGKILL qemu pid %d; vm.Run: %v; update: %v",
			i+1, phaseNames[phase], delay.Round(time.Millisecond), reached, pid, runErr, upErr)
		if runErr == nil {
			t.Errorf("kill %d: vm.Run returned nil after QEMU was killed, want an error", i+1)
		}

		r.start(ctx)
		st, body, err := healthy(ctx, r, c, url, 4*time.Minute)
		if err != nil {
			keepImage(t, img)
			t.Fatalf("kill %d (%s): after restart: %v", i+1, reached, err)
		}
		if !strings.Contains(body, "marker ok") {
			t.Fatalf("kill %d (%s): after restart: GET %s = %q, want marker ok: /perm lost the marker", i+1, reached, url, body)
		}
		switch {
		case strings.Contains(body, greetings[next]):
			running = next
		case strings.Contains(body, greetings[1-next]):
		default:
			t.Fatalf("kill %d: GET %s = %q, want one of the two greetings", i+1, url, body)
		}
		o := results[reached]
		if o == nil {
			o = &outcome{}
			results[reached] = o
			order = append(order, reached)
		}
		o.kills++
		which := "old build"
		if running == next {
			o.newBuild++
			which = "new build"
		} else {
			o.oldBuild++
		}
		t.Logf("kill %d: back up on slot %s with the %s (%s), marker ok, in %s", i+1, st.Slot, which,
			greetings[running], time.Since(iterStart).Round(time.Millisecond))
	}
	if strings.Contains(console.String(), "marker BAD") {
		t.Errorf("console shows a bad marker")
	}
	perKill := time.Since(loopStart) / time.Duration(kills)
	t.Logf("%d kills in %s (%s each)", kills, time.Since(loopStart).Round(time.Second), perKill.Round(time.Millisecond))
	for _, name := range order {
		o := results[name]
		t.Logf("phase %-14s %2d kills: %d came up on the new build, %d on the old", name, o.kills, o.newBuild, o.oldBuild)
	}
}

// at returns when the event c fired (zero if it did not).
func (p *phaseEvents) at(c chan struct{}) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.times[c]
}

// keepImage copies the image of a failed run to $INGOT_POWERLOSS_KEEP
// (when set) for a look with fsck.fat or mtools.
func keepImage(t *testing.T, img string) {
	dir := os.Getenv("INGOT_POWERLOSS_KEEP")
	if dir == "" {
		return
	}
	b, err := os.ReadFile(img)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, filepath.Base(img)), b, 0o644)
	}
	if err != nil {
		t.Errorf("keep image: %v", err)
		return
	}
	t.Logf("image kept in %s", dir)
}
