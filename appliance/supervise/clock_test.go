package supervise

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// testClock is a Clock whose state the test changes.
type testClock struct {
	mu      sync.Mutex
	synced  bool
	why     string
	changed chan struct{}
}

func newTestClock(why string) *testClock { return &testClock{why: why, changed: make(chan struct{})} }

func (c *testClock) Synced() (bool, string, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.synced, c.why, c.changed
}

func (c *testClock) set(synced bool, why string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.synced, c.why = synced, why
	close(c.changed)
	c.changed = make(chan struct{})
}

// TestWaitForClock: a wait_for_clock service is held, saying why, until
// the clock is synced; the reason follows the clock's; a start on request
// is refused; a service without it runs, and one after it waits for it.
func TestWaitForClock(t *testing.T) {
	clock := newTestClock("ntp 10.0.2.2:123: no answer")
	timed := sh("timed", "exec sleep 1000")
	timed.WaitForClock = true
	plain := sh("plain", "exec sleep 1000")
	later := sh("later", "exec sleep 1000")
	later.After = []string{"timed"}
	s := start(t, []spec.Service{timed, plain, later}, WithClock(clock))
	waitFor(t, 5*time.Second, "plain to run", func() bool { return status(t, s, "plain").State == mgmt.StateRunning })
	const want = "waiting for the clock (wait_for_clock): ntp 10.0.2.2:123: no answer"
	waitFor(t, 5*time.Second, "timed to say why it waits", func() bool { return status(t, s, "timed").Reason == want })
	if st := status(t, s, "timed"); st.State != mgmt.StateHeld || st.PID != 0 {
		t.Errorf("timed = %+v, want held with no process", st)
	}
	waitFor(t, 5*time.Second, "later to wait for timed", func() bool {
		return strings.Contains(status(t, s, "later").Reason, "waiting for timed (held: waiting for the clock")
	})
	if st := status(t, s, "later"); st.State != mgmt.StateWaiting {
		t.Errorf("later = %s %q, want waiting for timed", st.State, st.Reason)
	}
	if err := s.Start(context.Background(), "timed"); !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), "waiting for the clock") {
		t.Errorf("Start(timed) = %v, want ErrHeld saying it waits for the clock", err)
	}
	if l := logLine(t, s, "timed", "waiting for the clock"); !strings.Contains(l, "no answer") {
		t.Errorf("timed's log says %q, want why it waits", l)
	}
	clock.set(false, "ntp 10.0.2.2:123: connection refused")
	waitFor(t, 5*time.Second, "the reason to follow the clock", func() bool {
		return strings.HasSuffix(status(t, s, "timed").Reason, "connection refused")
	})
	clock.set(true, "")
	waitFor(t, 5*time.Second, "timed to run once synced", func() bool { return status(t, s, "timed").State == mgmt.StateRunning })
	waitFor(t, 5*time.Second, "later to run after timed", func() bool { return status(t, s, "later").State == mgmt.StateRunning })
	if st := status(t, s, "timed"); st.Reason != "" {
		t.Errorf("timed runs with reason %q, want none", st.Reason)
	}
}

// TestWaitForClockWithoutClock: without WithClock nothing holds it.
func TestWaitForClockWithoutClock(t *testing.T) {
	timed := sh("timed", "exec sleep 1000")
	timed.WaitForClock = true
	s := start(t, []spec.Service{timed})
	waitFor(t, 5*time.Second, "timed to run", func() bool { return status(t, s, "timed").State == mgmt.StateRunning })
}
