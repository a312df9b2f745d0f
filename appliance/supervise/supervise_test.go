package supervise

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ingotdev/ingot/appliance/logs"
	"github.com/ingotdev/ingot/internal/vmtest"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// helperEnv switches the test binary into a helper process (see TestMain).
const helperEnv = "SUPERVISE_TEST_HELPER"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == spec.ContainerSubcommand {
		launcherMain() // this binary plays /init for TestContainerService
	}
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "orphans":
		if err := orphanHelper(); err != nil {
			fmt.Println("FAIL", err)
			os.Exit(1)
		}
		os.Exit(0)
	default:
		fmt.Println("unknown helper")
		os.Exit(2)
	}
}

// sh returns a service running script with /bin/sh as init's own user.
func sh(name, script string) spec.Service {
	return spec.Service{Name: name, Path: "/bin/sh", Args: []string{"-c", script}, User: "root"}
}

// reap runs r until the returned stop is called. stop returns only after
// Run has, so no reaper of an earlier test is left behind to steal a later
// test's child exits with its wildcard wait.
func reap(r *Reaper) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	return func() { cancel(); <-done }
}

// start runs a Reaper and a Supervisor until the test ends.
func start(t *testing.T, services []spec.Service, opts ...Option) *Supervisor {
	t.Helper()
	r := NewReaper()
	s, err := New(services, r, opts...)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	stopReaper := reap(r)
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- s.Run(ctx) }()
	t.Cleanup(func() {
		// Run stops the services after ctx ends, so the reaper keeps going
		// until Run returns.
		defer stopReaper()
		cancel()
		select {
		case err := <-runDone:
			if err != nil {
				t.Errorf("Run() = %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
	})
	return s
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func status(t *testing.T, s *Supervisor, name string) mgmt.ServiceStatus {
	t.Helper()
	st, ok := s.Service(name)
	if !ok {
		t.Fatalf("Service(%q) not found", name)
	}
	return st
}

// logLine waits for a line of the service's log with the given prefix and
// returns the rest of it.
func logLine(t *testing.T, s *Supervisor, name, prefix string) string {
	t.Helper()
	ring, _ := s.Logs(name)
	var rest string
	waitFor(t, 5*time.Second, fmt.Sprintf("%s to print %q", name, prefix), func() bool {
		for _, l := range ring.Tail(0) {
			if r, ok := strings.CutPrefix(l.Text, prefix); ok {
				rest = r
				return true
			}
		}
		return false
	})
	return rest
}

// dead reports whether pid has exited (gone, or a zombie awaiting a parent).
func dead(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z' || s[i+2] == 'X'
}

func TestCrashLoopBackoff(t *testing.T) {
	const (
		initial = 50 * time.Millisecond
		maxD    = 400 * time.Millisecond
		jitter  = 0.2
		// slack covers sh starting and exiting on a loaded machine; the
		// delays themselves are checked exactly from the log.
		slack = 2 * time.Second
	)
	s := start(t, []spec.Service{sh("crash", "exit 1")}, WithBackoff(initial, maxD, time.Minute), WithJitter(jitter))
	waitFor(t, 10*time.Second, "6 starts", func() bool { return status(t, s, "crash").Restarts >= 5 })
	ring, _ := s.Logs("crash")
	var starts, exits []time.Time
	var delays []time.Duration
	for _, l := range ring.Tail(0) {
		if strings.HasPrefix(l.Text, "started pid ") {
			starts = append(starts, l.Time)
		}
		if _, d, ok := strings.Cut(l.Text, "restarting in "); ok {
			delay, err := time.ParseDuration(d)
			if err != nil {
				t.Fatalf("log %q: %v", l.Text, err)
			}
			exits, delays = append(exits, l.Time), append(delays, delay)
		}
	}
	want := []time.Duration{50, 100, 200, 400, 400}
	if len(starts) < len(want)+1 || len(delays) < len(want) {
		t.Fatalf("%d starts and %d delays logged, want %d and %d", len(starts), len(delays), len(want)+1, len(want))
	}
	for i, w := range want {
		w *= time.Millisecond
		// The log rounds to the millisecond.
		if lo := time.Duration(float64(w)*(1-jitter)) - time.Millisecond; delays[i] < lo || delays[i] > w {
			t.Errorf("delay %d = %v, want %v..%v (%v with %.0f%% jitter)", i, delays[i], lo, w, w, jitter*100)
		}
		if gap := starts[i+1].Sub(exits[i]); gap < delays[i]-time.Millisecond || gap > delays[i]+slack {
			t.Errorf("start %d came %v after exit %d, want its delay %v (plus up to %v)", i+1, gap, i, delays[i], slack)
		}
	}
	st := status(t, s, "crash")
	if st.LastExit == nil || st.LastExit.Code != 1 {
		t.Errorf("LastExit = %+v, want exit status 1", st.LastExit)
	}
}

func TestBackoffResetAfterLongRun(t *testing.T) {
	o := options{backoffInitial: 100 * time.Millisecond, backoffMax: 30 * time.Second}
	for _, tc := range []struct {
		failures int
		want     time.Duration
	}{{0, 100 * time.Millisecond}, {1, 200 * time.Millisecond}, {8, 25600 * time.Millisecond}, {9, 30 * time.Second}, {100, 30 * time.Second}} {
		if got := o.backoff(tc.failures); got != tc.want {
			t.Errorf("backoff(%d) = %v, want %v", tc.failures, got, tc.want)
		}
	}
	// A run longer than the reset period starts over at the initial delay.
	s := start(t, []spec.Service{sh("slow", "sleep 0.15; exit 1")},
		WithBackoff(20*time.Millisecond, time.Second, 100*time.Millisecond), WithJitter(0))
	waitFor(t, 5*time.Second, "3 restarts", func() bool { return status(t, s, "slow").Restarts >= 3 })
	ring, _ := s.Logs("slow")
	for _, l := range ring.Tail(0) {
		if strings.Contains(l.Text, "restarting in") && !strings.HasSuffix(l.Text, "restarting in 20ms") {
			t.Errorf("log %q: want every delay reset to 20ms after runs longer than the reset period", l.Text)
		}
	}
}

func TestRestartPolicies(t *testing.T) {
	withPolicy := func(svc spec.Service, p spec.Restart) spec.Service { svc.Restart = p; return svc }
	s := start(t, []spec.Service{
		withPolicy(sh("always-ok", "exit 0"), spec.RestartAlways),
		withPolicy(sh("onfail-ok", "exit 0"), spec.RestartOnFailure),
		withPolicy(sh("onfail-bad", "exit 3"), spec.RestartOnFailure),
		withPolicy(sh("onfail-signal", "kill -9 $$"), spec.RestartOnFailure),
		withPolicy(sh("never-bad", "exit 3"), spec.RestartNever),
		withPolicy(spec.Service{Name: "missing", Path: "/nonexistent/prog", User: "root"}, spec.RestartOnFailure),
		withPolicy(spec.Service{Name: "missing-never", Path: "/nonexistent/prog", User: "root"}, spec.RestartNever),
	}, WithBackoff(10*time.Millisecond, 20*time.Millisecond, time.Minute))
	for _, tc := range []struct {
		name     string
		restarts bool
		lastExit string
	}{
		{"always-ok", true, "exit status 0"},
		{"onfail-ok", false, "exit status 0"},
		{"onfail-bad", true, "exit status 3"},
		{"onfail-signal", true, "signal SIGKILL"},
		{"never-bad", false, "exit status 3"},
		{"missing", true, "start failed: fork/exec /nonexistent/prog: no such file or directory"},
		{"missing-never", false, "start failed:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.restarts {
				waitFor(t, 5*time.Second, "two restarts", func() bool { return status(t, s, tc.name).Restarts >= 2 })
			} else {
				waitFor(t, 5*time.Second, "the exit", func() bool { return status(t, s, tc.name).State == mgmt.StateExited })
				time.Sleep(50 * time.Millisecond) // room for a wrong restart
				if st := status(t, s, tc.name); st.Restarts != 0 || st.State != mgmt.StateExited {
					t.Errorf("Restarts = %d, State = %s; want 0, %s", st.Restarts, st.State, mgmt.StateExited)
				}
			}
			if st := status(t, s, tc.name); st.LastExit == nil || !strings.HasPrefix(st.LastExit.String(), tc.lastExit) {
				t.Errorf("LastExit = %v, want %q", st.LastExit, tc.lastExit)
			}
		})
	}
}

func TestStopKillsProcessGroup(t *testing.T) {
	s := start(t, []spec.Service{
		sh("tree", `sleep 1000 & echo "child $!"; wait`),
		sh("leaver", `sleep 1000 & echo "child $!"; exit 0`),
	}, WithBackoff(time.Hour, time.Hour, time.Hour))
	leader := 0
	waitFor(t, 5*time.Second, "tree to run", func() bool { leader = status(t, s, "tree").PID; return leader != 0 })
	child, _ := strconv.Atoi(logLine(t, s, "tree", "child "))
	if dead(child) || dead(leader) {
		t.Fatalf("leader %d or child %d not running before Stop", leader, child)
	}
	if err := s.Stop(context.Background(), "tree"); err != nil {
		t.Fatalf("Stop(tree) = %v", err)
	}
	st := status(t, s, "tree")
	if st.State != mgmt.StateStopped || st.PID != 0 || st.LastExit == nil || !st.LastExit.Requested {
		t.Errorf("after Stop: %+v, want stopped with a requested exit", st)
	}
	waitFor(t, 2*time.Second, fmt.Sprintf("grandchild %d to die with its group", child), func() bool { return dead(child) })
	// A leader that exits by itself takes what it left in its group along.
	orphan, _ := strconv.Atoi(logLine(t, s, "leaver", "child "))
	waitFor(t, 2*time.Second, fmt.Sprintf("orphan %d of an exited leader to die", orphan), func() bool { return dead(orphan) })
}

func TestGraceThenKill(t *testing.T) {
	stubborn := sh("stubborn", `trap "" TERM; echo ready; while :; do sleep 0.05; done`)
	stubborn.GraceSeconds = 1
	polite := sh("polite", `echo ready; exec sleep 1000`)
	s := start(t, []spec.Service{stubborn, polite})
	logLine(t, s, "stubborn", "ready")
	logLine(t, s, "polite", "ready")
	for _, tc := range []struct {
		name     string
		min, max time.Duration
		signal   string
	}{
		{"polite", 0, 5 * time.Second, "SIGTERM"}, // well short of its 10 s grace
		{"stubborn", time.Second, 3 * time.Second, "SIGKILL"},
	} {
		t0 := time.Now()
		if err := s.Stop(context.Background(), tc.name); err != nil {
			t.Fatalf("Stop(%s) = %v", tc.name, err)
		}
		took := time.Since(t0)
		if took < tc.min || took > tc.max {
			t.Errorf("Stop(%s) took %v, want %v..%v", tc.name, took, tc.min, tc.max)
		}
		if st := status(t, s, tc.name); st.LastExit == nil || st.LastExit.Signal != tc.signal {
			t.Errorf("Stop(%s): LastExit = %+v, want ended by %s", tc.name, st.LastExit, tc.signal)
		}
	}
}

func TestOrphansReaped(t *testing.T) {
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Fatalf("setsid (util-linux) is needed: %v", err)
	}
	// The helper is a child subreaper, as PID 1 is, so the orphans come to
	// it; running it in a process of its own keeps this test binary's
	// children out of its wildcard waits.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=orphans")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "OK") {
		t.Errorf("orphan helper: %v\n%s", err, out)
	}
}

