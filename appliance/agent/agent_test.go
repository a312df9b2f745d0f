package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ingotdev/ingot/appliance/agent"
	"github.com/ingotdev/ingot/appliance/logs"
	"github.com/ingotdev/ingot/appliance/update"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/certpin"
	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/format/slot"
	"github.com/ingotdev/ingot/packer/format/squashfs"
)

const token = "0123456789abcdef-token"

func hashHex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// fakeInfo serves a fixed status.
type fakeInfo struct {
	mu       sync.Mutex
	shutting bool
	release  uint64
}

func (f *fakeInfo) Status() mgmt.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return mgmt.Status{
		Name: "hello", BuildID: "b-42", Release: f.release, Arch: runtime.GOARCH, Slot: "a",
		StartedAt:    time.Now().Add(-90 * time.Second),
		Perm:         mgmt.PermStatus{Mounted: true, UsedBytes: 1 << 20, TotalBytes: 64 << 20},
		Services:     []mgmt.ServiceStatus{{Name: "web", State: "running", PID: 42, Restarts: 1}},
		ShuttingDown: f.shutting,
	}
}

// fakeSupervisor records the actions it was asked for.
type fakeSupervisor struct {
	mu      sync.Mutex
	actions []string
	fail    error
}

func (f *fakeSupervisor) Service(name string) (mgmt.ServiceStatus, bool) {
	if name != "web" {
		return mgmt.ServiceStatus{}, false
	}
	return mgmt.ServiceStatus{Name: "web", State: "running", PID: 43}, true
}

func (f *fakeSupervisor) do(action, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.actions = append(f.actions, action+" "+name)
	return f.fail
}

func (f *fakeSupervisor) Start(_ context.Context, name string) error   { return f.do("start", name) }
func (f *fakeSupervisor) Stop(_ context.Context, name string) error    { return f.do("stop", name) }
func (f *fakeSupervisor) Restart(_ context.Context, name string) error { return f.do("restart", name) }

func (f *fakeSupervisor) recorded() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.actions...)
}

// ringLogs serves real rings by name.
type ringLogs map[string]*logs.Ring

func (r ringLogs) Logs(name string, n int, follow bool) (agent.LogStream, error) {
	ring, ok := r[name]
	if !ok {
		return nil, fmt.Errorf("no log %q: %w", name, mgmt.ErrNotFound)
	}
	return agent.RingLines(ring, n, follow), nil
}

// fileLogs serves agent.DiskLogs from <dir>/<name>.log for the names of
// the rings.
type fileLogs struct {
	dir   string
	rings ringLogs
}

func (f fileLogs) DiskLogs(ctx context.Context, name string, n int) ([]mgmt.LogLine, error) {
	if _, ok := f.rings[name]; !ok {
		return nil, fmt.Errorf("no log %q: %w", name, mgmt.ErrNotFound)
	}
	lines, err := logs.ReadFile(filepath.Join(f.dir, name+".log"), n)
	if err != nil {
		return nil, err
	}
	var out []mgmt.LogLine
	for _, l := range lines {
		out = append(out, agent.LogLine(l))
	}
	return out, nil
}

// fakePower records requests.
type fakePower struct{ calls chan string }

func (f *fakePower) Reboot(context.Context) error   { f.calls <- "reboot"; return nil }
func (f *fakePower) Poweroff(context.Context) error { f.calls <- "poweroff"; return nil }

// watchedUpdater reports when each update call returned, so a test can
// wait for the server side of a request the client abandoned.
type watchedUpdater struct {
	*update.Manager
	done chan error
}

func (w *watchedUpdater) WriteRoot(ctx context.Context, body io.Reader, size int64, sha, arch string, release uint64) (mgmt.UpdateResult, error) {
	res, err := w.Manager.WriteRoot(ctx, body, size, sha, arch, release)
	w.done <- err
	return res, err
}

const partBytes = 1 << 20

// squashfsImage returns n bytes that pass the agent's squashfs checks.
func squashfsImage(n int, fill byte) []byte {
	b := bytes.Repeat([]byte{fill}, n)
	sb := squashfs.Superblock{BlockSize: squashfs.MinBlockBytes, BlockLog: 12, Compressor: squashfs.CompressorGzip, BytesUsed: uint64(n)}
	copy(b, sb.Encode())
	return b
}

