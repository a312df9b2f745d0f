package manage

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/ingotdev/ingot/appliance/health"
	"github.com/ingotdev/ingot/appliance/stage1"
	"github.com/ingotdev/ingot/appliance/update"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/slot"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// healthPoll is how often the services are looked at during a trial; a
// crash between two looks still shows as a restart.
const healthPoll = 250 * time.Millisecond

// trialDeps is what the trial check uses.
type trialDeps struct {
	sys     *stage1.System
	spec    *spec.Appliance
	window  time.Duration
	booted  slot.Name
	bootDir string
	confirm func() (slot.State, error)
	serving func() bool // whether every agent listener is bound
	// failed runs after the failure is recorded in slot.json (the UEFI
	// entries follow it); nil does nothing.
	failed func() error
}

// checkTrial watches a trial boot until it is decided (trialRule), then
// confirms it, or records why it failed and reboots so the loader falls
// back.
func checkTrial(ctx context.Context, d trialDeps) {
	names := alwaysServices(d.spec)
	r := newTrialRule(d.spec, names, d.window)
	d.sys.Printf("manage: trial boot of slot %s: confirming once every restart: always service has stayed up %s with each health check passing %d probes in a row, or at the latest after %s with every such service up (and healthy, with a health check), and the agent serves", d.booted, min(r.early, r.window), r.passes, d.window)
	status := func() []mgmt.ServiceStatus { return d.sys.Status().Services }
	start := time.Now()
	reason := watchHealth(ctx, r, names, status, d.serving)
	if ctx.Err() != nil {
		return // shutting down: the trial was neither proven nor failed
	}
	if reason == "" {
		st, err := d.confirm()
		if err != nil {
			d.sys.Printf("manage: confirming the trial of slot %s: %v", d.booted, err)
			return
		}
		d.sys.Printf("manage: trial of slot %s confirmed after %s: slot %s is active", d.booted, time.Since(start).Round(time.Millisecond), st.Active)
		return
	}
	d.sys.Printf("manage: trial of slot %s failed: %s; rebooting to fall back", d.booted, reason)
	if err := recordFailure(d.bootDir, d.booted, reason); err != nil {
		// The loader falls back anyway (the trial has no tries left); it
		// just cannot say why.
		d.sys.Printf("manage: recording the failed trial: %v", err)
	} else if d.failed != nil {
		if err := d.failed(); err != nil {
			d.sys.Printf("manage: recording the failed trial: %v", err)
		}
	}
	if err := d.sys.Shutdown(context.Background(), true); err != nil {
		d.sys.Printf("manage: reboot after the failed trial: %v", err)
	}
}

// recordFailure cancels the trial of booted in slot.json and says why, so
// the next boot runs the active slot and status shows the reason; then the
// record of the last update says the update failed, and why.
func recordFailure(bootDir string, booted slot.Name, reason string) error {
	s, err := update.ReadState(bootDir)
	if err != nil {
		return err
	}
	if s.Trial != booted {
		return fmt.Errorf("slot.json no longer has slot %s on trial (active %q, trial %q)", booted, s.Active, s.Trial)
	}
	next := slot.State{Active: s.Active, LastFailed: &slot.Failure{Slot: booted, Reason: "trial health check: " + reason}}
	if err := slot.Save(bootDir, next); err != nil {
		return err
	}
	// slot.json decides the fallback; the record of the last update only
	// reports it, so its error does not change what happens next.
	if _, err := update.ResolveLastUpdate(bootDir, next, time.Now()); err != nil {
		return fmt.Errorf("slot.json has the failure, the record of the last update does not: %w", err)
	}
	return nil
}

// alwaysServices lists the services whose health decides a trial.
func alwaysServices(sp *spec.Appliance) []string {
	var names []string
	for _, s := range sp.Services {
		if s.Restart == "" || s.Restart == spec.RestartAlways {
			names = append(names, s.Name)
		}
	}
	return names
}

// trialRule says when a trial boot is decided.
type trialRule struct {
	// window is the configured health window: at its end, every counted
	// service still up (and healthy, with a check) confirms the trial.
	window time.Duration
	// early and passes confirm it sooner: every counted service has
	// stayed up for early, and each health check has passed passes probes
	// in a row.
	early  time.Duration
	passes int
	// overtime is how long past the window a check that has had no
	// verdict yet (still starting: no pass, fewer failures than its
	// retries) is waited for; its own retries, intervals and timeouts
	// bound that wait, so the window counts from when a check can first
	// pass without ever leaving the trial open.
	overtime time.Duration
	// poll is how often the services are looked at; a crash between two
	// looks still shows as a restart.
	poll time.Duration
	// now is the clock the durations are measured on.
	now func() time.Time
}

