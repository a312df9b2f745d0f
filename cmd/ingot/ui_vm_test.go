package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ingotdev/ingot/builder/assemble"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/hypervisor/vm"
	"github.com/ingotdev/ingot/internal/vmtest"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/certpin"
)

// webUIArtifacts is where the test leaves its screenshots for a person to
// look at, relative to the repository root (gitignored with .cache).
const webUIArtifacts = ".cache/artifacts/webui"

// TestVMWebUI boots examples/hello under TCG, opens its web page through
// `ingot ui` (a local port forwarded over hybrid vsock) in headless
// Chromium, and checks the whole way: refused without the token, logged in,
// hello running and healthy, a restart confirmed in the page, restarts at
// 1 and the new log lines arriving without a reload; a POST without the
// CSRF token gets 403. The page is also served on the TLS management port.
// Screenshots go to .cache/artifacts/webui/.
func TestVMWebUI(t *testing.T) {
	vmtest.Kernel(t, "amd64")
	ctx := t.Context()
	tmp := t.TempDir()
	cfg, err := config.Load("../../examples/hello/ingot.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Management.TCP = ":7443" // the TLS port too, as on a Pi
	img := filepath.Join(tmp, "hello.img")
	start := time.Now()
	if _, err := assemble.Image(ctx, cfg, config.TargetVMAmd64, img, assemble.WithCacheDir(filepath.Join(tmp, "cache"))); err != nil {
		t.Fatal(err)
	}
	t.Logf("built in %s", time.Since(start).Round(time.Millisecond))

	runDir := filepath.Join(tmp, "run")
	tlsPort := vmtest.FreePort(t)
	console := &vmtest.Console{}
	vmCtx, stopVM := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- vm.Run(vmCtx, vm.Config{
			Image: img, RunDir: runDir, Accel: qemu.AccelTCG, MemoryMiB: 512,
			Forwards: []qemu.Forward{{Proto: "tcp", HostPort: tlsPort, GuestPort: 7443}},
			Console:  console, Logf: t.Logf,
		})
	}()
	t.Cleanup(func() {
		stopVM()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Error("VM did not stop within a minute")
		}
		if t.Failed() {
			t.Logf("console (tail):\n%s", console.Tail(6000))
		}
	})

	tokenFile := filepath.Join("../../examples/hello", filepath.FromSlash(config.DefaultTokenFile))
	tokBytes, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tokBytes))
	target := hybridTarget(vm.VsockPath(runDir), config.DefaultVsockPort)
	client, err := mgmt.NewClient(target, token)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	hello := waitHealthy(t, ctx, client, "hello", 4*time.Minute)
	t.Logf("hello running and healthy %s after start", time.Since(start).Round(time.Millisecond))
	if hello.Restarts != 0 {
		t.Fatalf("hello has %d restarts before the test, want 0", hello.Restarts)
	}

	t.Run("tls port", func(t *testing.T) { checkUIOverTLS(t, cfg, tlsPort, token) })

	// ingot ui, in-process: it prints the URL on stdout.
	uiCtx, stopUI := context.WithCancel(ctx)
	defer stopUI()
	outR, outW := io.Pipe()
	uiErr := make(chan error, 1)
	stderr := &vmtest.Console{}
	go func() {
		uiErr <- runUI(uiCtx, outW, stderr, []string{"-target", target, "-token-file", tokenFile})
		outW.Close()
	}()
	line, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil {
		t.Fatalf("ingot ui printed no URL: %v; stderr: %s; exit: %v", err, stderr, <-uiErr)
	}
	base := strings.TrimSuffix(strings.TrimSpace(line), "/")
	if u, err := url.Parse(base); err != nil || !strings.HasPrefix(u.Host, "127.0.0.1:") {
		t.Fatalf("ingot ui printed %q, want http://127.0.0.1:PORT/", line)
	}
	go io.Copy(io.Discard, outR)
	t.Logf("ingot ui: %s", base)

	artifacts := filepath.Join("../..", webUIArtifacts)
	driveWebUI(t, base, token, "hello", artifacts, func() int {
		st, err := client.Status(ctx)
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		for _, s := range st.Services {
			if s.Name == "hello" {
				return s.Restarts
			}
		}
		t.Fatal("no hello in status")
		return 0
	})
	t.Logf("web UI checks done %s after start; screenshots in %s", time.Since(start).Round(time.Millisecond), webUIArtifacts)

	stopUI()
	select {
	case err := <-uiErr:
		if err != nil {
			t.Errorf("ingot ui after stop: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("ingot ui did not stop within 30 s of its context")
	}
}

// newBrowser starts headless Chromium for the test; it ends with the test.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.NoSandbox, // the tests run as root
		chromedp.WindowSize(1280, 800),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	t.Cleanup(cancelAlloc)
	bctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancel)
	// The first action starts the browser, which lives as long as the
	// context of that call: that one has no timeout.
	if err := chromedp.Do(bctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("browser: start chromium: %v", err)
	}
	return bctx
}