type env struct {
	t       *testing.T
	addr    string
	sup     *fakeSupervisor
	info    *fakeInfo
	power   *fakePower
	rings   ringLogs
	logDir  string
	upd     *watchedUpdater
	bootDir string
	parts   map[slot.Name]string
	old     []byte
	logged  *bytes.Buffer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t, nil)
}

// newEnvWith is newEnv with the dependencies changed by edit (when not
// nil) before the agent starts.
func newEnvWith(t *testing.T, edit func(*agent.Deps)) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{
		t: t, sup: &fakeSupervisor{}, info: &fakeInfo{}, power: &fakePower{calls: make(chan string, 4)},
		rings:   ringLogs{"web": logs.NewRing(1 << 20), "init": logs.NewRing(1 << 20)},
		bootDir: filepath.Join(dir, "boot"), parts: map[slot.Name]string{}, logged: &bytes.Buffer{},
		logDir: filepath.Join(dir, "log"),
	}
	if err := os.Mkdir(e.bootDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := slot.Save(e.bootDir, slot.Initial()); err != nil {
		t.Fatal(err)
	}
	e.old = make([]byte, partBytes)
	copy(e.old, squashfsImage(100_000, 0xaa))
	for _, n := range []slot.Name{slot.A, slot.B} {
		e.parts[n] = filepath.Join(dir, n.PartitionLabel())
		if err := os.WriteFile(e.parts[n], e.old, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m, err := update.NewManager(e.bootDir, slot.A, func(_ context.Context, n slot.Name) (update.Partition, error) {
		return update.OpenFile(e.parts[n])
	})
	if err != nil {
		t.Fatal(err)
	}
	e.upd = &watchedUpdater{Manager: m, done: make(chan error, 16)}
	var logMu sync.Mutex
	sbom := func() ([]byte, error) { return []byte(`{"spdxVersion":"SPDX-2.3"}`), nil }
	deps := agent.Deps{
		Info: e.info, Supervisor: e.sup, Logs: e.rings, DiskLogs: fileLogs{e.logDir, e.rings},
		Power: e.power, Updater: e.upd, SBOM: sbom,
	}
	if edit != nil {
		edit(&deps)
	}
	a, err := agent.New(deps,
		hashHex([]byte(token)),
		agent.WithLogf(func(format string, args ...any) {
			logMu.Lock()
			defer logMu.Unlock()
			fmt.Fprintf(e.logged, format+"\n", args...)
		}))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = l.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- a.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve = %v after cancel, want nil", err)
		}
	})
	return e
}

func (e *env) client(tok string) *mgmt.Client {
	e.t.Helper()
	c, err := mgmt.NewClient("tcp://"+e.addr, tok)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

func (e *env) slotJSON() string {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.bootDir, layout.SlotFile))
	if err != nil {
		e.t.Fatal(err)
	}
	return string(b)
}