func orphanHelper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return err
	}
	r := NewReaper()
	never := sh("forker", `setsid sleep 0.2 & setsid sleep 0.3 & sleep 1000 & echo spawned; exit 0`)
	never.Restart = spec.RestartNever
	s, err := New([]spec.Service{never}, r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	go s.Run(ctx)
	// Two sleeps escape the group with setsid and exit on their own; the
	// third is killed with the group when the shell exits. All three are
	// reparented to this process and must be reaped.
	deadline := time.Now().Add(5 * time.Second)
	for r.Orphans() < 3 {
		if time.Now().After(deadline) {
			return fmt.Errorf("reaped %d orphans, want 3", r.Orphans())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	kids, err := childrenOf(os.Getpid())
	if err != nil {
		return err
	}
	if len(kids) != 0 {
		return fmt.Errorf("children left (zombies or not): %v", kids)
	}
	if st, _ := s.Service("forker"); st.State != mgmt.StateExited || st.LastExit == nil || st.LastExit.Code != 0 {
		return fmt.Errorf("forker status %+v, want exited 0", st)
	}
	fmt.Println("OK orphans", r.Orphans())
	return nil
}

// childrenOf lists "pid state" of the processes whose parent is ppid.
func childrenOf(ppid int) ([]string, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(ppid) {
			out = append(out, fmt.Sprintf("%d %s", pid, f[0]))
		}
	}
	return out, nil
}

func TestLogRingAndFileRotation(t *testing.T) {
	perm := t.TempDir()
	svc := sh("chatty", `i=0; while [ $i -lt 200 ]; do echo "line $i xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"; i=$((i+1)); done`)
	svc.Restart = spec.RestartNever
	svc.LogBufferBytes = 2048
	s := start(t, []spec.Service{svc}, WithPerm(perm), WithLogFileBytes(4096))
	logLine(t, s, "chatty", "line 199 ")
	sink, _ := s.Logs("chatty")
	ring := sink.Ring()
	if got := ring.Bytes(); got > 2048 {
		t.Errorf("ring uses %d bytes, want <= 2048", got)
	}
	if first := ring.Tail(0)[0]; first.Seq == 1 {
		t.Errorf("ring still holds its first line %q; want it overwritten", first.Text)
	}
	logFile := filepath.Join(perm, "log", "chatty.log")
	cur, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(logFile + ".1")
	if err != nil {
		t.Fatalf("log was not rotated: %v", err)
	}
	if len(cur) > 4096 || len(old) > 4096 {
		t.Errorf("log files are %d and %d bytes, want <= 4096", len(cur), len(old))
	}
	// The rotated file ends right where the current one begins.
	lineNo := func(b []byte, last bool) int {
		lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		l := lines[0]
		if last {
			l = lines[len(lines)-1]
		}
		var n int
		if i := strings.Index(l, " stdout line "); i >= 0 {
			fmt.Sscanf(l[i+len(" stdout line "):], "%d", &n)
		}
		return n
	}
	if o, c := lineNo(old, true), lineNo(cur, false); c != o+1 {
		t.Errorf("rotated file ends at line %d, current starts at %d; want consecutive", o, c)
	}
	if !strings.Contains(string(cur), " stdout line 199 ") {
		t.Errorf("current log file lacks the last line:\n%s", cur)
	}
}

func TestFirstLinesAndConsole(t *testing.T) {
	perm := t.TempDir()
	var out vmtest.Console
	c := logs.NewConsole(&out, 0)
	defer c.Close()
	svc := sh("hello", `echo "pwd $(pwd)"; echo "env $INGOT_SERVICE $INGOT_BUILD_ID $GREETING $HOME"; echo oops >&2; exec sleep 1000`)
	svc.Env = map[string]string{"GREETING": "hi"}
	s := start(t, []spec.Service{svc}, WithPerm(perm), WithBuildID("build-7"), WithConsole(c))
	if got, want := logLine(t, s, "hello", "pwd "), filepath.Join(perm, "hello"); got != want {
		t.Errorf("working directory = %q, want %q", got, want)
	}
	if got, want := logLine(t, s, "hello", "env "), "hello build-7 hi "+filepath.Join(perm, "hello"); got != want {
		t.Errorf("env = %q, want %q", got, want)
	}
	logLine(t, s, "hello", "oops")
	ring, _ := s.Logs("hello")
	for _, l := range ring.Tail(0) {
		if l.Text == "oops" && l.Stream != logs.Stderr {
			t.Errorf("oops came on %v, want stderr", l.Stream)
		}
	}
	c.Flush(context.Background())
	if !strings.Contains(out.String(), "hello: env hello build-7") {
		t.Errorf("console = %q, want lines prefixed with the service name", out.String())
	}
}

func TestCredential(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatalf("this test needs root (CI runs as root)")
	}
	perm := t.TempDir()
	// The nobody user must be able to reach its working directory.
	for d := perm; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	svc := sh("unpriv", `echo "id $(id -u):$(id -g):$(id -G)"; touch ok && echo wrote; exec sleep 1000`)
	svc.User = ""
	s := start(t, []spec.Service{svc}, WithPerm(perm))
	if got := logLine(t, s, "unpriv", "id "); got != "65534:65534:65534" {
		t.Errorf("id = %q, want 65534:65534:65534 (nobody, no supplementary groups)", got)
	}
	logLine(t, s, "unpriv", "wrote")
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(perm, "unpriv"), &st); err != nil || st.Uid != 65534 || st.Gid != 65534 {
		t.Errorf("working dir owner = %d:%d (%v), want 65534:65534", st.Uid, st.Gid, err)
	}
}

