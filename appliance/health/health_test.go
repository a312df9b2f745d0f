package health

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ingotdev/ingot/packer/format/spec"
)

func TestProbeHTTP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.Write([]byte(strings.Repeat("x", 1<<20))) // more than a probe reads
		case "/moved":
			http.Redirect(w, r, "/nowhere", http.StatusFound)
		case "/slow":
			time.Sleep(2 * time.Second)
		default:
			http.Error(w, "down", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	for _, tc := range []struct {
		path, wantErr string
	}{
		{"/ok", ""},
		{"/moved", ""},
		{"/down", "HTTP 503 Service Unavailable"},
		{"/slow", "no answer within the timeout"},
	} {
		err := Probe(t.Context(), spec.Health{HTTP: srv.URL + tc.path, TimeoutMillis: 300})
		if (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("Probe(%s) = %v, want %q", tc.path, err, tc.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), srv.URL+tc.path) {
			t.Errorf("Probe(%s) = %v, want the URL named", tc.path, err)
		}
	}
}

func TestProbeTCP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := Probe(t.Context(), spec.Health{TCP: addr}); err != nil {
		t.Errorf("Probe(listening %s) = %v", addr, err)
	}
	l.Close()
	if err := Probe(t.Context(), spec.Health{TCP: addr}); err == nil || !strings.Contains(err.Error(), "connect "+addr) {
		t.Errorf("Probe(closed %s) = %v, want a connect error naming it", addr, err)
	}
}

func TestObserve(t *testing.T) {
	fail := errors.New("boom")
	now := time.Now()
	var s Status
	steps := []struct {
		err     error
		state   State
		changed bool
		passes  int // in a row, after this probe
	}{
		{fail, Starting, true, 0},
		{fail, Starting, false, 0},
		{nil, Healthy, true, 1},
		{nil, Healthy, false, 2},
		{fail, Healthy, false, 0},
		{fail, Healthy, false, 0},
		{fail, Unhealthy, true, 0},
		{fail, Unhealthy, false, 0},
		{nil, Healthy, true, 1},
		{nil, Healthy, false, 2},
	}
	for i, st := range steps {
		var changed bool
		s, changed = s.Observe(st.err, now, 3)
		if s.State != st.state || changed != st.changed || s.Passes != st.passes {
			t.Errorf("step %d: state %s changed %v passes %d, want %s %v %d", i, s.State, changed, s.Passes, st.state, st.changed, st.passes)
		}
	}
	if s.Failures != 0 || s.LastError != "" || !s.LastProbe.Equal(now) {
		t.Errorf("after a success: %+v, want no failures or error", s)
	}
}

func TestRun(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(t.Context())
	results := make(chan error)
	done := make(chan struct{})
	go func() {
		Run(ctx, spec.Health{HTTP: srv.URL, IntervalMillis: 1000}, 10*time.Millisecond, results)
		close(done)
	}()
	select {
	case err := <-results:
		if err != nil {
			t.Errorf("first probe = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no probe result")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}