func (e *env) partition(n slot.Name) []byte {
	e.t.Helper()
	b, err := os.ReadFile(e.parts[n])
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

func TestStatus(t *testing.T) {
	e := newEnv(t)
	s, err := e.client(token).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "hello" || s.BuildID != "b-42" || s.Slot != "a" || len(s.Services) != 1 || s.Services[0].PID != 42 {
		t.Errorf("Status = %+v, want the fake's", s)
	}
	if s.Uptime() < 90*time.Second || s.Uptime() > 10*time.Minute {
		t.Errorf("Status.Uptime() = %v, want about 90s", s.Uptime())
	}
	if s.SlotState == nil || s.SlotState.Active != "a" || s.SlotState.Trial != "" {
		t.Errorf("Status.SlotState = %+v, want active a from slot.json", s.SlotState)
	}
	if s.LastUpdate != nil {
		t.Errorf("Status.LastUpdate = %+v before any update, want none", s.LastUpdate)
	}
	for _, f := range []string{mgmt.FeatureUpdateRoot, mgmt.FeatureLogsFollow, mgmt.FeatureRollback} {
		if !s.HasFeature(f) {
			t.Errorf("Status.Features = %v, want %s", s.Features, f)
		}
	}
}

func TestAuthFailures(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	before := e.slotJSON()

	// No token at all, with a raw request.
	for _, path := range []string{mgmt.PathStatus, mgmt.PathReboot, "/v1/nonexistent", "/"} {
		req, _ := http.NewRequest(http.MethodPost, "http://"+e.addr+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "unauthorized") {
			t.Errorf("POST %s without a token = %d %s, want 401", path, resp.StatusCode, body)
		}
	}
	// Present but wrong: a prefix of the right one, and "Basic".
	req, _ := http.NewRequest(http.MethodGet, "http://"+e.addr+mgmt.PathStatus, nil)
	req.Header.Set("Authorization", "Basic "+token)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("Basic auth: %v, %v, want 401", resp.StatusCode, err)
	}

	for _, tok := range []string{"wrong", token[:len(token)-1]} {
		c := e.client(tok)
		img := squashfsImage(200_000, 1)
		var sent int64
		calls := map[string]func() error{
			"status":   func() error { _, err := c.Status(ctx); return err },
			"restart":  func() error { _, err := c.Restart(ctx, "web"); return err },
			"stop":     func() error { _, err := c.Stop(ctx, "web"); return err },
			"reboot":   func() error { return c.Reboot(ctx) },
			"poweroff": func() error { return c.Poweroff(ctx) },
			"commit":   func() error { _, err := c.Commit(ctx); return err },
			"rollback": func() error { _, err := c.Rollback(ctx); return err },
			"logs":     func() error { _, err := c.Logs(ctx, "web", -1, false); return err },
			"update root": func() error {
				_, err := c.UpdateRoot(ctx, bytes.NewReader(img), int64(len(img)), hashHex(img), mgmt.Root{Arch: runtime.GOARCH}, func(n int64) { sent = n })
				return err
			},
		}
		for name, call := range calls {
			err := call()
			if !errors.Is(err, mgmt.ErrUnauthorized) || err.Error() != "unauthorized: wrong or missing token" {
				t.Errorf("%s with token %q: error %v, want %q", name, tok, err, mgmt.ErrUnauthorized)
			}
		}
		if sent != 0 {
			t.Errorf("update root with a wrong token sent %d body bytes, want 0 (Expect: 100-continue)", sent)
		}
	}
	if got := e.sup.recorded(); len(got) != 0 {
		t.Errorf("supervisor actions after unauthorized requests: %v, want none", got)
	}
	select {
	case c := <-e.power.calls:
		t.Errorf("power %s after unauthorized requests", c)
	case <-time.After(100 * time.Millisecond):
	}
	if got := e.slotJSON(); got != before {
		t.Errorf("slot.json changed by unauthorized requests: %s", got)
	}
	if !bytes.Equal(e.partition(slot.B), e.old) {
		t.Error("slot b changed by unauthorized requests")
	}
	if !strings.Contains(e.logged.String(), "wrong token") || !strings.Contains(e.logged.String(), "no bearer token") {
		t.Errorf("agent log = %q, want the rejections", e.logged.String())
	}
}

