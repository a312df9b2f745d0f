package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ingotdev/ingot/appliance/agent"
	"github.com/ingotdev/ingot/mgmt"
)

// pullAppliance plays an appliance with release keys: once asked to pull,
// it "reboots" into the pulled build on slot b, confirmed.
type pullAppliance struct {
	mu     sync.Mutex
	pulled []mgmt.PullRequest
	auths  []mgmt.RegistryAuth
	t0     time.Time
}

var pulledResult = mgmt.PullResult{
	Release: mgmt.ReleaseInfo{Ref: "localhost:5000/fleet/hello:stable", Digest: "sha256:" + strings.Repeat("8", 64), Release: 8, BuildID: "b-8"},
	Slot:    "b", BytesFetched: 3 << 20, BytesReused: 40 << 20, BytesResumed: 1 << 20, BytesRoot: 44 << 20,
}

func (p *pullAppliance) Status() mgmt.Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.pulled) == 0 {
		return mgmt.Status{Name: "hello", BuildID: "b-7", Release: 7, Arch: "amd64", Slot: "a", StartedAt: p.t0,
			SlotState: &mgmt.SlotState{Active: "a"}}
	}
	return mgmt.Status{Name: "hello", BuildID: "b-8", Release: 8, Arch: "amd64", Slot: "b", Trial: true, StartedAt: p.t0.Add(time.Minute),
		SlotState: &mgmt.SlotState{Active: "b"}}
}

func (p *pullAppliance) PullNow(_ context.Context, req mgmt.PullRequest) (mgmt.PullResult, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pulled = append(p.pulled, req)
	return pulledResult, nil
}

func (p *pullAppliance) SetRegistryAuth(_ context.Context, a mgmt.RegistryAuth) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.auths = append(p.auths, a)
	return nil
}

// PullStatus is the agent.Puller's Status.
type pullerOf struct{ *pullAppliance }

func (p pullerOf) Status() mgmt.PullStatus {
	return mgmt.PullStatus{From: "localhost:5000/fleet/hello:stable", CheckSeconds: 3600}
}

// startPullAgent serves a real agent with pullAppliance as its Info and
// Puller; it returns the target and an appliance directory with the token
// and an ingot.yaml.
func startPullAgent(t *testing.T) (string, string, *pullAppliance) {
	t.Helper()
	const token = "cli-token"
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, ".ingot"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".ingot", "token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	yaml := "name: hello\nservices:\n  - name: hello\n    go: ./cmd/hello\n"
	if err := os.WriteFile(filepath.Join(dir, "ingot.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	app := &pullAppliance{t0: time.Now().Add(-time.Hour)}
	sum := sha256.Sum256([]byte(token))
	a, err := agent.New(agent.Deps{Info: app, Puller: pullerOf{app}}, hex.EncodeToString(sum[:]))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.Serve(ctx, l)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return "tcp://" + l.Addr().String(), dir, app
}

func TestUpdateFrom(t *testing.T) {
	target, dir, app := startPullAgent(t)
	conn := []string{"-target", target, "-C", dir}

	// A push is refused before anything is built.
	code, _, errOut := runCLI(t, append([]string{"update"}, conn...)...)
	if code != 1 || !strings.Contains(errOut, "this appliance installs only signed releases (update.keys): publish with `ingot publish -key` and install with `ingot update -from REF`") {
		t.Errorf("ingot update (push) on a signed-only appliance: exit %d, stderr %q", code, errOut)
	}
	// -from does not go with the flags that build.
	code, _, errOut = runCLI(t, append([]string{"update", "-from", "localhost:5000/fleet/hello:stable", "-kernel", "x.deb"}, conn...)...)
	if code != 2 || !strings.Contains(errOut, "-kernel") {
		t.Errorf("ingot update -from -kernel: exit %d, stderr %q", code, errOut)
	}
	code, _, errOut = runCLI(t, append([]string{"update", "-retry"}, conn...)...)
	if code != 2 || !strings.Contains(errOut, "-retry goes with -from") {
		t.Errorf("ingot update -retry: exit %d, stderr %q", code, errOut)
	}
	code, _, errOut = runCLI(t, append([]string{"update", "-from", "hello:stable"}, conn...)...)
	if code != 2 || !strings.Contains(errOut, "REGISTRY/REPOSITORY") {
		t.Errorf("ingot update -from hello:stable: exit %d, stderr %q", code, errOut)
	}
	if len(app.pulled) != 0 {
		t.Fatalf("refused commands reached the puller: %+v", app.pulled)
	}

	code, out, errOut := runCLI(t, append([]string{"update", "-from", "localhost:5000/fleet/hello:stable", "-allow-downgrade", "-retry", "-wait", "1m"}, conn...)...)
	if code != 0 {
		t.Fatalf("ingot update -from: exit %d, stderr %s", code, errOut)
	}
	want := "release 8 (build b-8) sha256:" + strings.Repeat("8", 64) + " runs on slot b, trial confirmed, in "
	if !strings.Contains(out, want) || !strings.Contains(out, "root 44.0 MiB: 3.0 MiB fetched, 40.0 MiB reused from the running slot, 1.0 MiB resumed") {
		t.Errorf("ingot update -from: stdout %q, want %q and the bytes", out, want)
	}
	if !strings.Contains(errOut, "pull") || !strings.Contains(errOut, "trial confirmed") {
		t.Errorf("ingot update -from: stderr %q, want the steps", errOut)
	}
	if len(app.pulled) != 1 || app.pulled[0] != (mgmt.PullRequest{Ref: "localhost:5000/fleet/hello:stable", AllowDowngrade: true, Retry: true}) {
		t.Errorf("the puller was asked %+v", app.pulled)
	}
}

func TestRegistryLogin(t *testing.T) {
	target, dir, app := startPullAgent(t)
	login := func(stdin string, args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		err := runRegistryLogin(context.Background(), strings.NewReader(stdin), &out, &errb, append(args, "-target", target, "-C", dir))
		code := 0
		if err != nil {
			code = 1
			if _, ok := err.(usageError); ok {
				code = 2
			}
			errb.WriteString(err.Error())
		}
		return code, out.String(), errb.String()
	}
	if code, out, errOut := login("s3cret\n", "-u", "fleet", "-password-stdin", "localhost:5000"); code != 0 || !strings.Contains(out, "localhost:5000: credentials of fleet stored") {
		t.Errorf("registry-login: exit %d, %q %q", code, out, errOut)
	}
	if code, out, errOut := login("", "localhost:5000", "-remove"); code != 0 || !strings.Contains(out, "localhost:5000: credentials removed") {
		t.Errorf("registry-login -remove: exit %d, %q %q", code, out, errOut)
	}
	if len(app.auths) != 2 || app.auths[0] != (mgmt.RegistryAuth{Registry: "localhost:5000", Username: "fleet", Password: "s3cret"}) || !app.auths[1].Remove() {
		t.Errorf("the puller got %+v", app.auths)
	}
	for _, tc := range []struct {
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"pw", []string{"-u", "fleet", "localhost:5000"}, 2, "-password-stdin"},
		{"pw", []string{"-password-stdin", "localhost:5000"}, 2, "-u USER"},
		{"", []string{"-u", "fleet", "-password-stdin", "localhost:5000"}, 1, "no password on standard input"},
		{"pw", []string{"-remove", "-u", "fleet", "localhost:5000"}, 2, "-remove takes neither"},
		{"pw", []string{"-u", "fleet", "-password-stdin", "localhost:5000/x"}, 2, "want HOST or HOST:PORT"},
		{"pw", []string{"-u", "fleet", "-password-stdin"}, 2, "needs the registry"},
	} {
		if code, _, errOut := login(tc.stdin, tc.args...); code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("registry-login %q: exit %d, %q; want %d with %q", tc.args, code, errOut, tc.code, tc.want)
		}
	}
	if len(app.auths) != 2 {
		t.Errorf("refused logins reached the puller: %+v", app.auths)
	}
}