// waitHealthy polls the agent until service runs and its check passed.
func waitHealthy(t *testing.T, ctx context.Context, c *mgmt.Client, service string, limit time.Duration) mgmt.ServiceStatus {
	t.Helper()
	deadline := time.Now().Add(limit)
	var last string
	for time.Now().Before(deadline) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		st, err := c.Status(cctx)
		cancel()
		if err != nil {
			last = err.Error()
		} else {
			for _, s := range st.Services {
				if s.Name == service {
					last = fmt.Sprintf("%s %+v", s.State, s.Health)
					if s.State == mgmt.StateRunning && s.Health != nil && s.Health.State == "healthy" {
						return s
					}
				}
			}
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("%s not running and healthy within %s: %s", service, limit, last)
	return mgmt.ServiceStatus{}
}

// checkUIOverTLS logs in on the page through the TLS management port with
// a pinned client, as a browser on the LAN would.
func checkUIOverTLS(t *testing.T, cfg *config.Config, port int, token string) {
	certPEM, err := os.ReadFile(cfg.Management.TLSCertFile)
	if err != nil {
		t.Fatal(err)
	}
	pin, err := certpin.OfPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			InsecureSkipVerify: true, // the pin below is the check
			VerifyConnection: func(cs tls.ConnectionState) error {
				if got := certpin.OfDER(cs.PeerCertificates[0].Raw); got != pin {
					return fmt.Errorf("certificate %s, want %s", got, pin)
				}
				return nil
			},
		}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	resp, err := c.Get(base + "/ui/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatalf("GET %s/ui/login = %d, CSP %q", base, resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
	}
	resp, err = c.PostForm(base+"/ui/login", url.Values{"token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var session *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == "ingot_session" {
			session = ck
		}
	}
	if resp.StatusCode != http.StatusSeeOther || session == nil || !session.Secure || !session.HttpOnly {
		t.Fatalf("login over TLS = %d, cookie %+v; want 303 and a Secure HttpOnly session", resp.StatusCode, session)
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/ui/api/status", nil)
	req.AddCookie(session)
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"name":"hello"`) {
		t.Fatalf("status over TLS with the session = %d %s", resp.StatusCode, b)
	}
}

// driveWebUI runs the page at base in headless Chromium: refused without
// the token, log in, service running and healthy, a POST without the CSRF
// token refused, the log view, a restart confirmed in a dialog, the new
// log lines and restarts 1, all without a reload. restarts asks the agent
// directly. Screenshots are written to dir.
func driveWebUI(t *testing.T, base, token, service, dir string, restarts func() int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bctx := newBrowser(t)
	// Every step is bounded; TCG guests are slow, so generously.
	run := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(bctx, 3*time.Minute)
		defer cancel()
		if err := chromedp.Do(sctx, steps...); err != nil {
			t.Fatalf("browser: %s: %v", what, err)
		}
	}
	eval := func(what, js string, await bool) string {
		t.Helper()
		var eopts []chromedp.EvaluateOption
		if await {
			eopts = append(eopts, chromedp.EvalAwaitPromise)
		}
		sctx, cancel := context.WithTimeout(bctx, time.Minute)
		defer cancel()
		v, err := chromedp.Run(sctx, chromedp.Evaluate[string](js, eopts...))
		if err != nil {
			t.Fatalf("browser: %s: %v", what, err)
		}
		return v
	}
	poll := func(js string) chromedp.Action[chromedp.Void] {
		return chromedp.Poll[chromedp.Void](js, chromedp.WithPollingInterval(200*time.Millisecond), chromedp.WithPollingTimeout(2*time.Minute))
	}
	shot := func(name string, w, h int64) {
		t.Helper()
		sctx, cancel := context.WithTimeout(bctx, time.Minute)
		defer cancel()
		vopts := []chromedp.EmulateViewportOption{}
		if w < 600 {
			vopts = append(vopts, chromedp.EmulateScale(2), chromedp.EmulateMobile, chromedp.EmulateTouch, chromedp.EmulatePortrait)
		}
		if err := chromedp.Do(sctx, chromedp.EmulateViewport(w, h, vopts...),
			chromedp.Poll[chromedp.Void](`new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))`)); err != nil {
			t.Fatalf("browser: viewport %dx%d: %v", w, h, err)
		}
		png, err := chromedp.Run(sctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatalf("browser: screenshot %s: %v", name, err)
		}
		path := filepath.Join(dir, fmt.Sprintf("%s-%dx%d.png", name, w, h))
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := chromedp.Do(sctx, chromedp.EmulateViewport(1280, 800)); err != nil {
			t.Fatal(err)
		}
	}
	sel := func(field string) string {
		return fmt.Sprintf(`[data-service=%q] [data-field=%q]`, service, field)
	}
	text := func(css string) string {
		return fmt.Sprintf(`(document.querySelector(%q)||{}).textContent`, css)
	}

	// Without the token: every way in leads to the login page.
	run("open "+base, chromedp.Navigate(base+"/"), chromedp.WaitVisible("#token"))
	if loc := eval("location", `location.pathname`, false); loc != "/ui/login" {
		t.Fatalf("opening %s/ ended at %s, want /ui/login", base, loc)
	}
	for _, p := range []string{"/ui/api/status", "/v1/status"} {
		if got := eval("fetch "+p, fmt.Sprintf(`fetch(%q).then(r => String(r.status))`, p), true); got != "401" {
			t.Errorf("GET %s without logging in = %s, want 401", p, got)
		}
	}
	run("wrong token", chromedp.SendKeys("#token", "not-the-token-"+strings.Repeat("0", 32)), chromedp.Click("#login-submit"),
		chromedp.WaitVisible("#login-error"))
	if loc := eval("location", `location.pathname`, false); loc != "/ui/login" {
		t.Fatalf("after a wrong token the page is %s, want /ui/login", loc)
	}
	shot("login", 390, 844)

	// Log in.
	run("log in", chromedp.SendKeys("#token", token), chromedp.Click("#login-submit"),
		chromedp.WaitVisible(fmt.Sprintf(`[data-service=%q]`, service)))
	eval("mark the page", `window.__ingotNoReload = "yes"`, false)
	run(service+" running and healthy", poll(fmt.Sprintf(`%s === "running" && %s === "healthy"`, text(sel("state")), text(sel("health")))))
	run("memory and load shown", poll(`document.querySelector('[data-card="memory"] .value').textContent.includes(" of ") && !!document.querySelector('[data-card="load"]')`))
	shot("overview", 1280, 800)
	shot("overview", 390, 844)

	// CSRF: the session's cookie alone does not change anything.
	js := fmt.Sprintf(`fetch("/ui/api/services/%s/restart", {method: "POST", credentials: "same-origin"}).then(r => String(r.status))`, service)
	if got := eval("POST without CSRF", js, true); got != "403" {
		t.Fatalf("restart without the CSRF token = %s, want 403", got)
	}
	if n := restarts(); n != 0 {
		t.Fatalf("after a POST without the CSRF token %s has %d restarts, want 0", service, n)
	}

	// The log view follows; a restart from it is confirmed in a dialog.
	countServing := `[...document.querySelectorAll("#logs .line")].filter(l => l.textContent.includes("serving on")).length`
	run("log view", chromedp.Click(fmt.Sprintf(`a[data-logs=%q]`, service)), poll(countServing+` >= 1`))
	shot("logs", 1280, 800)
	shot("logs", 390, 844)
	before := eval("count", `String(`+countServing+`)`, false)
	run("restart", chromedp.Click(`#logs-actions button[data-action="restart"]`), chromedp.WaitVisible("#confirm-ok"))
	if q := eval("dialog", `document.getElementById("confirm-text").textContent`, false); !strings.Contains(q, service) {
		t.Errorf("confirmation asks %q, want the service named", q)
	}
	if n := restarts(); n != 0 {
		t.Fatalf("%s restarted before the confirmation (%d restarts)", service, n)
	}
	run("confirm", chromedp.Click("#confirm-ok"),
		poll(fmt.Sprintf(`%s > %s && [...document.querySelectorAll("#logs .line")].some(l => l.textContent.includes("restarting on request"))`, countServing, before)),
		poll(`document.getElementById("logs-service-state").getAttribute("data-restarts") === "1"`))
	shot("logs-after-restart", 1280, 800)
	run("overview again", chromedp.Click(`a[data-nav="overview"]`),
		poll(fmt.Sprintf(`%s === "1"`, text(sel("restarts")))),
		poll(fmt.Sprintf(`%s === "running" && %s === "healthy"`, text(sel("state")), text(sel("health")))))
	if n := restarts(); n != 1 {
		t.Errorf("the agent reports %d restarts of %s, want 1", n, service)
	}
	if got := eval("no reload", `String(window.__ingotNoReload)`, false); got != "yes" {
		t.Errorf("the page was reloaded (marker %q)", got)
	}

	run("SBOM", chromedp.Click(`a[data-nav="sbom"]`), chromedp.WaitVisible("#sbom tbody tr"))
	shot("sbom", 1280, 800)
}