func TestServiceActions(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.client(token)
	st, err := c.Restart(ctx, "web")
	if err != nil || st.Name != "web" || st.PID != 43 {
		t.Fatalf("Restart(web) = %+v, %v", st, err)
	}
	if _, err := c.Stop(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Start(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(e.sup.recorded(), ","), "restart web,stop web,start web"; got != want {
		t.Errorf("supervisor actions = %s, want %s", got, want)
	}
	if _, err := c.Restart(ctx, "nope"); !errors.Is(err, mgmt.ErrNotFound) || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("Restart(nope) = %v, want ErrNotFound naming it", err)
	}
	e.sup.fail = errors.New("start failed: exec format error")
	if _, err := c.Start(ctx, "web"); err == nil || !strings.Contains(err.Error(), "exec format error") || !strings.Contains(err.Error(), "500") {
		t.Errorf("Start with a failing supervisor = %v, want the server's message and 500", err)
	}
}

func TestLogs(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.client(token)
	ring := e.rings["web"]
	for i := 1; i <= 5; i++ {
		ring.Append(time.Now(), logs.Stdout, fmt.Sprintf("line %d", i))
	}
	read := func(s *mgmt.LogStream) []string {
		var out []string
		for _, l := range readStream(t, s) {
			out = append(out, l.Text)
		}
		return out
	}
	for _, tt := range []struct {
		n    int
		want string
	}{{2, "line 4,line 5"}, {-1, "line 1,line 2,line 3,line 4,line 5"}, {0, ""}, {50, "line 1,line 2,line 3,line 4,line 5"}} {
		s, err := c.Logs(ctx, "web", tt.n, false)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(read(s), ","); got != tt.want {
			t.Errorf("Logs(web, n=%d) = %q, want %q", tt.n, got, tt.want)
		}
		s.Close()
	}
	if _, err := c.Logs(ctx, "nope", 1, false); !errors.Is(err, mgmt.ErrNotFound) {
		t.Errorf("Logs(nope) = %v, want ErrNotFound", err)
	}

	// Two followers: one with the last line as backlog, one without.
	ctx1, cancel1 := context.WithCancel(ctx)
	defer cancel1()
	f1, err := c.Logs(ctx1, "web", 1, true)
	if err != nil {
		t.Fatal(err)
	}
	f2, err := c.Logs(ctx, "web", 0, true)
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	next := func(s *mgmt.LogStream) string {
		l, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		return l.Text
	}
	if got := next(f1); got != "line 5" {
		t.Errorf("follower 1 backlog = %q, want line 5", got)
	}
	for i := 6; i <= 8; i++ {
		ring.Append(time.Now(), logs.Stderr, fmt.Sprintf("line %d", i))
	}
	for i := 6; i <= 8; i++ {
		want := fmt.Sprintf("line %d", i)
		if got := next(f1); got != want {
			t.Errorf("follower 1 = %q, want %q", got, want)
		}
		l, err := f2.Next()
		if err != nil || l.Text != want || l.Stream != mgmt.StreamStderr || l.Seq != uint64(i) {
			t.Errorf("follower 2 = %+v, %v, want %q on stderr, seq %d", l, err, want, i)
		}
	}
	// Ending one follower leaves the other running.
	cancel1()
	f1.Close()
	ring.Append(time.Now(), logs.Stdout, "line 9")
	if got := next(f2); got != "line 9" {
		t.Errorf("follower 2 after follower 1 left = %q, want line 9", got)
	}
}

// readStream reads a log stream to its end.
func readStream(t *testing.T, s *mgmt.LogStream) []mgmt.LogLine {
	t.Helper()
	var out []mgmt.LogLine
	for {
		l, err := s.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, l)
	}
}

