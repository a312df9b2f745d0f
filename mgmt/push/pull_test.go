package push

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/mgmt"
)

// pullAgent plays an appliance that pulls: status answers from the boot
// before the pull until the pull was asked, then from the new boot given
// by after (one status per call, the last repeated).
type pullAgent struct {
	mu       sync.Mutex
	features []string
	before   mgmt.Status
	after    []mgmt.Status
	result   mgmt.PullResult
	pulls    []mgmt.PullRequest
	other    []string
}

func (a *pullAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	w.Header().Set("Content-Type", mgmt.ContentTypeJSON)
	switch {
	case r.Method == http.MethodGet && r.URL.Path == mgmt.PathStatus:
		st := a.before
		if len(a.pulls) > 0 && len(a.after) > 0 {
			st = a.after[0]
			if len(a.after) > 1 {
				a.after = a.after[1:]
			}
		}
		st.Features = a.features
		_ = json.NewEncoder(w).Encode(st)
	case r.Method == http.MethodPost && r.URL.Path == mgmt.PathUpdatePull:
		var req mgmt.PullRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, `{"error":"bad body"}`, http.StatusBadRequest)
			return
		}
		a.pulls = append(a.pulls, req)
		_ = json.NewEncoder(w).Encode(a.result)
	default:
		a.other = append(a.other, r.Method+" "+r.URL.Path)
		http.Error(w, `{"error":"test agent takes nothing else"}`, http.StatusTeapot)
	}
}

func testClient(t *testing.T, h http.Handler) *mgmt.Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := mgmt.NewClient("tcp://"+strings.TrimPrefix(srv.URL, "http://"), "test-token")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func newPullAgent() *pullAgent {
	t0 := time.Date(2026, 12, 4, 20, 0, 0, 0, time.UTC)
	return &pullAgent{
		features: []string{mgmt.FeatureRollback, mgmt.FeatureUpdatePull, mgmt.FeatureSignedOnly},
		before: mgmt.Status{Name: "hello", BuildID: "b-7", Release: 7, Arch: "amd64", Slot: "a", StartedAt: t0, UptimeSeconds: 100,
			SlotState: &mgmt.SlotState{Active: "a"}},
		result: mgmt.PullResult{Release: mgmt.ReleaseInfo{Ref: "localhost:5000/fleet/hello:v8", Digest: "sha256:" + strings.Repeat("8", 64), Release: 8, BuildID: "b-8"},
			Slot: "b", BytesFetched: 3 << 20, BytesReused: 40 << 20, BytesRoot: 43 << 20},
	}
}

// TestPullWaitsForConfirmation: Pull asks once, with the flags given,
// builds nothing, and returns when the new boot runs the pulled build
// from its slot with the trial confirmed.
func TestPullWaitsForConfirmation(t *testing.T) {
	a := newPullAgent()
	t1 := a.before.StartedAt.Add(time.Minute)
	a.after = []mgmt.Status{
		a.before, // still the old boot
		{BuildID: "b-8", Slot: "b", Trial: true, StartedAt: t1, SlotState: &mgmt.SlotState{Active: "a", Trial: "b"}},
		{BuildID: "b-8", Release: 8, Slot: "b", Trial: true, StartedAt: t1, SlotState: &mgmt.SlotState{Active: "b"}},
	}
	u := New(testClient(t, a), WithPollInterval(time.Millisecond), WithWaitTimeout(time.Minute))
	req := mgmt.PullRequest{Ref: "localhost:5000/fleet/hello:v8", AllowDowngrade: true, Retry: true}
	rep, err := u.Pull(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Result != a.result || rep.Status.BuildID != "b-8" || rep.Status.SlotState.Active != "b" {
		t.Errorf("Pull = %+v, want the agent's result and the confirmed status", rep)
	}
	if len(a.pulls) != 1 || a.pulls[0] != req || len(a.other) != 0 {
		t.Errorf("the agent got pulls %+v and %v, want one pull %+v and nothing else", a.pulls, a.other, req)
	}
	var names []string
	for _, s := range rep.Steps {
		names = append(names, s.Name)
	}
	if strings.Join(names, ",") != "status,pull,reboot" {
		t.Errorf("steps %v, want status, pull, reboot", names)
	}
}

// TestPullTrialFailed: the appliance comes back on its old slot; Pull
// reports the trial's failure with slot.json's reason.
func TestPullTrialFailed(t *testing.T) {
	a := newPullAgent()
	a.after = []mgmt.Status{{BuildID: "b-7", Slot: "a", StartedAt: a.before.StartedAt.Add(time.Minute),
		SlotState: &mgmt.SlotState{Active: "a", LastFailed: &mgmt.SlotFailure{Slot: "b", Reason: "trial health check: service web is exited"}}}}
	u := New(testClient(t, a), WithPollInterval(time.Millisecond), WithWaitTimeout(time.Minute))
	_, err := u.Pull(t.Context(), mgmt.PullRequest{Ref: "localhost:5000/fleet/hello:v8"})
	if err == nil || !strings.Contains(err.Error(), "came back on slot a, not b: the trial failed: trial health check: service web is exited") {
		t.Errorf("Pull with a failed trial = %v", err)
	}
}

// TestPullNeedsPuller: an agent without update-pull is told so, and asked
// nothing.
func TestPullNeedsPuller(t *testing.T) {
	a := newPullAgent()
	a.features = []string{mgmt.FeatureUpdateRoot, mgmt.FeatureUpdateBoot, mgmt.FeatureRollback}
	_, err := New(testClient(t, a)).Pull(t.Context(), mgmt.PullRequest{Ref: "localhost:5000/fleet/hello:v8"})
	if err == nil || !strings.Contains(err.Error(), "does not pull releases") || len(a.pulls) != 0 {
		t.Errorf("Pull from an agent without a puller = %v (pulls %v)", err, a.pulls)
	}
}

// TestUpdateRefusesSignedOnly: push stops after status, before building,
// when the appliance installs only signed releases, with the message that
// says how to install one.
func TestUpdateRefusesSignedOnly(t *testing.T) {
	a := newPullAgent()
	c := testClient(t, a)
	cfg, err := config.Load("../../examples/hello/ingot.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for name, run := range map[string]func() error{
		"Update":    func() error { _, err := New(c).Update(t.Context(), cfg); return err },
		"PushImage": func() error { _, err := New(c).PushImage(t.Context(), "/nonexistent.img", "amd64", ""); return err },
	} {
		err := run()
		if !errors.Is(err, mgmt.ErrSignedOnly) || !strings.Contains(err.Error(), "install with `ingot update -from REF`") {
			t.Errorf("%s on a signed-only appliance = %v, want mgmt.ErrSignedOnly", name, err)
		}
	}
	if len(a.other) != 0 || len(a.pulls) != 0 {
		t.Errorf("the agent got %v after status", a.other)
	}
}