func TestAfterOrderingAndHeld(t *testing.T) {
	a := sh("a", "exec sleep 1000")
	b := sh("b", "exec sleep 1000")
	b.After = []string{"a"}
	c := sh("c", "exec sleep 1000")
	c.NeedsPerm = true
	d := sh("d", "exec sleep 1000")
	d.After = []string{"c"}
	s := start(t, []spec.Service{b, d, c, a}, WithPermMissing("no partition"))
	waitFor(t, 5*time.Second, "b to run", func() bool { return status(t, s, "b").State == mgmt.StateRunning })
	if sa, sb := status(t, s, "a"), status(t, s, "b"); sa.State != mgmt.StateRunning || sb.StartedAt.Before(sa.StartedAt) {
		t.Errorf("a %s at %v, b started at %v; want a running and started first", sa.State, sa.StartedAt, sb.StartedAt)
	}
	if st := status(t, s, "c"); st.State != mgmt.StateHeld || st.Reason != "needs /perm, which is not mounted: no partition" {
		t.Errorf("c = %s %q, want held for perm", st.State, st.Reason)
	}
	if st := status(t, s, "d"); st.State != mgmt.StateWaiting || !strings.Contains(st.Reason, "waiting for c (held: needs /perm") {
		t.Errorf("d = %s %q, want waiting for c", st.State, st.Reason)
	}
	if err := s.Start(context.Background(), "c"); !errors.Is(err, ErrHeld) {
		t.Errorf("Start(c) = %v, want ErrHeld", err)
	}
	if err := s.Start(context.Background(), "d"); err != nil {
		t.Errorf("Start(d) = %v, want it to start without its After service", err)
	}
	if st := status(t, s, "d"); st.State != mgmt.StateRunning {
		t.Errorf("d after Start = %s, want running", st.State)
	}
}

