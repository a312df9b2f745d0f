package push

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ingotdev/ingot/internal/vmtest"

	"github.com/ingotdev/ingot/builder/assemble"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/certpin"
	"github.com/ingotdev/ingot/packer/format/image"
	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/format/slot"
)

// testLog adapts t.Logf as an io.Writer for the update's step lines.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// writeHello writes an appliance directory like examples/hello (same
// service package, same token) with the given greeting and extra service
// arguments, and a short health window so the test stays quick.
func writeHello(t *testing.T, dir, greeting string, extraArgs ...string) *config.Config {
	t.Helper()
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	// The copy is its own module: the service uses only the standard
	// library, and a directory outside this repository has no go.mod.
	src, err := os.ReadFile(filepath.Join(repo, "examples/hello/cmd/hello/main.go"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "cmd/hello"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cmd/hello/main.go"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module hello\n\ngo 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pkg := "./cmd/hello"
	args := append([]string{"-listen", ":8080"}, extraArgs...)
	yaml := fmt.Sprintf(`name: hello
targets: [vm-amd64, vm-arm64]
services:
  - name: hello
    go: %s
    args: [%s]
    env:
      GREETING: %s
    restart: always
    health: {http: "http://127.0.0.1:8080/healthz", interval: 1s, timeout: 500ms}
management: {tcp: ":7443"}
update:
  health_window: 3s
`, pkg, `"`+strings.Join(args, `", "`)+`"`, greeting)
	if err := os.MkdirAll(filepath.Join(dir, ".ingot"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, config.FileName), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile(filepath.Join(repo, "examples/hello/.ingot/token"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".ingot/token"), tok, 0o600); err != nil {
		t.Fatal(err)
	}
	writeTestCert(t, dir, "hello")
	cfg, err := config.Load(filepath.Join(dir, config.FileName))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// writeTestCert gives the appliance directory dir a management TLS
// certificate for name, once: every build of it serves the same pin.
func writeTestCert(t *testing.T, dir, name string) {
	t.Helper()
	certPath := filepath.Join(dir, filepath.FromSlash(config.DefaultTLSCertFile))
	if _, err := os.Stat(certPath); err == nil {
		return
	}
	certPEM, keyPEM, _, err := mgmt.GenerateCertificate(name, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(certPath), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certPath, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, filepath.FromSlash(config.DefaultTLSKeyFile)), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
}

func getGreeting(url string) (string, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// waitGreeting polls url until its body contains want.
func waitGreeting(t *testing.T, url, want string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	var body string
	var err error
	for time.Now().Before(deadline) {
		body, err = getGreeting(url)
		if err == nil && strings.Contains(body, want) {
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("GET %s = %q, %v; want a body with %q", url, body, err, want)
}

// TestVMUpdate boots hello v1 under TCG and, against the running VM:
// rejects bad updates without side effects and still boots the same build
// after a reboot; updates to v2 (slot b, trial confirmed, new greeting);
// then pushes a build whose service exits at once and checks that the
// appliance falls back to slot b by itself and reports why.
func TestVMUpdate(t *testing.T) {
	vmtest.Kernel(t, "amd64")
	ctx := t.Context()
	tmp := t.TempDir()
	cache := assemble.WithCacheDir(filepath.Join(tmp, "cache"))
	appDir := filepath.Join(tmp, "hello")
	cfg1 := writeHello(t, appDir, "greeting v1")
	img := filepath.Join(tmp, "hello.img")
	start := time.Now()
	rep1, err := assemble.Image(ctx, cfg1, config.TargetVMAmd64, img, cache)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("v1 build %s in %s", rep1.BuildID, time.Since(start).Round(time.Millisecond))

	port := vmtest.FreePort(t)
	tlsPort := vmtest.FreePort(t)
	runDir := filepath.Join(tmp, "run")
	console := runVM(t, img, runDir, qemu.Forward{Proto: "tcp", HostPort: port, GuestPort: 8080},
		qemu.Forward{Proto: "tcp", HostPort: tlsPort, GuestPort: 7443})
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	c, target, tokStr := agentClient(t, appDir, runDir)
	tok := []byte(tokStr)
	waitGreeting(t, url, "greeting v1", 3*time.Minute)
	t.Logf("v1 answers %s after start", time.Since(start).Round(time.Millisecond))
	opts := []Option{WithLog(testLog{t}), WithPollInterval(300 * time.Millisecond), WithWaitTimeout(3 * time.Minute),
		WithAssembleOptions(cache)}

	t.Run("tls", func(t *testing.T) {
		// The same agent answers over TCP with TLS, pinned to the
		// certificate of the appliance directory.
		certPEM, err := os.ReadFile(cfg1.Management.TLSCertFile)
		if err != nil {
			t.Fatal(err)
		}
		pin, err := certpin.OfPEM(certPEM)
		if err != nil {
			t.Fatal(err)
		}
		httpsTarget := fmt.Sprintf("https://127.0.0.1:%d", tlsPort)
		tc, err := mgmt.NewClient(httpsTarget, string(tok), mgmt.WithCertSHA256(pin))
		if err != nil {
			t.Fatal(err)
		}
		defer tc.Close()
		st, err := callStatus(ctx, tc)
		if err != nil || st.BuildID != rep1.BuildID {
			t.Fatalf("status over %s = build %q, %v; want %s", httpsTarget, st.BuildID, err, rep1.BuildID)
		}
		wrongPin, err := mgmt.NewClient(httpsTarget, string(tok), mgmt.WithCertSHA256(strings.Repeat("ab", 32)))
		if err != nil {
			t.Fatal(err)
		}
		defer wrongPin.Close()
		if _, err := wrongPin.Status(ctx); err == nil || !strings.Contains(err.Error(), "does not match the pinned") {
			t.Errorf("status with a wrong pin = %v, want a pin mismatch", err)
		}
		noToken, err := mgmt.NewClient(httpsTarget, "wrong-token", mgmt.WithCertSHA256(pin))
		if err != nil {
			t.Fatal(err)
		}
		defer noToken.Close()
		if _, err := noToken.Status(ctx); err == nil || !strings.Contains(strings.ToLower(err.Error()), "unauthorized") {
			t.Errorf("status over TLS with a wrong token = %v, want unauthorized", err)
		}
	})

	t.Run("bad updates", func(t *testing.T) {
		phase := time.Now()
		before, err := callStatus(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		root, closeRoot, err := rootImage(img)
		if err != nil {
			t.Fatal(err)
		}
		defer closeRoot()
		sum, err := hashReader(root)
		if err != nil {
			t.Fatal(err)
		}
		junk := make([]byte, 1<<20)
		rand.Read(junk)
		junkSum := sha256.Sum256(junk)
		wrongToken, err := mgmt.NewClient(target, "not-the-token")
		if err != nil {
			t.Fatal(err)
		}
		defer wrongToken.Close()

		for _, tc := range []struct {
			name string
			c    *mgmt.Client
			body io.Reader
			size int64
			sha  string
			arch string
			want string
		}{
			{"wrong sha256", c, io.NewSectionReader(root, 0, root.Size()), root.Size(), strings.Repeat("0", 64), "amd64", "sha256"},
			{"non-squashfs", c, bytes.NewReader(junk), int64(len(junk)), hex.EncodeToString(junkSum[:]), "amd64", "squashfs"},
			{"arch mismatch", c, io.NewSectionReader(root, 0, root.Size()), root.Size(), sum, "arm64", "arm64"},
			{"wrong token", wrongToken, io.NewSectionReader(root, 0, root.Size()), root.Size(), sum, "amd64", "unauthorized"},
		} {
			_, err := tc.c.UpdateRoot(ctx, tc.body, tc.size, tc.sha, mgmt.Root{Arch: tc.arch}, nil)
			if err == nil || !strings.Contains(strings.ToLower(err.Error()), tc.want) {
				t.Errorf("%s: UpdateRoot = %v, want an error mentioning %q", tc.name, err, tc.want)
			} else {
				t.Logf("%s: rejected: %v", tc.name, err)
			}
		}

		// No token and a truncated body need a raw HTTP client: mgmt.Client
		// always sends the token and never sends less than it declares.
		// Its connections still check the agent's token-derived key.
		raw := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return mgmt.DialAgent(ctx, target, string(tok))
		}, DisableKeepAlives: true}}
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut, "http://agent"+mgmt.PathUpdateRoot, io.NewSectionReader(root, 0, 4096))
		req.Header.Set(mgmt.HeaderSHA256, sum)
		req.Header.Set(mgmt.HeaderArch, "amd64")
		resp, err := raw.Do(req)
		if err != nil {
			t.Errorf("no token: %v", err)
		} else {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("no token: PUT %s = %d %s, want 401", mgmt.PathUpdateRoot, resp.StatusCode, b)
			} else {
				t.Logf("no token: rejected: %d %s", resp.StatusCode, bytes.TrimSpace(b))
			}
		}
		truncated := io.MultiReader(io.NewSectionReader(root, 0, root.Size()/2), errReader{})
		req, _ = http.NewRequestWithContext(ctx, http.MethodPut, "http://agent"+mgmt.PathUpdateRoot, truncated)
		req.ContentLength = root.Size()
		req.Header.Set(mgmt.HeaderAuthorization, mgmt.BearerPrefix+strings.TrimSpace(string(tok)))
		req.Header.Set(mgmt.HeaderSHA256, sum)
		req.Header.Set(mgmt.HeaderArch, "amd64")
		if resp, err := raw.Do(req); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Errorf("truncated body: PUT %s = %d %s, want the upload to fail", mgmt.PathUpdateRoot, resp.StatusCode, b)
		}
		// The agent logs why it rejected the truncated upload.
		if !waitLog(ctx, c, "init", "body ended after", 10*time.Second) {
			t.Errorf("init log has no rejection of the truncated upload")
		}
		if _, err := c.Commit(ctx); err == nil || !strings.Contains(err.Error(), "no root was written") {
			t.Errorf("Commit after rejected uploads = %v, want a conflict saying no root was written", err)
		}
		after, err := callStatus(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if diff := slotDiff(before.SlotState, after.SlotState); diff != "" {
			t.Errorf("slot.json changed by rejected updates: %s", diff)
		}
		// And the system still boots the same build from the same slot.
		if err := c.Reboot(ctx); err != nil {
			t.Fatal(err)
		}
		st, err := New(c, opts...).WaitConfirmed(ctx, before, "a", rep1.BuildID)
		if err != nil {
			t.Fatal(err)
		}
		if st.SlotState == nil || st.SlotState.LastFailed != nil {
			t.Errorf("after reboot: slot state %+v, want active a without a failure", st.SlotState)
		}
		waitGreeting(t, url, "greeting v1", time.Minute)
		t.Logf("bad updates rejected, same build after reboot, in %s", time.Since(phase).Round(time.Millisecond))
	})
	if t.Failed() {
		return
	}

	t.Run("update", func(t *testing.T) {
		phase := time.Now()
		cfg2 := writeHello(t, appDir, "greeting v2")
		// v2 also changes slot b's kernel command line, as a new kernel
		// would change its boot files: the update must send it, and only
		// slot b may boot with it.
		img2 := filepath.Join(tmp, "hello-v2.img")
		rep2, err := assemble.Image(ctx, cfg2, config.TargetVMAmd64, img2, cache)
		if err != nil {
			t.Fatal(err)
		}
		appendCmdline(t, img2, cmdlineMark)
		rep, err := New(c, opts...).PushImage(ctx, img2, "amd64", rep2.BuildID)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Slot != "b" || rep.Status.Slot != "b" || rep.Status.SlotState == nil ||
			rep.Status.SlotState.Active != "b" || rep.Status.SlotState.Trial != "" {
			t.Errorf("after update: slot %q, status slot %q, slot.json %+v; want b active, no trial",
				rep.Slot, rep.Status.Slot, rep.Status.SlotState)
		}
		if rep.BuildID == rep1.BuildID {
			t.Errorf("v2 build id %s = v1's", rep.BuildID)
		}
		if strings.Join(rep.BootFiles, ",") != "cmdline.txt" {
			t.Errorf("boot files sent = %v, want just cmdline.txt (kernel and initramfs unchanged)", rep.BootFiles)
		}
		if n := strings.Count(console.String(), cmdlineMark); n == 0 {
			t.Errorf("console shows no boot with %s", cmdlineMark)
		}
		// The record of the update: v2 over v1, confirmed. The confirm
		// writes slot.json first, so the record may follow a moment later.
		lu := waitLastUpdate(t, c, mgmt.OutcomeConfirmed)
		if lu.Slot != "b" || lu.BuildID != rep.BuildID || lu.FromSlot != "a" || lu.FromBuildID != rep1.BuildID ||
			lu.Started.IsZero() || lu.Finished.Before(lu.Started) || lu.Reason != "" {
			t.Errorf("last update after the confirmed update = %+v; want slot b, build %s over a's %s, confirmed after it started",
				lu, rep.BuildID, rep1.BuildID)
		}
		t.Logf("last update: %+v", lu)
		waitGreeting(t, url, "greeting v2", time.Minute)
		for _, s := range rep.Steps {
			t.Logf("step %s: %s", s.Name, s.Duration.Round(time.Millisecond))
		}
		t.Logf("update to slot b in %s (push %.1f MB/s)", time.Since(phase).Round(time.Millisecond), rep.PushMBps())
	})
	if t.Failed() {
		return
	}

	t.Run("rollback", func(t *testing.T) {
		phase := time.Now()
		cfgBad := writeHello(t, appDir, "greeting bad", "-no-such-flag")
		marksBefore := strings.Count(console.String(), cmdlineMark)
		_, err := New(c, opts...).Update(ctx, cfgBad)
		if err == nil || !strings.Contains(err.Error(), "trial failed") {
			t.Fatalf("Update to a crashing build = %v, want a failed trial", err)
		}
		t.Logf("update to the crashing build: %v", err)
		st, err := callStatus(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if st.Slot != "b" || st.SlotState == nil || st.SlotState.Active != "b" || st.SlotState.Trial != "" ||
			st.SlotState.LastFailed == nil || st.SlotState.LastFailed.Slot != "a" ||
			!strings.Contains(st.SlotState.LastFailed.Reason, "hello") {
			t.Errorf("after the failed trial: slot %q, slot.json %+v (last_failed %+v); want b active, a failed because of service hello",
				st.Slot, st.SlotState, st.SlotState.LastFailed)
		}
		// The record: the crashing build over v2, failed, with
		// slot.json's reason; it survived the trial's reboots.
		lu := waitLastUpdate(t, c, mgmt.OutcomeFailed)
		if lu.Slot != "a" || lu.FromSlot != "b" || lu.FromBuildID != st.BuildID || lu.BuildID == "" || lu.BuildID == st.BuildID ||
			st.SlotState.LastFailed == nil || lu.Reason != st.SlotState.LastFailed.Reason || lu.Finished.Before(lu.Started) {
			t.Errorf("last update after the failed trial = %+v; want slot a, a new build over b's %s, failed with slot.json's reason %+v",
				lu, st.BuildID, st.SlotState.LastFailed)
		}
		t.Logf("last update: %+v", lu)
		waitGreeting(t, url, "greeting v2", time.Minute)
		// The trial of a booted a's command line; the fallback booted b's
		// again, with its mark.
		if n := strings.Count(console.String(), cmdlineMark); n <= marksBefore {
			t.Errorf("console shows %d boots with %s, %d before the failed trial: the fallback to b did not boot b's command line", n, cmdlineMark, marksBefore)
		}
		// Why the trial failed is in the failed boot's log, which only
		// perm still has: this boot's memory does not.
		const why = "flag provided but not defined: -no-such-flag"
		if got := logTexts(t, func() (*mgmt.LogStream, error) { return c.DiskLogs(ctx, "hello", -1) }); !strings.Contains(got, why) {
			t.Errorf("hello's log on disk lacks the trial's %q:\n%s", why, got)
		}
		if got := logTexts(t, func() (*mgmt.LogStream, error) { return c.Logs(ctx, "hello", -1, false) }); strings.Contains(got, why) {
			t.Errorf("hello's log of this boot has the failed trial's %q:\n%s", why, got)
		}
		t.Logf("fell back to slot b in %s; reason: %s", time.Since(phase).Round(time.Millisecond), st.SlotState.LastFailed.Reason)
	})
	if t.Failed() {
		return
	}

	// A build that runs but fails its health check: the process never
	// exits, only /healthz says 503.
	t.Run("unhealthy", func(t *testing.T) {
		phase := time.Now()
		cfgSick := writeHello(t, appDir, "greeting sick", "-unhealthy")
		_, err := New(c, opts...).Update(ctx, cfgSick)
		if err == nil || !strings.Contains(err.Error(), "trial failed") {
			t.Fatalf("Update to an unhealthy build = %v, want a failed trial", err)
		}
		st, err := callStatus(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if st.Slot != "b" || st.SlotState == nil || st.SlotState.LastFailed == nil ||
			!strings.Contains(st.SlotState.LastFailed.Reason, "service hello: health check") ||
			!strings.Contains(st.SlotState.LastFailed.Reason, "HTTP 503") {
			t.Errorf("after the unhealthy trial: slot %q, slot.json %+v; want b, a failed by hello's health check (HTTP 503)", st.Slot, st.SlotState)
		}
		waitGreeting(t, url, "greeting v2", time.Minute)
		var h *mgmt.Health
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
			if st, err := callStatus(ctx, c); err == nil {
				for _, sv := range st.Services {
					if sv.Name == "hello" {
						h = sv.Health
					}
				}
			}
			if h != nil && h.State == "healthy" {
				break
			}
		}
		if h == nil || h.State != "healthy" {
			t.Errorf("hello on b after the fallback: health %+v, want healthy", h)
		}
		t.Logf("fell back from the unhealthy build in %s; reason: %s", time.Since(phase).Round(time.Millisecond), st.SlotState.LastFailed.Reason)
	})
}

// waitLastUpdate polls the agent's status until its record of the last
// update has outcome want, and returns it; after a minute it fails the
// test with the record it last saw.
func waitLastUpdate(t *testing.T, c *mgmt.Client, want string) mgmt.LastUpdate {
	t.Helper()
	var last *mgmt.LastUpdate
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		st, err := callStatus(t.Context(), c)
		if err != nil {
			continue
		}
		if last = st.LastUpdate; last != nil && last.Outcome == want {
			return *last
		}
	}
	t.Fatalf("last update = %+v, want outcome %s", last, want)
	return mgmt.LastUpdate{}
}

// logTexts reads a whole log stream into its texts, one per line.
func logTexts(t *testing.T, open func() (*mgmt.LogStream, error)) string {
	t.Helper()
	s, err := open()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var b strings.Builder
	for {
		l, err := s.Next()
		if errors.Is(err, io.EOF) {
			return b.String()
		}
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(l.Text + "\n")
	}
}

// cmdlineMark is what the v2 image of TestVMUpdate adds to slot b's
// kernel command line, which the update installs; the kernel prints its
// command line on the console at every boot.
const cmdlineMark = "ingot.test_mark=v2"

// appendCmdline adds word to the command line the image boots slot b
// with.
func appendCmdline(t *testing.T, img, word string) {
	t.Helper()
	im, err := image.OpenRW(img)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	bootFS, err := im.Boot()
	if err != nil {
		t.Fatal(err)
	}
	name := slot.B.BootFile(layout.CmdlineFile)
	old, err := bootFS.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := im.RewriteBoot(name, []byte(strings.TrimSpace(string(old))+" "+word+"\n")); err != nil {
		t.Fatal(err)
	}
}

// errReader fails the upload after the bytes before it, as a client that
// dies mid-stream would.
type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

func slotDiff(a, b *mgmt.SlotState) string {
	if a == nil || b == nil {
		return fmt.Sprintf("%+v -> %+v", a, b)
	}
	if a.Active != b.Active || a.Trial != b.Trial || a.TriesLeft != b.TriesLeft || (a.LastFailed == nil) != (b.LastFailed == nil) {
		return fmt.Sprintf("%+v -> %+v", *a, *b)
	}
	return ""
}

// waitLog reports whether the named log shows a line containing want
// within limit.
func waitLog(ctx context.Context, c *mgmt.Client, name, want string, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		s, err := c.Logs(ctx, name, -1, false)
		if err == nil {
			for {
				l, err := s.Next()
				if err != nil {
					break
				}
				if strings.Contains(l.Text, want) {
					s.Close()
					return true
				}
			}
			s.Close()
		}
		time.Sleep(300 * time.Millisecond)
	}
	return false
}
