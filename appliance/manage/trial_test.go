package manage

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ingotdev/ingot/appliance/health"
	"github.com/ingotdev/ingot/appliance/supervise"
)

func TestUnhealthy(t *testing.T) {
	crash := &supervise.Exit{Code: 1, Ran: 50 * time.Millisecond}
	stopped := &supervise.Exit{Code: 0, Requested: true}
	for _, tc := range []struct {
		name string
		sts  []supervise.Status
		end  bool
		want string // substring; "" means healthy
	}{
		{"running", []supervise.Status{{Name: "web", State: supervise.StateRunning}}, true, ""},
		{"crashed once", []supervise.Status{{Name: "web", State: supervise.StateBackoff, Restarts: 0, LastExit: crash}}, false, "service web: exit status 1"},
		{"restarted", []supervise.Status{{Name: "web", State: supervise.StateRunning, Restarts: 1}}, false, "restarted 1 times"},
		{"held does not count", []supervise.Status{{Name: "web", State: supervise.StateHeld}}, true, ""},
		{"stopped on request", []supervise.Status{{Name: "web", State: supervise.StateStopped, LastExit: stopped}}, true, ""},
		{"waiting mid-window", []supervise.Status{{Name: "web", State: supervise.StateWaiting}}, false, ""},
		{"waiting at the end", []supervise.Status{{Name: "web", State: supervise.StateWaiting, Reason: "after db"}}, true, "still waiting"},
		{"other policies ignored", []supervise.Status{{Name: "job", State: supervise.StateExited, LastExit: crash}}, true, ""},
		{"healthy check", []supervise.Status{{Name: "web", State: supervise.StateRunning, Health: &health.Status{State: health.Healthy}}}, true, ""},
		{"starting check mid-window", []supervise.Status{{Name: "web", State: supervise.StateRunning, Health: &health.Status{State: health.Starting, Failures: 1, LastError: "GET x: HTTP 503"}}}, false, ""},
		{"starting check at the end", []supervise.Status{{Name: "web", State: supervise.StateRunning, Health: &health.Status{State: health.Starting, Failures: 1, LastError: "GET x: HTTP 503"}}}, true, "health check still starting at the end of the health window (last probe: GET x: HTTP 503)"},
		{"never probed at the end", []supervise.Status{{Name: "web", State: supervise.StateRunning, Health: &health.Status{State: health.Starting}}}, true, "no probe has succeeded yet"},
		{"unhealthy mid-window", []supervise.Status{{Name: "web", State: supervise.StateRunning, Health: &health.Status{State: health.Unhealthy, Failures: 3, LastError: "connect 127.0.0.1:80: refused"}}}, false, "health check unhealthy after 3 failed probes: connect 127.0.0.1:80: refused"},
		{"ended as unhealthy", []supervise.Status{{Name: "web", State: supervise.StateBackoff, LastExit: &supervise.Exit{Code: -1, Signal: "SIGTERM", Unhealthy: true}}}, false, "(ended as unhealthy)"},
	} {
		got := unhealthy([]string{"web"}, tc.sts, tc.end)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: unhealthy(web, %+v, end=%v) = %q, want %q", tc.name, tc.sts, tc.end, got, tc.want)
		}
	}
}

func TestWatchHealth(t *testing.T) {
	healthy := func() []supervise.Status { return []supervise.Status{{Name: "web", State: supervise.StateRunning}} }
	open := make(chan struct{})
	if got := watchHealth(context.Background(), 50*time.Millisecond, 10*time.Millisecond, []string{"web"}, healthy, open); got != "" {
		t.Errorf("watchHealth(healthy) = %q, want \"\"", got)
	}
	closed := make(chan struct{})
	close(closed)
	if got := watchHealth(context.Background(), time.Second, 10*time.Millisecond, []string{"web"}, healthy, closed); !strings.Contains(got, "agent stopped") {
		t.Errorf("watchHealth(agent gone) = %q, want the agent named", got)
	}
	n := 0
	flaky := func() []supervise.Status {
		n++
		if n > 2 {
			return []supervise.Status{{Name: "web", State: supervise.StateRunning, Restarts: 1}}
		}
		return healthy()
	}
	if got := watchHealth(context.Background(), time.Second, 10*time.Millisecond, []string{"web"}, flaky, open); !strings.Contains(got, "restarted") {
		t.Errorf("watchHealth(restart mid-window) = %q, want a restart", got)
	}
}
