package push

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ingotdev/ingot/builder/assemble"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/internal/vmtest"
	"github.com/ingotdev/ingot/mgmt"
)

// releaseAgent answers status as an appliance running release 5 and
// records every other request; it accepts nothing.
type releaseAgent struct {
	mu    sync.Mutex
	other []*http.Request
}

func (a *releaseAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == mgmt.PathStatus {
		w.Header().Set("Content-Type", mgmt.ContentTypeJSON)
		_ = json.NewEncoder(w).Encode(mgmt.Status{Name: "hello", BuildID: "old", Release: 5, Arch: "amd64",
			Target: string(config.TargetVMAmd64), Slot: "a", Features: []string{mgmt.FeatureUpdateRoot, mgmt.FeatureUpdateBoot}})
		return
	}
	a.mu.Lock()
	a.other = append(a.other, r.Clone(r.Context()))
	a.mu.Unlock()
	http.Error(w, `{"error":"test agent takes nothing"}`, http.StatusTeapot)
}

func (a *releaseAgent) requests() []*http.Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.other
}

// TestUpdateRefusesDowngradeEarly: push refuses a lower release before it
// builds or sends anything (the agent refuses it too, see the agent's
// TestUpdateRootRefusesDowngrade), and sends the release and the
// permission when the operator allows the downgrade.
func TestUpdateRefusesDowngradeEarly(t *testing.T) {
	vmtest.Kernel(t, "amd64")
	agent := &releaseAgent{}
	srv := httptest.NewServer(agent)
	defer srv.Close()
	c, err := mgmt.NewClient("tcp://"+strings.TrimPrefix(srv.URL, "http://"), "test-token")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg, err := config.Load("../../examples/hello/ingot.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Release = 3
	const want = "release 3 is older than the running release 5"

	if _, err := New(c).Update(t.Context(), cfg); !errors.Is(err, mgmt.ErrRejected) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Update(release 3) = %v, want ErrRejected saying %q", err, want)
	}
	if got := agent.requests(); len(got) != 0 {
		t.Fatalf("Update(release 3) sent %s %s; want nothing after status", got[0].Method, got[0].URL.Path)
	}

	dir := t.TempDir()
	img := filepath.Join(dir, "hello.img")
	if _, err := assemble.Image(t.Context(), cfg, config.TargetVMAmd64, img, assemble.WithCacheDir(filepath.Join(dir, "cache"))); err != nil {
		t.Fatal(err)
	}
	if _, err := New(c).PushImage(t.Context(), img, "amd64", ""); !errors.Is(err, mgmt.ErrRejected) || !strings.Contains(err.Error(), want) {
		t.Fatalf("PushImage(release 3 image) = %v, want ErrRejected saying %q", err, want)
	}
	if got := agent.requests(); len(got) != 0 {
		t.Fatalf("PushImage(release 3 image) sent %s %s; want nothing after status", got[0].Method, got[0].URL.Path)
	}

	if _, err := New(c, WithAllowDowngrade()).PushImage(t.Context(), img, "amd64", ""); err == nil {
		t.Fatal("PushImage to an agent that takes nothing succeeded")
	}
	got := agent.requests()
	if len(got) != 1 || got[0].Method != http.MethodPut || got[0].URL.Path != mgmt.PathUpdateRoot {
		t.Fatalf("allowed downgrade sent %d requests, want one PUT %s", len(got), mgmt.PathUpdateRoot)
	}
	if h := got[0].Header; h.Get(mgmt.HeaderRelease) != "3" || h.Get(mgmt.HeaderAllowDowngrade) != "1" {
		t.Errorf("root upload headers %s=%q %s=%q, want 3 and 1", mgmt.HeaderRelease, h.Get(mgmt.HeaderRelease), mgmt.HeaderAllowDowngrade, h.Get(mgmt.HeaderAllowDowngrade))
	}
}
