package supervise

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ingotdev/ingot/appliance/health"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// TestHealthCheck runs two services probed against a server whose answer
// the test switches: both turn healthy, then unhealthy; the one with
// restart: true is ended and restarted as a failure, the other keeps
// running.
func TestHealthCheck(t *testing.T) {
	var answer atomic.Int32
	answer.Store(http.StatusOK)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(answer.Load()))
	}))
	defer srv.Close()
	check := spec.Health{HTTP: srv.URL + "/healthz", IntervalMillis: 1000, TimeoutMillis: 500, Retries: 2}
	restarting := check
	restarting.Restart = true
	svc := func(name string, h spec.Health) spec.Service {
		s := sh(name, "exec sleep 1000")
		s.Health = &h
		return s
	}
	s := start(t, []spec.Service{svc("watched", check), svc("restarted", restarting), sh("unchecked", "exec sleep 1000")},
		WithBackoff(10*time.Millisecond, 20*time.Millisecond, time.Minute))
	healthOf := func(name string) health.State {
		if h := status(t, s, name).Health; h != nil {
			return health.State(h.State)
		}
		return ""
	}
	for _, name := range []string{"watched", "restarted"} {
		waitFor(t, 10*time.Second, name+" to be healthy", func() bool { return healthOf(name) == health.Healthy })
		logLine(t, s, name, "health: healthy")
	}
	if h := status(t, s, "unchecked").Health; h != nil {
		t.Errorf("unchecked service has health %+v, want none", h)
	}
	pid := status(t, s, "restarted").PID

	answer.Store(http.StatusServiceUnavailable)
	waitFor(t, 15*time.Second, "watched to be unhealthy", func() bool { return healthOf("watched") == health.Unhealthy })
	if h := status(t, s, "watched").Health; h.Failures < 2 || h.LastError == "" {
		t.Errorf("watched health = %+v, want its failures and the last error", h)
	}
	waitFor(t, 15*time.Second, "restarted to be restarted", func() bool { return status(t, s, "restarted").Restarts >= 1 })
	st := status(t, s, "restarted")
	if e := st.LastExit; e == nil || !e.Unhealthy || e.Requested || e.Signal != "SIGTERM" {
		t.Errorf("restarted's last exit = %+v, want ended by SIGTERM as unhealthy, not requested", e)
	}
	if st.PID == pid {
		t.Errorf("restarted still runs pid %d", pid)
	}
	logLine(t, s, "restarted", "health: ending pid ")
	if w := status(t, s, "watched"); w.Restarts != 0 || w.State != mgmt.StateRunning {
		t.Errorf("watched (no restart) = %+v, want running, never restarted", w)
	}

	// Healthy again: the new run of restarted starts over.
	answer.Store(http.StatusOK)
	waitFor(t, 10*time.Second, "restarted to be healthy again", func() bool { return healthOf("restarted") == health.Healthy })
	waitFor(t, 10*time.Second, "watched to be healthy again", func() bool { return healthOf("watched") == health.Healthy })
}
