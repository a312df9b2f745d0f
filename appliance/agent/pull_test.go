package agent_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ingotdev/ingot/appliance/agent"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/slot"
)

// fakePuller records what it was asked and answers as told.
type fakePuller struct {
	mu     sync.Mutex
	pulls  []mgmt.PullRequest
	auths  []mgmt.RegistryAuth
	result mgmt.PullResult
	err    error
}

var testPullStatus = mgmt.PullStatus{
	From: "localhost:5000/fleet/hello:stable", CheckSeconds: 3600,
	LastCheck: time.Date(2026, 12, 4, 20, 0, 0, 0, time.UTC), NextCheck: time.Date(2026, 12, 4, 21, 0, 0, 0, time.UTC),
	Available:     &mgmt.ReleaseInfo{Ref: "localhost:5000/fleet/hello:stable", Digest: "sha256:" + strings.Repeat("1", 64), Release: 7},
	LastFailure:   &mgmt.PullFailure{Digest: "sha256:" + strings.Repeat("2", 64), Release: 6, At: time.Date(2026, 12, 4, 19, 0, 0, 0, time.UTC), Reason: "trial health check failed"},
	FailedDigests: []string{"sha256:" + strings.Repeat("2", 64)},
}

func (f *fakePuller) Status() mgmt.PullStatus { return testPullStatus }

func (f *fakePuller) PullNow(_ context.Context, req mgmt.PullRequest) (mgmt.PullResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pulls = append(f.pulls, req)
	return f.result, f.err
}

func (f *fakePuller) SetRegistryAuth(_ context.Context, a mgmt.RegistryAuth) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.auths = append(f.auths, a)
	return nil
}

func (f *fakePuller) calls() (int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.pulls), len(f.auths)
}

func newPullEnv(t *testing.T) (*env, *fakePuller) {
	p := &fakePuller{}
	return newEnvWith(t, func(d *agent.Deps) { d.Puller = p }), p
}

