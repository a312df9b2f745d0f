package manage

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ingotdev/ingot/appliance/health"
	"github.com/ingotdev/ingot/appliance/update"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/format/slot"
	"github.com/ingotdev/ingot/packer/format/spec"
)

func TestUnhealthy(t *testing.T) {
	crash := &mgmt.Exit{Code: 1, RanSeconds: 0.05}
	stopped := &mgmt.Exit{Code: 0, Requested: true}
	for _, tc := range []struct {
		name string
		sts  []mgmt.ServiceStatus
		end  bool
		want string // substring; "" means healthy
	}{
		{"running", []mgmt.ServiceStatus{{Name: "web", State: mgmt.StateRunning}}, true, ""},
		{"crashed once", []mgmt.ServiceStatus{{Name: "web", State: mgmt.StateBackoff, Restarts: 0, LastExit: crash}}, false, "service web: exit status 1"},
		{"restarted", []mgmt.ServiceStatus{{Name: "web", State: mgmt.StateRunning, Restarts: 1}}, false, "restarted 1 times"},
		{"held does not count", []mgmt.ServiceStatus{{Name: "web", State: mgmt.StateHeld}}, true, ""},
		{"stopped on request", []mgmt.ServiceStatus{{Name: "web", State: mgmt.StateStopped, LastExit: stopped}}, true, ""},
		{"waiting mid-window", []mgmt.ServiceStatus{{Name: "web", State: mgmt.StateWaiting}}, false, ""},
		{"waiting at the end", []mgmt.ServiceStatus{{Name: "web", State: mgmt.StateWaiting, Reason: "after db"}}, true, "still waiting"},
		{"other policies ignored", []mgmt.ServiceStatus{{Name: "job", State: mgmt.StateExited, LastExit: crash}}, true, ""},
		{"healthy check", []mgmt.ServiceStatus{{Name: "web", State: mgmt.StateRunning, Health: &mgmt.Health{State: string(health.Healthy)}}}, true, ""},
		{"starting check mid-window", []mgmt.ServiceStatus{{Name: "web", State: mgmt.StateRunning, Health: &mgmt.Health{State: string(health.Starting), Failures: 1, LastError: "GET x: HTTP 503"}}}, false, ""},
		{"starting check at the end", []mgmt.ServiceStatus{{Name: "web", State: mgmt.StateRunning, Health: &mgmt.Health{State: string(health.Starting), Failures: 1, LastError: "GET x: HTTP 503"}}}, true, "health check still starting at the end of the health window (last probe: GET x: HTTP 503)"},
		{"never probed at the end", []mgmt.ServiceStatus{{Name: "web", State: mgmt.StateRunning, Health: &mgmt.Health{State: string(health.Starting)}}}, true, "no probe has succeeded yet"},
		{"unhealthy mid-window", []mgmt.ServiceStatus{{Name: "web", State: mgmt.StateRunning, Health: &mgmt.Health{State: string(health.Unhealthy), Failures: 3, LastError: "connect 127.0.0.1:80: refused"}}}, false, "health check unhealthy after 3 failed probes: connect 127.0.0.1:80: refused"},
		{"ended as unhealthy", []mgmt.ServiceStatus{{Name: "web", State: mgmt.StateBackoff, LastExit: &mgmt.Exit{Code: -1, Signal: "SIGTERM", Unhealthy: true}}}, false, "(ended as unhealthy)"},
	} {
		got := unhealthy([]string{"web"}, tc.sts, tc.end)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: unhealthy(web, %+v, end=%v) = %q, want %q", tc.name, tc.sts, tc.end, got, tc.want)
		}
	}
}

// fakeClock is a trial's clock that moves on by step at every reading, so
// a test decides how much trial time each look at the services takes.
type fakeClock struct {
	t    time.Time
	step time.Duration
}

func (c *fakeClock) now() time.Time {
	c.t = c.t.Add(c.step)
	return c.t
}

// trialRun is one watchHealth run against scripted statuses.
type trialRun struct {
	rule    trialRule
	serving bool
	// status returns the statuses at look n (from 1).
	status func(n int) []mgmt.ServiceStatus
}