// TestDiskLogs reads a log as kept on disk across boots: what a ring of
// this boot does not have.
func TestDiskLogs(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.client(token)
	if err := os.Mkdir(e.logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := logs.OpenFile(filepath.Join(e.logDir, "web.log"), logs.DefaultFileBytes)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i, text := range []string{"boot 1 line", "trial boot: health check failed", "boot 3 line"} {
		f.Write(logs.Line{Time: t0.Add(time.Duration(i) * time.Minute), Stream: logs.Stderr, Text: text})
	}
	f.Close()
	read := func(s *mgmt.LogStream) []mgmt.LogLine {
		defer s.Close()
		return readStream(t, s)
	}
	s, err := c.DiskLogs(ctx, "web", -1)
	if err != nil {
		t.Fatal(err)
	}
	got := read(s)
	if len(got) != 3 || got[1].Text != "trial boot: health check failed" || got[1].Stream != mgmt.StreamStderr || !got[1].Time.Equal(t0.Add(time.Minute)) || got[2].Seq != 3 {
		t.Errorf("DiskLogs(web) = %+v, want the three lines with their times and streams", got)
	}
	if s, err = c.DiskLogs(ctx, "web", 1); err != nil {
		t.Fatal(err)
	}
	if got := read(s); len(got) != 1 || got[0].Text != "boot 3 line" {
		t.Errorf("DiskLogs(web, n=1) = %+v, want the last line", got)
	}
	if _, err := c.DiskLogs(ctx, "nope", -1); !errors.Is(err, mgmt.ErrNotFound) {
		t.Errorf("DiskLogs(nope) = %v, want ErrNotFound", err)
	}
	// The ring of this boot is another thing.
	if s, err = c.Logs(ctx, "web", -1, false); err != nil {
		t.Fatal(err)
	}
	if got := read(s); len(got) != 0 {
		t.Errorf("Logs(web) from memory = %+v, want this boot's (none)", got)
	}
}

func TestPower(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.client(token)
	if err := c.Reboot(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-e.power.calls:
		if got != "reboot" {
			t.Errorf("power call = %s, want reboot", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Reboot accepted but the power dependency was never called")
	}
	e.info.mu.Lock()
	e.info.shutting = true
	e.info.mu.Unlock()
	if err := c.Poweroff(ctx); !errors.Is(err, mgmt.ErrConflict) {
		t.Errorf("Poweroff while shutting down = %v, want ErrConflict", err)
	}
}

func TestUpdateRoot(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.client(token)
	img := squashfsImage(300_000, 7)
	var progress int64
	res, err := c.UpdateRoot(ctx, bytes.NewReader(img), int64(len(img)), hashHex(img), mgmt.Root{Arch: runtime.GOARCH, Release: 3}, func(n int64) { progress = n })
	if err != nil {
		t.Fatal(err)
	}
	<-e.upd.done
	if res.Slot != "b" || res.Bytes != int64(len(img)) || res.SHA256 != hashHex(img) || progress != int64(len(img)) {
		t.Errorf("UpdateRoot = %+v, progress %d; want slot b, %d bytes, sha256 %s", res, progress, len(img), hashHex(img))
	}
	if got := e.partition(slot.B); !bytes.Equal(got[:len(img)], img) {
		t.Error("slot b does not hold the image")
	}
	// A name with a directory reaches the updater whole; this one, an
	// overlay, is refused by an appliance without a Pi firmware.
	ov := []byte("overlay")
	_, err = c.UpdateBoot(ctx, []mgmt.BootFile{{Name: "overlays/x.dtbo", Body: bytes.NewReader(ov), Size: int64(len(ov)), SHA256: hashHex(ov)}}, nil)
	if !errors.Is(err, mgmt.ErrNotFound) || !strings.Contains(err.Error(), `"overlays/x.dtbo"`) {
		t.Errorf("UpdateBoot(overlays/x.dtbo) = %v, want the updater's refusal naming it", err)
	}
	for _, bad := range []string{"../x.dtb", "overlays//x.dtbo", "/abs", "a?b"} {
		if _, err := c.UpdateBoot(ctx, []mgmt.BootFile{{Name: bad, Body: bytes.NewReader(ov), Size: int64(len(ov)), SHA256: hashHex(ov)}}, nil); err == nil || !strings.Contains(err.Error(), "not valid") {
			t.Errorf("UpdateBoot(%q) = %v, want the client to refuse the name", bad, err)
		}
	}
	s, err := c.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Active != "a" || s.Trial != "b" || s.TriesLeft != 1 {
		t.Errorf("Commit = %+v, want active a, trial b, 1 try", s)
	}
	st, err := c.Status(ctx)
	if err != nil || st.SlotState == nil || st.SlotState.Trial != "b" {
		t.Errorf("Status after commit: slot state %+v, %v, want trial b", st.SlotState, err)
	}
	// The record of the update: the release of the root's PUT, pending.
	if lu := st.LastUpdate; lu == nil || lu.Slot != "b" || lu.FromSlot != "a" || lu.Release != 3 || lu.Outcome != mgmt.OutcomePending || lu.Started.IsZero() {
		t.Errorf("Status.LastUpdate after commit = %+v, want slot b, release 3, pending", lu)
	}
	s, err = c.Rollback(ctx)
	if err != nil || s.Trial != "" || s.Active != "a" {
		t.Errorf("Rollback = %+v, %v, want the trial cancelled", s, err)
	}
	st, err = c.Status(ctx)
	if lu := st.LastUpdate; err != nil || lu == nil || lu.Outcome != mgmt.OutcomeCancelled || lu.Finished.IsZero() {
		t.Errorf("Status.LastUpdate after rollback = %+v, %v, want cancelled", lu, err)
	}
}

func TestUpdateRootRejected(t *testing.T) {
	ctx := context.Background()
	good := squashfsImage(300_000, 7)
	garbage := bytes.Repeat([]byte("not squashfs "), 70_000) // 910 KB: the rejection comes mid-upload
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	tests := []struct {
		name        string
		body        []byte
		size        int64
		sha, arch   string
		want        error
		text        string
		invalidated bool
	}{
		{"wrong sha256", good, int64(len(good)), hashHex(good[1:]), runtime.GOARCH, mgmt.ErrRejected, "sha256", true},
		{"not squashfs", garbage, int64(len(garbage)), hashHex(garbage), runtime.GOARCH, mgmt.ErrRejected, "magic", false},
		{"other architecture", good, int64(len(good)), hashHex(good), other, mgmt.ErrRejected, "image is for " + other, false},
		{"too large", squashfsImage(partBytes+4096, 1), partBytes + 4096, hashHex(squashfsImage(partBytes+4096, 1)), runtime.GOARCH, mgmt.ErrTooLarge, "does not fit", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			c := e.client(token)
			before := e.slotJSON()
			_, err := c.UpdateRoot(ctx, bytes.NewReader(tt.body), tt.size, tt.sha, mgmt.Root{Arch: tt.arch}, nil)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("UpdateRoot = %v, want %v mentioning %q", err, tt.want, tt.text)
			}
			<-e.upd.done
			if got := e.slotJSON(); got != before {
				t.Errorf("slot.json changed: %s", got)
			}
			got := e.partition(slot.B)
			if tt.invalidated {
				if !bytes.Equal(got[:4096], make([]byte, 4096)) {
					t.Error("slot b not invalidated")
				}
			} else if !bytes.Equal(got, e.old) {
				t.Error("slot b changed by a request rejected before writing")
			}
			if _, err := c.Commit(ctx); !errors.Is(err, mgmt.ErrConflict) {
				t.Errorf("Commit after the rejected update = %v, want ErrConflict", err)
			}
		})
	}

	t.Run("truncated body", func(t *testing.T) {
		e := newEnv(t)
		c := e.client(token)
		before := e.slotJSON()
		_, err := c.UpdateRoot(ctx, bytes.NewReader(good[:200_000]), int64(len(good)), hashHex(good), mgmt.Root{Arch: runtime.GOARCH}, nil)
		if err == nil {
			t.Fatal("UpdateRoot with a short body succeeded")
		}
		if serr := <-e.upd.done; serr == nil {
			t.Fatal("the agent accepted a truncated body")
		}
		if got := e.slotJSON(); got != before {
			t.Errorf("slot.json changed: %s", got)
		}
		if got := e.partition(slot.B); !bytes.Equal(got[:4096], make([]byte, 4096)) {
			t.Error("slot b not invalidated")
		}
	})
}

// TestUpdateRootRefusesDowngrade performs issue 12's attack 11: whoever
// holds the token installs an older release. The agent refuses it before
// the body is read, so neither the inactive slot nor slot.json changes,
// unless the client allowed the downgrade. A client that sends no release
// (an older ingot) claims release 0 and is refused too.
func TestUpdateRootRefusesDowngrade(t *testing.T) {
	ctx := context.Background()
	img := squashfsImage(300_000, 7)
	tests := []struct {
		name    string
		root    mgmt.Root
		refused bool
	}{
		{"lower release", mgmt.Root{Arch: runtime.GOARCH, Release: 4}, true},
		{"no release", mgmt.Root{Arch: runtime.GOARCH}, true},
		{"same release", mgmt.Root{Arch: runtime.GOARCH, Release: 5}, false},
		{"newer release", mgmt.Root{Arch: runtime.GOARCH, Release: 6}, false},
		{"lower release, allowed", mgmt.Root{Arch: runtime.GOARCH, Release: 4, AllowDowngrade: true}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.info.release = 5
			c := e.client(token)
			before := e.slotJSON()
			_, err := c.UpdateRoot(ctx, bytes.NewReader(img), int64(len(img)), hashHex(img), tt.root, nil)
			if !tt.refused {
				if err != nil {
					t.Fatalf("UpdateRoot(release %d) = %v, want success", tt.root.Release, err)
				}
				<-e.upd.done
				return
			}
			want := fmt.Sprintf("release %d is older than the running release 5", tt.root.Release)
			if !errors.Is(err, mgmt.ErrRejected) || !strings.Contains(err.Error(), want) {
				t.Fatalf("UpdateRoot(release %d) = %v, want ErrRejected saying %q", tt.root.Release, err, want)
			}
			if got := e.slotJSON(); got != before {
				t.Errorf("slot.json changed by a refused downgrade: %s", got)
			}
			if !bytes.Equal(e.partition(slot.B), e.old) {
				t.Error("slot b changed by a refused downgrade")
			}
			if _, err := c.Commit(ctx); !errors.Is(err, mgmt.ErrConflict) {
				t.Errorf("Commit after the refused downgrade = %v, want ErrConflict", err)
			}
		})
	}
}