// raw sends one request with the bearer token (when tok is not empty)
// and returns the status and body.
func (e *env) raw(method, path, tok, body string) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, "http://"+e.addr+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set(mgmt.HeaderAuthorization, mgmt.BearerPrefix+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestPullRoutes(t *testing.T) {
	ctx := context.Background()
	e, p := newPullEnv(t)
	c := e.client(token)

	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pull == nil || st.Pull.From != testPullStatus.From || st.Pull.Available == nil || st.Pull.Available.Release != 7 ||
		len(st.Pull.FailedDigests) != 1 || st.Pull.LastFailure == nil || st.Pull.LastFailure.Reason != "trial health check failed" {
		t.Errorf("Status.Pull = %+v, want the puller's status", st.Pull)
	}
	for _, f := range []string{mgmt.FeatureUpdatePull, mgmt.FeatureSignedOnly, mgmt.FeatureRollback} {
		if !st.HasFeature(f) {
			t.Errorf("Features = %v, want %s", st.Features, f)
		}
	}
	for _, f := range []string{mgmt.FeatureUpdateRoot, mgmt.FeatureUpdateBoot} {
		if st.HasFeature(f) {
			t.Errorf("Features = %v with a Puller, want no %s", st.Features, f)
		}
	}

	ref := "localhost:5000/fleet/hello@sha256:" + strings.Repeat("3", 64)
	p.result = mgmt.PullResult{Release: mgmt.ReleaseInfo{Ref: ref, Digest: "sha256:" + strings.Repeat("3", 64), Release: 8, BuildID: "b-8"},
		Slot: "b", BytesFetched: 1000, BytesReused: 9000, BytesResumed: 24, BytesRoot: 10024}
	res, err := c.Pull(ctx, mgmt.PullRequest{Ref: ref, AllowDowngrade: true, Retry: true})
	if err != nil {
		t.Fatal(err)
	}
	if res != p.result {
		t.Errorf("Pull = %+v, want %+v", res, p.result)
	}
	if len(p.pulls) != 1 || p.pulls[0] != (mgmt.PullRequest{Ref: ref, AllowDowngrade: true, Retry: true}) {
		t.Errorf("the puller was asked %+v", p.pulls)
	}
	// The puller's error kind is the status.
	p.err = fmt.Errorf("release 3 is older than the running release 8: %w", mgmt.ErrRejected)
	if _, err := c.Pull(ctx, mgmt.PullRequest{Ref: "localhost:5000/fleet/hello:old"}); !errors.Is(err, mgmt.ErrRejected) ||
		!strings.Contains(err.Error(), "pull localhost:5000/fleet/hello:old: release 3 is older") || !strings.Contains(err.Error(), "HTTP 422") {
		t.Errorf("Pull refused by the puller = %v, want its reason as 422", err)
	}
	p.err = nil

	if err := c.SetRegistryAuth(ctx, mgmt.RegistryAuth{Registry: "localhost:5000", Username: "fleet", Password: "s3cret"}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetRegistryAuth(ctx, mgmt.RegistryAuth{Registry: "localhost:5000"}); err != nil {
		t.Fatal(err)
	}
	if len(p.auths) != 2 || p.auths[0].Password != "s3cret" || !p.auths[1].Remove() {
		t.Errorf("the puller got %+v", p.auths)
	}
	if strings.Contains(e.logged.String(), "s3cret") {
		t.Errorf("the agent logged the password: %s", e.logged.String())
	}
	if code, body := e.raw(http.MethodPut, mgmt.PathRegistryAuth, token, `{"registry":"r.example","username":"u","password":"p"}`); code != http.StatusNoContent || body != "" {
		t.Errorf("PUT %s = %d %q, want 204 and no body", mgmt.PathRegistryAuth, code, body)
	}
	pulls, auths := p.calls()

	// Bad requests never reach the puller.
	for _, tc := range []struct {
		method, path, body string
		code               int
		text               string
	}{
		{http.MethodPost, mgmt.PathUpdatePull, `{"ref":"localhost:5000/h:v1","force":true}`, 400, `unknown field`},
		{http.MethodPost, mgmt.PathUpdatePull, `{"ref":"localhost:5000/h:v1"} {}`, 400, "data after the JSON object"},
		{http.MethodPost, mgmt.PathUpdatePull, `{"ref":"localhost:5000/h:v1"`, 400, "request body"},
		{http.MethodPost, mgmt.PathUpdatePull, `{"ref":"hello:v1"}`, 400, "pull: ref: "},
		{http.MethodPost, mgmt.PathUpdatePull, `{"ref":""}`, 400, "pull: ref: is empty"},
		{http.MethodPost, mgmt.PathUpdatePull, `{"ref":"` + strings.Repeat("x", mgmt.MaxPullBodyBytes) + `"}`, 413, "request over 65536 bytes"},
		{http.MethodPut, mgmt.PathRegistryAuth, `{"registry":"r.example","username":"u"}`, 400, "give a username and a password, or neither"},
		{http.MethodPut, mgmt.PathRegistryAuth, `{"registry":"r.example/x"}`, 400, `want HOST or HOST:PORT`},
		{http.MethodPut, mgmt.PathRegistryAuth, `{"registry":"r.example","token":"x"}`, 400, `unknown field`},
		{http.MethodGet, mgmt.PathUpdatePull, ``, 404, "no such endpoint"},
	} {
		code, body := e.raw(tc.method, tc.path, token, tc.body)
		if code != tc.code || !strings.Contains(body, tc.text) {
			t.Errorf("%s %s %.50s = %d %s, want %d with %q", tc.method, tc.path, tc.body, code, body, tc.code, tc.text)
		}
	}
	// Without the token, or with the web page's session, nothing either.
	for _, tc := range []struct{ method, path, body string }{
		{http.MethodPost, mgmt.PathUpdatePull, `{"ref":"localhost:5000/h:v1"}`},
		{http.MethodPut, mgmt.PathRegistryAuth, `{"registry":"r.example","username":"u","password":"p"}`},
	} {
		if code, _ := e.raw(tc.method, tc.path, "", tc.body); code != http.StatusUnauthorized {
			t.Errorf("%s %s without a token = %d, want 401", tc.method, tc.path, code)
		}
		if code, _ := e.raw(tc.method, tc.path, "wrong-token-wrong-token", tc.body); code != http.StatusUnauthorized {
			t.Errorf("%s %s with a wrong token = %d, want 401", tc.method, tc.path, code)
		}
	}
	u := e.ui()
	if resp := u.login(token); u.cookie == nil {
		t.Fatalf("web login = %d, no session", resp.StatusCode)
	}
	csrf := u.csrf()
	for _, path := range []string{"/ui/api/update/pull", "/ui/api/update/registry-auth", mgmt.PathUpdatePull} {
		resp, body := u.do(http.MethodPost, path, `{"ref":"localhost:5000/h:v1"}`, map[string]string{"X-Ingot-Csrf": csrf})
		if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("POST %s with a web session = %d %s, want 404 or 401", path, resp.StatusCode, body)
		}
	}
	if np, na := p.calls(); np != pulls || na != auths {
		t.Errorf("refused requests reached the puller: %d pulls, %d auths, want %d, %d", np, na, pulls, auths)
	}
}

// TestPullUnsupported: an image without release keys has no Puller; the
// routes answer 501 and status has no pull state.
func TestPullUnsupported(t *testing.T) {
	e := newEnv(t)
	c := e.client(token)
	if _, err := c.Pull(context.Background(), mgmt.PullRequest{Ref: "localhost:5000/h:v1"}); !errors.Is(err, mgmt.ErrUnsupported) {
		t.Errorf("Pull without a Puller = %v, want ErrUnsupported", err)
	}
	if err := c.SetRegistryAuth(context.Background(), mgmt.RegistryAuth{Registry: "r.example"}); !errors.Is(err, mgmt.ErrUnsupported) {
		t.Errorf("SetRegistryAuth without a Puller = %v, want ErrUnsupported", err)
	}
	st, err := c.Status(context.Background())
	if err != nil || st.Pull != nil || st.HasFeature(mgmt.FeatureUpdatePull) || st.HasFeature(mgmt.FeatureSignedOnly) {
		t.Errorf("Status without a Puller: pull %+v, features %v, %v", st.Pull, st.Features, err)
	}
}

// TestSignedOnlyRefusesPushedRoot performs the attack that release keys
// close: a token holder sends a root of their own (or boot files, or a
// commit of something staged) to an appliance that installs only signed
// releases. The agent refuses each with 422 before reading the body:
// neither the inactive slot nor slot.json changes, the updater is never
// called. A rollback, which installs nothing new, still works.
func TestSignedOnlyRefusesPushedRoot(t *testing.T) {
	ctx := context.Background()
	e, _ := newPullEnv(t)
	c := e.client(token)
	before := e.slotJSON()
	img := squashfsImage(300_000, 7)
	const why = "this appliance installs only signed releases (update.keys): publish with `ingot publish -key` and install with `ingot update -from REF`"

	_, err := c.UpdateRoot(ctx, bytes.NewReader(img), int64(len(img)), hashHex(img), mgmt.Root{Arch: runtime.GOARCH, Release: 9}, nil)
	if !errors.Is(err, mgmt.ErrRejected) || !strings.Contains(err.Error(), "update root: "+why) {
		t.Errorf("UpdateRoot on a signed-only appliance = %v, want 422 saying %q", err, why)
	}
	kernel := []byte("kernel")
	_, err = c.UpdateBoot(ctx, []mgmt.BootFile{{Name: "vmlinuz", Body: bytes.NewReader(kernel), Size: int64(len(kernel)), SHA256: hashHex(kernel)}}, nil)
	if !errors.Is(err, mgmt.ErrRejected) || !strings.Contains(err.Error(), "update boot file vmlinuz: "+why) {
		t.Errorf("UpdateBoot on a signed-only appliance = %v, want 422", err)
	}
	if _, err := c.Commit(ctx); !errors.Is(err, mgmt.ErrRejected) || !strings.Contains(err.Error(), "commit: "+why) {
		t.Errorf("Commit on a signed-only appliance = %v, want 422", err)
	}
	select {
	case err := <-e.upd.done:
		t.Errorf("the updater's WriteRoot ran (%v) for a refused root", err)
	default:
	}
	if got := e.slotJSON(); got != before {
		t.Errorf("slot.json changed: %s", got)
	}
	if !bytes.Equal(e.partition(slot.B), e.old) {
		t.Error("slot b changed by a refused root")
	}
	s, err := c.Rollback(ctx)
	if err != nil || s.Trial != "b" {
		t.Errorf("Rollback on a signed-only appliance = %+v, %v; want the other slot on trial", s, err)
	}
}