// run watches until the trial is decided and returns the reason, the
// trial time it took, and the last statuses it saw. The context's
// deadline only keeps a watcher that never decides from hanging the test.
func (tr trialRun) run(t *testing.T) (string, time.Duration, []mgmt.ServiceStatus) {
	t.Helper()
	clock := &fakeClock{t: time.Unix(0, 0), step: tr.rule.poll}
	tr.rule.now = clock.now
	tr.rule.poll = time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n := 0
	var last []mgmt.ServiceStatus
	got := watchHealth(ctx, tr.rule, []string{"web"}, func() []mgmt.ServiceStatus {
		n++
		last = tr.status(n)
		return last
	}, func() bool { return tr.serving })
	if ctx.Err() != nil {
		t.Fatalf("watchHealth did not decide the trial: ran until the test's deadline")
	}
	return got, clock.t.Sub(time.Unix(0, 0)), last
}

func running(h *mgmt.Health, restarts int) []mgmt.ServiceStatus {
	return []mgmt.ServiceStatus{{Name: "web", State: mgmt.StateRunning, Health: h, Restarts: restarts}}
}

func TestWatchHealthEarly(t *testing.T) {
	rule := trialRule{window: time.Hour, early: 10 * time.Second, passes: 3, poll: time.Second}
	passing := func(from int) func(int) []mgmt.ServiceStatus {
		return func(n int) []mgmt.ServiceStatus {
			return running(&mgmt.Health{State: string(health.Healthy), Passes: max(0, n-from)}, 0)
		}
	}
	for _, tc := range []struct {
		name   string
		status func(int) []mgmt.ServiceStatus
	}{
		{"check passing from the start", passing(0)},
		{"check passing from look 30", passing(30)},
		{"no check", func(int) []mgmt.ServiceStatus { return running(nil, 0) }},
	} {
		got, took, last := trialRun{rule: rule, serving: true, status: tc.status}.run(t)
		if got != "" {
			t.Errorf("%s: watchHealth = %q, want confirmed", tc.name, got)
			continue
		}
		if took < rule.early || took >= rule.window {
			t.Errorf("%s: confirmed after %s of trial time, want from %s on and before the %s window", tc.name, took, rule.early, rule.window)
		}
		if h := last[0].Health; h != nil && h.Passes < rule.passes {
			t.Errorf("%s: confirmed with %d passes in a row, want %d", tc.name, h.Passes, rule.passes)
		}
	}
}

func TestWatchHealthNotEarly(t *testing.T) {
	rule := trialRule{window: 20 * time.Second, early: 10 * time.Second, passes: 3, poll: time.Second}
	healthy := &mgmt.Health{State: string(health.Healthy), Passes: 5}
	for _, tc := range []struct {
		name    string
		serving bool
		status  func(int) []mgmt.ServiceStatus
		want    string
	}{
		{"restarted, then passing", true, func(n int) []mgmt.ServiceStatus { return running(healthy, min(1, n/5)) }, "restarted 1 times"},
		{"crash within the early window", true, func(n int) []mgmt.ServiceStatus {
			if n > 8 {
				return []mgmt.ServiceStatus{{Name: "web", State: mgmt.StateBackoff, LastExit: &mgmt.Exit{Code: 2}}}
			}
			return running(nil, 0)
		}, "service web: exit status 2"},
		{"turns unhealthy", true, func(n int) []mgmt.ServiceStatus {
			if n > 12 {
				return running(&mgmt.Health{State: string(health.Unhealthy), Failures: 3, LastError: "HTTP 503"}, 0)
			}
			return running(&mgmt.Health{State: string(health.Healthy), Passes: 2}, 0)
		}, "health check unhealthy after 3 failed probes: HTTP 503"},
		{"waiting", true, func(int) []mgmt.ServiceStatus {
			return []mgmt.ServiceStatus{{Name: "web", State: mgmt.StateWaiting, Reason: "after db"}}
		}, "still waiting"},
		{"agent gone", false, func(int) []mgmt.ServiceStatus { return running(healthy, 0) }, "agent is not listening"},
	} {
		got, took, _ := trialRun{rule: rule, serving: tc.serving, status: tc.status}.run(t)
		if !strings.Contains(got, tc.want) || got == "" {
			t.Errorf("%s: watchHealth = %q after %s of trial time, want %q", tc.name, got, took, tc.want)
		}
	}
}