func TestControlAPI(t *testing.T) {
	r := NewReaper()
	s, err := New([]spec.Service{sh("svc", "exec sleep 1000"), sh("crash", "exit 1")}, r,
		WithBackoff(time.Hour, time.Hour, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background(), "svc"); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Start before Run = %v, want ErrNotRunning", err)
	}
	defer reap(r)()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- s.Run(ctx) }()

	waitFor(t, 5*time.Second, "svc to run", func() bool { return status(t, s, "svc").State == mgmt.StateRunning })
	if err := s.Restart(ctx, "nope"); !errors.Is(err, ErrUnknownService) {
		t.Errorf("Restart(nope) = %v, want ErrUnknownService", err)
	}
	pid1 := status(t, s, "svc").PID
	if err := s.Restart(ctx, "svc"); err != nil {
		t.Fatalf("Restart(svc) = %v", err)
	}
	st := status(t, s, "svc")
	if st.State != mgmt.StateRunning || st.PID == pid1 || st.Restarts != 1 || !dead(pid1) {
		t.Errorf("after Restart: %+v (old pid %d dead %v), want a new running pid and 1 restart", st, pid1, dead(pid1))
	}
	if err := s.Start(ctx, "svc"); err != nil || status(t, s, "svc").PID != st.PID {
		t.Errorf("Start(running) = %v, want a no-op", err)
	}
	// A crashed service waits an hour in backoff; Stop cancels that,
	// Start brings it back at once.
	waitFor(t, 5*time.Second, "crash to back off", func() bool { return status(t, s, "crash").State == mgmt.StateBackoff })
	// Jitter takes up to DefaultJitter off the hour.
	minDelay := time.Duration(float64(time.Hour)*(1-DefaultJitter)) - time.Minute
	if st := status(t, s, "crash"); st.NextStart.Before(time.Now().Add(minDelay)) {
		t.Errorf("crash NextStart = %v, want at least %v ahead (an hour less jitter)", st.NextStart, minDelay)
	}
	if err := s.Stop(ctx, "crash"); err != nil || status(t, s, "crash").State != mgmt.StateStopped {
		t.Errorf("Stop(crash in backoff) = %v, state %s; want stopped", err, status(t, s, "crash").State)
	}
	before := status(t, s, "crash").Restarts
	if err := s.Start(ctx, "crash"); err != nil {
		t.Errorf("Start(crash) = %v", err)
	}
	waitFor(t, 5*time.Second, "crash to run again", func() bool { return status(t, s, "crash").Restarts == before+1 })
	if names := s.Names(); len(names) != 2 || names[0] != "svc" {
		t.Errorf("Names() = %q", names)
	}

	// Shutdown: cancel stops everything and Run returns.
	pid := status(t, s, "svc").PID
	cancel() // the reaper keeps going while Run stops the services
	select {
	case err := <-runDone:
		if err != nil {
			t.Errorf("Run() = %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if st := status(t, s, "svc"); st.State != mgmt.StateStopped || !dead(pid) {
		t.Errorf("after shutdown svc = %+v, pid %d dead %v; want stopped and dead", st, pid, dead(pid))
	}
	if err := s.Stop(context.Background(), "svc"); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Stop after Run = %v, want ErrNotRunning", err)
	}
	if err := s.Run(context.Background()); err == nil {
		t.Errorf("second Run() = nil, want an error")
	}
}

