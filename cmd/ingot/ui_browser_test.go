package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"strconv"

	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ingotdev/ingot/appliance/agent"
	"github.com/ingotdev/ingot/appliance/logs"
	"github.com/ingotdev/ingot/mgmt"
)

// hostileAppliance is an agent's view of an appliance whose service writes
// HTML into its log and whose status and SBOM carry HTML too: what a
// compromised or careless service (or image) controls.
type hostileAppliance struct {
	ring *logs.Ring
}

const hostileHTML = `<img src=x onerror="window.__ingotXSS=1">`

func (h *hostileAppliance) Status() mgmt.Status {
	return mgmt.Status{
		Name: "web", BuildID: "b1", Target: "vm-amd64", Slot: "a", StartedAt: time.Now().Add(-time.Minute),
		SlotState: &mgmt.SlotState{Active: "a", LastFailed: &mgmt.SlotFailure{Slot: "b", Reason: "trial: " + hostileHTML}},
		LastUpdate: &mgmt.LastUpdate{Started: time.Now().Add(-time.Hour), Slot: "b", BuildID: "b2" + hostileHTML, Release: 4, FromSlot: "a", FromBuildID: "b1",
			Outcome: mgmt.OutcomeFailed, Finished: time.Now().Add(-time.Minute), Reason: "trial health check: " + hostileHTML},
		Warnings: []string{"warning " + hostileHTML},
		Pull: &mgmt.PullStatus{From: "localhost:5000/web:stable", CheckSeconds: 3600, LastCheck: time.Now().Add(-time.Minute),
			Available:   &mgmt.ReleaseInfo{Ref: "localhost:5000/web:stable", Release: 5, BuildID: "b5" + hostileHTML},
			LastFailure: &mgmt.PullFailure{Release: 4, At: time.Now().Add(-time.Hour), Reason: "signature: " + hostileHTML}},
		Services: []mgmt.ServiceStatus{{Name: "web", State: mgmt.StateRunning, PID: 7,
			Health: &mgmt.Health{State: "unhealthy", LastError: hostileHTML}}},
	}
}

func (h *hostileAppliance) Logs(name string, n int, follow bool) (agent.LogStream, error) {
	return agent.RingLines(h.ring, n, follow), nil
}

// TestWebUIShowsHostileTextAsText serves the page from an agent whose
// log lines, health error, warnings, failure reason and SBOM hold HTML
// with an inline handler, and checks in headless Chromium that all of it
// shows as text and nothing runs; and that the Content-Security-Policy
// alone stops an inline handler that gets into the page.
func TestWebUIShowsHostileTextAsText(t *testing.T) {
	app := &hostileAppliance{ring: logs.NewRing(1 << 20)}
	app.ring.Append(time.Now(), logs.Stdout, "GET /?q="+hostileHTML)
	tok := "web-ui-test-token-0123456789abcdef"
	sum := sha256.Sum256([]byte(tok))
	a, err := agent.New(agent.Deps{Info: app, Logs: app, SBOM: func() ([]byte, error) {
		return []byte(`{"spdxVersion":"SPDX-2.3","name":"web","packages":[{"name":"` +
			`<img src=x onerror=\"window.__ingotXSS=2\">","versionInfo":"v1"}]}`), nil
	}}, hex.EncodeToString(sum[:]), agent.WithLogf(t.Logf))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- a.Serve(ctx, l) }()
	t.Cleanup(func() { cancel(); <-served })
	base := "http://" + l.Addr().String()

	bctx := newBrowser(t)
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(bctx, time.Minute)
		defer cancel()
		if err := chromedp.Do(sctx, steps...); err != nil {
			t.Fatalf("browser: %s: %v", what, err)
		}
	}
	check := func(where string) {
		t.Helper()
		sctx, cancel := context.WithTimeout(bctx, time.Minute)
		defer cancel()
		got, err := chromedp.Run(sctx, chromedp.Evaluate[string](
			`String(window.__ingotXSS) + " " + document.querySelectorAll("main img").length + " " + document.querySelector("main").textContent.includes("<img src=x")`))
		if err != nil {
			t.Fatal(err)
		}
		if got != "undefined 0 true" {
			t.Errorf("%s: handler ran, img elements, text shown = %q, want \"undefined 0 true\"", where, got)
		}
	}
	poll := func(js string) chromedp.Action[chromedp.Void] {
		return chromedp.Poll[chromedp.Void](js, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second))
	}
	do("log in", chromedp.Navigate(base+"/ui/login"), chromedp.SendKeys("#token", tok), chromedp.Click("#login-submit"),
		chromedp.WaitVisible(`[data-service="web"]`), poll(`document.getElementById("banner").textContent.includes("<img")`))
	check("overview")
	// The last update's record, in its card as text.
	do("last update", poll(`(() => { const c = document.querySelector('[data-card="update"]');
		return c.classList.contains("bad") && c.querySelector(".value").textContent === "failed (slot b)" &&
			c.querySelector(".sub").textContent.startsWith("build b2<img src=x") &&
			c.querySelector(".sub").textContent.includes("(release 4) over build b1 · committed ") &&
			c.querySelector(".sub").textContent.endsWith(`+strconv.Quote(" · trial health check: "+hostileHTML)+`); })()`))
	// The puller's state, in its card as text.
	do("releases", poll(`(() => { const c = document.querySelector('[data-card="pull"]');
		return c !== null && c.classList.contains("bad") &&
			c.querySelector(".value").textContent === `+strconv.Quote("release 5 (build b5"+hostileHTML+") available")+` &&
			c.querySelector(".sub").textContent.startsWith("from localhost:5000/web:stable, checked ") &&
			c.querySelector(".sub").textContent.endsWith(`+strconv.Quote(" · last failure (release 4): signature: "+hostileHTML)+`); })()`))
	do("log view", chromedp.Click(`a[data-logs="web"]`), poll(`document.querySelector("#logs .line") !== null`))
	check("log view")
	do("sbom", chromedp.Click(`a[data-nav="sbom"]`), chromedp.WaitVisible("#sbom tbody tr"))
	check("SBOM")

	// The second lock: even HTML put into the page as markup runs no
	// inline handler, since the policy allows no inline script.
	js := `new Promise(resolve => {
		const box = document.createElement("div");
		box.innerHTML = '<img src="/ui/static/nothing-here" onerror="window.__ingotCSP=1">';
		box.firstChild.addEventListener("error", () => setTimeout(() => resolve(String(window.__ingotCSP)), 100));
		document.body.append(box);
	})`
	sctx, cancelEval := context.WithTimeout(bctx, time.Minute)
	defer cancelEval()
	got, err := chromedp.Run(sctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	if got != "undefined" {
		t.Errorf("an inline onerror handler ran (%q): the Content-Security-Policy does not hold", got)
	}
}
