package manage

import (
	"context"
	"fmt"
	"time"

	"github.com/ingotdev/ingot/appliance/health"
	"github.com/ingotdev/ingot/appliance/stage1"
	"github.com/ingotdev/ingot/appliance/update"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/slot"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// healthPoll is how often the services are looked at during the window;
// a crash between two looks still shows as a restart.
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
}

// checkTrial watches a trial boot for the health window, then confirms
// it, or records why it failed and reboots so the loader falls back.
func checkTrial(ctx context.Context, d trialDeps) {
	d.sys.Printf("manage: trial boot of slot %s: confirming after %s if every restart: always service stays up (and healthy, with a health check) and the agent serves", d.booted, d.window)
	status := func() []mgmt.ServiceStatus { return d.sys.Status().Services }
	reason := watchHealth(ctx, d.window, healthPoll, alwaysServices(d.spec), status, d.serving)
	if ctx.Err() != nil {
		return // shutting down: the trial was neither proven nor failed
	}
	if reason == "" {
		st, err := d.confirm()
		if err != nil {
			d.sys.Printf("manage: confirming the trial of slot %s: %v", d.booted, err)
			return
		}
		d.sys.Printf("manage: trial of slot %s confirmed: slot %s is active", d.booted, st.Active)
		return
	}
	d.sys.Printf("manage: trial of slot %s failed: %s; rebooting to fall back", d.booted, reason)
	if err := recordFailure(d.bootDir, d.booted, reason); err != nil {
		// The loader falls back anyway (the trial has no tries left); it
		// just cannot say why.
		d.sys.Printf("manage: recording the failed trial: %v", err)
	}
	if err := d.sys.Shutdown(context.Background(), true); err != nil {
		d.sys.Printf("manage: reboot after the failed trial: %v", err)
	}
}

// recordFailure cancels the trial of booted in slot.json and says why, so
// the next boot runs the active slot and status shows the reason.
func recordFailure(bootDir string, booted slot.Name, reason string) error {
	s, err := update.ReadState(bootDir)
	if err != nil {
		return err
	}
	if s.Trial != booted {
		return fmt.Errorf("slot.json no longer has slot %s on trial (active %q, trial %q)", booted, s.Active, s.Trial)
	}
	next := slot.State{Active: s.Active, LastFailed: &slot.Failure{Slot: booted, Reason: "trial health check: " + reason}}
	return slot.Save(bootDir, next)
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

// watchHealth polls the services for window and returns why the trial
// failed, or "" when it is healthy: every service in names stayed up with
// no restart, never turned unhealthy, is running (and, with a health
// check, healthy) at the end, and the agent still serves. Services
// held back (a condition not met, perm missing) do not count: they would
// not run on the old slot either.
func watchHealth(ctx context.Context, window, poll time.Duration, names []string, status func() []mgmt.ServiceStatus, serving func() bool) string {
	deadline := time.NewTimer(window)
	defer deadline.Stop()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ""
		case <-tick.C:
			if r := unhealthy(names, status(), false); r != "" {
				return r
			}
		case <-deadline.C:
			if r := unhealthy(names, status(), true); r != "" {
				return r
			}
			if !serving() {
				return "the management agent is not listening (a listener did not bind again)"
			}
			return ""
		}
	}
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