func TestNewRejects(t *testing.T) {
	r := NewReaper()
	for _, tc := range []struct {
		name string
		svcs []spec.Service
		opts []Option
		want string
	}{
		{"invalid", []spec.Service{{Name: "x", Path: "rel"}}, nil, "path"},
		{"duplicate", []spec.Service{sh("x", ""), sh("x", "")}, nil, "duplicate"},
		{"unknown after", []spec.Service{{Name: "x", Path: "/x", After: []string{"y"}}}, nil, `unknown service "y"`},
		{"bad backoff", nil, []Option{WithBackoff(time.Second, time.Millisecond, time.Minute)}, "backoff"},
	} {
		if _, err := New(tc.svcs, r, tc.opts...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%s) = %v, want error containing %q", tc.name, err, tc.want)
		}
	}
}

// TestLastOutputBeforeStopped: a run's last output is recorded before the
// supervisor says the run stopped, so that it reaches the log file before
// a shutdown closes it. Asked to stop, the program has cat write 8,000
// lines at once and exits, leaving its reader up to a pipe's worth of
// lines to go through after the exit is known.
func TestLastOutputBeforeStopped(t *testing.T) {
	const last = 8000
	var burst strings.Builder
	for i := 0; i <= last; i++ {
		fmt.Fprintf(&burst, "line %d\n", i)
	}
	file := filepath.Join(t.TempDir(), "burst")
	if err := os.WriteFile(file, []byte(burst.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	svc := sh("burst", fmt.Sprintf(`trap 'cat %s; exit 0' TERM; echo ready; while :; do sleep 0.05; done`, file))
	svc.LogBufferBytes = 4 << 20
	s := start(t, []spec.Service{svc})
	logLine(t, s, "burst", "ready")
	if err := s.Stop(context.Background(), "burst"); err != nil {
		t.Fatal(err)
	}
	sink, _ := s.Logs("burst")
	lastLine, stopped := -1, -1
	for i, l := range sink.Tail(0) {
		switch {
		case l.Text == fmt.Sprintf("line %d", last):
			lastLine = i
		case strings.HasPrefix(l.Text, "stopped: "):
			stopped = i
		}
	}
	if lastLine < 0 || stopped < lastLine {
		t.Errorf("line %d is line %d of the log and %q line %d; want the program's last line first", last, lastLine, "stopped", stopped)
	}
}