// newTrialRule is the rule for the services names of sp with the health
// window window.
func newTrialRule(sp *spec.Appliance, names []string, window time.Duration) trialRule {
	r := trialRule{window: window, early: spec.TrialMinWindow, passes: spec.TrialPasses, poll: healthPoll, now: time.Now}
	for _, s := range sp.Services {
		if s.Health == nil || !slices.Contains(names, s.Name) {
			continue
		}
		// A verdict needs at most RetryCount more probes, each at most an
		// interval and a timeout after the one before.
		h := *s.Health
		r.overtime = max(r.overtime, time.Duration(h.RetryCount())*(h.Interval()+h.Timeout()))
	}
	return r
}

// watchHealth polls the services until the trial is decided by r and
// returns why it failed, or "" when it is healthy (or ctx ended). At
// every look, each service in names must have stayed up with no restart
// and never turned unhealthy. The trial is confirmed early once r.early
// has passed with every such service running, each health check having
// passed r.passes probes in a row, and the agent serving; otherwise at
// the end of r.window, when every service is running (and, with a health
// check, healthy) and the agent serves. A check still starting at the
// window's end gets until its verdict, at most r.overtime longer.
// Services held back (a condition not met, perm missing) do not count:
// they would not run on the old slot either.
func watchHealth(ctx context.Context, r trialRule, names []string, status func() []mgmt.ServiceStatus, serving func() bool) string {
	start := r.now()
	tick := time.NewTicker(r.poll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ""
		case <-tick.C:
		}
		sts := status()
		if why := unhealthy(names, sts, false); why != "" {
			return why
		}
		elapsed := r.now().Sub(start)
		switch {
		case elapsed >= r.window:
			if elapsed < r.window+r.overtime && checkStarting(names, sts) {
				continue
			}
		case elapsed >= r.early:
			if unhealthy(names, sts, true) != "" || !passedInARow(names, sts, r.passes) || !serving() {
				continue
			}
		default:
			continue
		}
		if why := unhealthy(names, sts, true); why != "" {
			return why
		}
		if !serving() {
			return "the management agent is not listening (a listener did not bind again)"
		}
		return ""
	}
}

// counted returns the statuses of the services in names that a trial
// counts: present and not held back.
func counted(names []string, sts []mgmt.ServiceStatus) []mgmt.ServiceStatus {
	var out []mgmt.ServiceStatus
	for _, s := range sts {
		if slices.Contains(names, s.Name) && s.State != mgmt.StateHeld {
			out = append(out, s)
		}
	}
	return out
}

// checkStarting reports whether a running counted service's health check
// has had no verdict yet.
func checkStarting(names []string, sts []mgmt.ServiceStatus) bool {
	for _, s := range counted(names, sts) {
		if s.State == mgmt.StateRunning && s.Health != nil && s.Health.State == string(health.Starting) {
			return true
		}
	}
	return false
}

// passedInARow reports whether every running counted service's health
// check has passed at least n probes in a row.
func passedInARow(names []string, sts []mgmt.ServiceStatus, n int) bool {
	for _, s := range counted(names, sts) {
		if s.State == mgmt.StateRunning && s.Health != nil && s.Health.Passes < n {
			return false
		}
	}
	return true
}

// unhealthy returns why the services are not healthy, or "". At the end
// of the window every counted service must be running.
func unhealthy(names []string, sts []mgmt.ServiceStatus, end bool) string {
	byName := make(map[string]mgmt.ServiceStatus, len(sts))
	for _, s := range sts {
		byName[s.Name] = s
	}
	for _, n := range names {
		s, ok := byName[n]
		if !ok || s.State == mgmt.StateHeld {
			continue
		}
		if e := s.LastExit; e != nil && !e.Requested {
			return fmt.Sprintf("service %s: %s after %s (restarts %d)", n, e.String(), e.Ran().Round(time.Millisecond), s.Restarts)
		}
		if h := s.Health; h != nil && s.State == mgmt.StateRunning {
			switch {
			case h.State == string(health.Unhealthy):
				return fmt.Sprintf("service %s: health check unhealthy after %d failed probes: %s", n, h.Failures, h.LastError)
			case end && h.State != string(health.Healthy):
				why := "no probe has succeeded yet"
				if h.LastError != "" {
					why = "last probe: " + h.LastError
				}
				return fmt.Sprintf("service %s: health check still %s at the end of the health window (%s)", n, h.State, why)
			}
		}
		if s.Restarts > 0 {
			return fmt.Sprintf("service %s restarted %d times", n, s.Restarts)
		}
		switch s.State {
		case mgmt.StateBackoff, mgmt.StateExited:
			return fmt.Sprintf("service %s is %s", n, s.State)
		case mgmt.StateRunning, mgmt.StateStopped:
		default:
			if end {
				return fmt.Sprintf("service %s is still %s at the end of the health window (%s)", n, s.State, s.Reason)
			}
		}
	}
	return ""
}