// TestPullLines: ingot status prints the puller's schedule, what it
// found, what it installs, its last failure and the releases it skips.
func TestPullLines(t *testing.T) {
	now := time.Date(2026, 12, 4, 21, 0, 0, 0, time.UTC)
	d6, d8 := "sha256:"+strings.Repeat("6", 64), "sha256:"+strings.Repeat("8", 64)
	p := mgmt.PullStatus{
		From: "localhost:5000/fleet/hello:stable", CheckSeconds: 3600,
		LastCheck: now.Add(-5 * time.Minute), NextCheck: now.Add(55 * time.Minute), LastCheckError: "registry: connection refused",
		Available: &mgmt.ReleaseInfo{Ref: "localhost:5000/fleet/hello:stable", Digest: d8, Release: 8, BuildID: "b-8"},
		Running:   &mgmt.ReleaseInfo{Ref: "localhost:5000/fleet/hello:stable", Digest: "sha256:" + strings.Repeat("7", 64), Release: 7},
		Progress: &mgmt.PullProgress{Release: mgmt.ReleaseInfo{Digest: d8, Release: 8}, Phase: mgmt.PhaseRoot, Started: now.Add(-time.Minute),
			BytesRoot: 100 << 20, BytesDone: 25 << 20, BytesFetched: 5 << 20, BytesReused: 20 << 20},
		LastFailure:   &mgmt.PullFailure{Ref: "localhost:5000/fleet/hello:stable", Digest: d6, Release: 6, At: now.Add(-time.Hour), Reason: "trial health check: service web is exited"},
		FailedDigests: []string{d6},
	}
	var b bytes.Buffer
	if err := printStatus(&b, mgmt.Status{Name: "hello", BuildID: "b-7", Pull: &p}, now); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"pull         from localhost:5000/fleet/hello:stable every 1h0m0s; last check 2026-12-04T20:55:00Z (5m0s ago): registry: connection refused; next check 2026-12-04T21:55:00Z (in 55m0s)",
		"available    release 8 (build b-8) " + d8 + " at localhost:5000/fleet/hello:stable",
		"pulled       release 7 sha256:7777",
		"installing   release 8 " + d8 + ": root, 25.0 MiB of 100.0 MiB (25%; 5.0 MiB fetched, 20.0 MiB reused, 0.0 MiB resumed), started 2026-12-04T20:59:00Z (1m0s ago)",
		"pull failed  release 6 " + d6 + ", 2026-12-04T20:00:00Z (1h0m0s ago): trial health check: service web is exited",
		"not retried  " + d6 + " (their trials failed here; ingot update -from REF -retry)",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status:\n%s\nwant %q", b.String(), want)
		}
	}
	b.Reset()
	printStatus(&b, mgmt.Status{Pull: &mgmt.PullStatus{}}, now)
	if !strings.Contains(b.String(), "only when asked (ingot update -from REF); no update.from") {
		t.Errorf("status without update.from:\n%s", b.String())
	}
}