// TestHybridVsock runs the client through transport's unix:// hybrid
// vsock dialer against a stand-in for the VMM's socket, with the agent
// serving TLS with the token-derived key as on a real vsock port.
func TestHybridVsock(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "v.sock")
	ul, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := certpin.TokenKeyPEM(token)
	if err != nil {
		t.Fatal(err)
	}
	hl, err := agent.ListenTokenTLS(&hybridListener{Listener: ul, port: 1024}, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Deps{Info: &fakeInfo{}}, hashHex([]byte(token)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, hl) }()
	defer func() {
		cancel()
		<-done
	}()
	c, err := mgmt.NewClient("unix://"+sock+"?port=1024", token)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := c.Status(context.Background())
	if err != nil || s.BuildID != "b-42" {
		t.Fatalf("Status over hybrid vsock = %+v, %v", s, err)
	}
	if s.HasFeature(mgmt.FeatureUpdateRoot) {
		t.Errorf("Features = %v without an Updater, want no %s", s.Features, mgmt.FeatureUpdateRoot)
	}
	if _, err := c.Restart(context.Background(), "web"); !errors.Is(err, mgmt.ErrUnsupported) {
		t.Errorf("Restart without a Supervisor = %v, want ErrUnsupported", err)
	}
}

// hybridListener answers the hybrid vsock handshake ("CONNECT port\n" →
// "OK n\n") before handing a connection over, as a VMM's socket would.
type hybridListener struct {
	net.Listener
	port int
}

