package manage

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ingotdev/ingot/appliance/health"
	"github.com/ingotdev/ingot/mgmt"
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

func TestWatchHealth(t *testing.T) {
	healthy := func() []mgmt.ServiceStatus { return []mgmt.ServiceStatus{{Name: "web", State: mgmt.StateRunning}} }
	open := func() bool { return true }
	if got := watchHealth(context.Background(), 50*time.Millisecond, 10*time.Millisecond, []string{"web"}, healthy, open); got != "" {
		t.Errorf("watchHealth(healthy) = %q, want \"\"", got)
	}
	closed := func() bool { return false }
	if got := watchHealth(context.Background(), 50*time.Millisecond, 10*time.Millisecond, []string{"web"}, healthy, closed); !strings.Contains(got, "agent is not listening") {
		t.Errorf("watchHealth(agent gone) = %q, want the agent named", got)
	}
	n := 0
	flaky := func() []mgmt.ServiceStatus {
		n++
		if n > 2 {
			return []mgmt.ServiceStatus{{Name: "web", State: mgmt.StateRunning, Restarts: 1}}
		}
		return healthy()
	}
	if got := watchHealth(context.Background(), time.Second, 10*time.Millisecond, []string{"web"}, flaky, open); !strings.Contains(got, "restarted") {
		t.Errorf("watchHealth(restart mid-window) = %q, want a restart", got)
	}
}