// TestWatchHealthShortWindow: a window shorter than the time a check
// needs to pass once is counted from when it can: a check still starting
// at the window's end gets until its verdict, and no longer.
func TestWatchHealthShortWindow(t *testing.T) {
	rule := trialRule{window: time.Second, early: 10 * time.Second, passes: 3, poll: 250 * time.Millisecond, overtime: 3 * time.Second}
	starting := &mgmt.Health{State: string(health.Starting)}
	then := func(at int, h *mgmt.Health) func(int) []mgmt.ServiceStatus {
		return func(n int) []mgmt.ServiceStatus {
			if n >= at {
				return running(h, 0)
			}
			return running(starting, 0)
		}
	}
	for _, tc := range []struct {
		name   string
		status func(int) []mgmt.ServiceStatus
		want   string // substring; "" means confirmed
	}{
		{"first pass after the window", then(7, &mgmt.Health{State: string(health.Healthy), Passes: 1}), ""},
		{"failing without a verdict", then(2, &mgmt.Health{State: string(health.Starting), Failures: 2, LastError: "connection refused"}), "still starting"},
		{"unhealthy after the window", then(9, &mgmt.Health{State: string(health.Unhealthy), Failures: 3, LastError: "HTTP 503"}), "health check unhealthy"},
		{"never a verdict", then(1000, nil), "no probe has succeeded yet"},
	} {
		got, took, _ := trialRun{rule: rule, serving: true, status: tc.status}.run(t)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: watchHealth = %q after %s of trial time, want %q", tc.name, got, took, tc.want)
		}
		if took > rule.window+rule.overtime+rule.poll {
			t.Errorf("%s: decided after %s of trial time, want within the window and its overtime, %s", tc.name, took, rule.window+rule.overtime)
		}
	}
}

func TestNewTrialRule(t *testing.T) {
	sp := &spec.Appliance{Services: []spec.Service{
		{Name: "web", Restart: spec.RestartAlways, Health: &spec.Health{HTTP: "http://127.0.0.1/", IntervalMillis: 1000, TimeoutMillis: 500}},
		{Name: "job", Restart: spec.RestartOnFailure, Health: &spec.Health{TCP: "127.0.0.1:1", IntervalMillis: 60000}},
		{Name: "plain"},
	}}
	names := alwaysServices(sp)
	r := newTrialRule(sp, names, 3*time.Second)
	if r.window != 3*time.Second || r.early != spec.TrialMinWindow || r.passes != spec.TrialPasses {
		t.Errorf("newTrialRule = %+v, want window 3s, early %s, passes %d", r, spec.TrialMinWindow, spec.TrialPasses)
	}
	// web's 3 retries of at most 1 s + 500 ms; job's check does not count.
	if want := 4500 * time.Millisecond; r.overtime != want {
		t.Errorf("overtime = %s, want %s", r.overtime, want)
	}
}

// TestRecordFailure: a failed trial is written to slot.json (the next
// boot falls back) and to the record of the last update, with the same
// reason. (A record that cannot be written: update's
// TestLastUpdateWriteFails; the record is rewritten in place, so a file
// that reads cannot be made unwritable here without a read-only mount.)
func TestRecordFailure(t *testing.T) {
	dir := t.TempDir()
	if err := slot.Save(dir, slot.State{Active: slot.A, Trial: slot.B}); err != nil {
		t.Fatal(err)
	}
	rec := mgmt.LastUpdate{Started: time.Now(), Slot: "b", BuildID: "new", FromSlot: "a", Outcome: mgmt.OutcomePending}
	data, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, layout.LastUpdateFile), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := recordFailure(dir, slot.B, "service web is exited"); err != nil {
		t.Fatalf("recordFailure = %v", err)
	}
	s, err := update.ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	const want = "trial health check: service web is exited"
	if s.Active != slot.A || s.Trial != "" || s.LastFailed == nil || s.LastFailed.Reason != want {
		t.Errorf("slot.json = %+v, want a active and b failed with %q", s, want)
	}
	got := update.ReadLastUpdate(dir)
	if got == nil || got.Outcome != mgmt.OutcomeFailed || got.Reason != want || got.Finished.IsZero() {
		t.Errorf("record = %+v, want failed with %q", got, want)
	}
}