func (h *hybridListener) Accept() (net.Conn, error) {
	for {
		c, err := h.Listener.Accept()
		if err != nil {
			return nil, err
		}
		r := bufio.NewReader(c)
		line, err := r.ReadString('\n')
		if err != nil || line != fmt.Sprintf("CONNECT %d\n", h.port) {
			c.Close()
			continue
		}
		if _, err := io.WriteString(c, "OK 5000\n"); err != nil {
			c.Close()
			continue
		}
		return &bufferedConn{Conn: c, r: r}, nil
	}
}

type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

func TestTLS(t *testing.T) {
	certPEM, keyPEM, pin, err := mgmt.GenerateCertificate("hello", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := agent.ListenTLS(tl, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Deps{Info: &fakeInfo{}}, hashHex([]byte(token)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, l) }()
	defer func() {
		cancel()
		<-done
	}()
	target := "https://" + tl.Addr().String()
	c, err := mgmt.NewClient(target, token, mgmt.WithCertSHA256(pin))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if s, err := c.Status(context.Background()); err != nil || s.Name != "hello" {
		t.Fatalf("Status over TLS = %+v, %v", s, err)
	}
	bad, err := mgmt.NewClient(target, token, mgmt.WithCertSHA256(strings.Repeat("1", 64)))
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if _, err := bad.Status(context.Background()); err == nil || !strings.Contains(err.Error(), "pinned") {
		t.Errorf("Status with a wrong pin = %v, want a pin mismatch", err)
	}
}

func TestSBOMAndBootFiles(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	b, err := e.client(token).SBOM(ctx)
	if err != nil || string(b) != `{"spdxVersion":"SPDX-2.3"}` {
		t.Errorf("SBOM = %q, %v, want the document", b, err)
	}
	if _, err := e.client("wrong").SBOM(ctx); !errors.Is(err, mgmt.ErrUnauthorized) {
		t.Errorf("SBOM with a wrong token = %v, want unauthorized", err)
	}
	if err := os.WriteFile(filepath.Join(e.bootDir, "vmlinuz.b"), []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	bf, err := e.client(token).BootFiles(ctx, "b")
	if err != nil || len(bf.Slots) != 1 || bf.Slots["b"]["vmlinuz"] != hashHex([]byte("k")) {
		t.Errorf("BootFiles(b) = %+v, %v, want slot b with vmlinuz's hash", bf, err)
	}
	if _, err := e.client(token).BootFiles(ctx, "c"); !errors.Is(err, mgmt.ErrInvalid) {
		t.Errorf("BootFiles(c) = %v, want invalid", err)
	}
}
