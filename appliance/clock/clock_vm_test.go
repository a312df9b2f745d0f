package clock

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ingotdev/ingot/builder/assemble"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/hypervisor/vm"
	"github.com/ingotdev/ingot/internal/vmtest"
	"github.com/ingotdev/ingot/mgmt"
)

// clockedMain is the service of TestVMClock: it says what time it found
// when it started, then idles.
const clockedMain = `package main

import (
	"fmt"
	"time"
)

func main() {
	fmt.Println("the time is", time.Now().UTC().Format(time.RFC3339Nano))
	for {
		time.Sleep(time.Hour)
	}
}
`

// rtcStart is where the guest's real-time clock starts on every boot.
var rtcStart = time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)

// writeClocked writes an appliance directory whose one service waits for
// the clock, synced from the NTP server at ntp (host:port as the guest
// sees it).
func writeClocked(t *testing.T, dir, ntp string) *config.Config {
	t.Helper()
	files := map[string]string{
		"go.mod":              "module clocked\n\ngo 1.26\n",
		"cmd/clocked/main.go": clockedMain,
		config.FileName: fmt.Sprintf(`name: clocked
targets: [vm-amd64]
services:
  - name: clocked
    go: ./cmd/clocked
    wait_for_clock: true
clock: {ntp: [%q]}
`, ntp),
	}
	tok, err := os.ReadFile("../../examples/hello/.ingot/token")
	if err != nil {
		t.Fatal(err)
	}
	files[config.DefaultTokenFile] = string(tok)
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := config.Load(filepath.Join(dir, config.FileName))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

var clockedTimeRE = regexp.MustCompile(`clocked: the time is (\S+)`)

// TestVMClock is issue 16's clock: an appliance whose RTC starts in 2001
// syncs from an NTP server the test runs on the host's loopback (the
// guest reaches it as 10.0.2.2 through QEMU's user network), and its
// wait_for_clock service starts only after that. Rebooted with the server
// down, the clock starts no earlier than the last shutdown, the service
// waits and the status says why; once the server is back, it starts.
func TestVMClock(t *testing.T) {
	vmtest.Kernel(t, "amd64")
	ctx := t.Context()
	tmp := t.TempDir()
	srv := startNTPServer(t, "127.0.0.1:0", 0)
	port := srv.port()
	guestServer := fmt.Sprintf("10.0.2.2:%d", port)
	appDir := filepath.Join(tmp, "clocked")
	cfg := writeClocked(t, appDir, guestServer)
	img := filepath.Join(tmp, "clocked.img")
	if _, err := assemble.Image(ctx, cfg, config.TargetVMAmd64, img, assemble.WithCacheDir(filepath.Join(tmp, "cache"))); err != nil {
		t.Fatal(err)
	}

	console := &vmtest.Console{}
	runDir := filepath.Join(tmp, "run")
	vmCtx, stopVM := context.WithCancel(ctx)
	vmDone := make(chan error, 1)
	go func() {
		vmDone <- vm.Run(vmCtx, vm.Config{Image: img, RunDir: runDir, Accel: qemu.AccelTCG, MemoryMiB: 512,
			Console: console, Logf: t.Logf, RTCStart: rtcStart})
	}()
	t.Cleanup(func() {
		stopVM()
		select {
		case <-vmDone:
		case <-time.After(2 * time.Minute):
			t.Error("the VM did not stop within 2 minutes")
		}
		if t.Failed() {
			t.Logf("console (tail):\n%s", console.Tail(6000))
		}
	})
	tok, err := os.ReadFile(cfg.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := mgmt.NewClient(fmt.Sprintf("unix://%s?port=%d", vm.VsockPath(runDir), config.DefaultVsockPort), string(tok))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// waitConsole waits for re in the console after offset from.
	waitConsole := func(from int, re *regexp.Regexp, limit time.Duration) []string {
		t.Helper()
		deadline := time.Now().Add(limit)
		for {
			if m := re.FindStringSubmatch(console.String()[from:]); m != nil {
				return m
			}
			if time.Now().After(deadline) {
				t.Fatalf("the console did not show %q within %v", re, limit)
			}
			select {
			case err := <-vmDone:
				t.Fatalf("the VM stopped: %v", err)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	// status polls the agent until cond holds for its status.
	status := func(what string, cond func(mgmt.Status) bool) mgmt.Status {
		t.Helper()
		deadline := time.Now().Add(3 * time.Minute)
		var last mgmt.Status
		var lastErr error
		for time.Now().Before(deadline) {
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			last, lastErr = c.Status(sctx)
			cancel()
			if lastErr == nil && last.Clock != nil && cond(last) {
				return last
			}
			time.Sleep(500 * time.Millisecond)
		}
		t.Fatalf("status never showed %s: last %+v (clock %+v), error %v", what, last, last.Clock, lastErr)
		return last
	}
	parse := func(s string) time.Time {
		t.Helper()
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}

	// Boot 1: the RTC says 2001; NTP sets the clock, then the service starts.
	hostBefore := time.Now()
	m := waitConsole(0, clockedTimeRE, 4*time.Minute)
	boot1 := console.String()
	if !regexp.MustCompile(`init: clock: at boot 2001-01-01T`).MatchString(boot1) {
		t.Errorf("boot 1: init did not find the RTC's 2001 at boot")
	}
	stepped := strings.Index(boot1, "init: clock: stepped by")
	started := strings.Index(boot1, "clocked: started pid")
	if stepped < 0 || started < 0 || started < stepped {
		t.Errorf("boot 1: the clock stepped at console offset %d, the service started at %d; want the step first", stepped, started)
	}
	if n := strings.Count(console.String(), "clocked: started pid"); n != 1 {
		t.Errorf("boot 1: the service started %d times, want once", n)
	}
	if got := parse(m[1]); got.Before(hostBefore.Add(-time.Second)) {
		t.Errorf("boot 1: the service found the time %v, want at least the host's %v (the NTP server's)", got, hostBefore)
	}
	st := status("the clock synced", func(s mgmt.Status) bool { return s.Clock.Synced })
	if st.Clock.Server != guestServer || st.Clock.OffsetSeconds < 20*365*24*3600 || st.Clock.Error != "" {
		t.Errorf("boot 1: clock %+v, want synced from %s with an offset of more than 20 years", st.Clock, guestServer)
	}
	// The bound, measured by the guest's own clock from the
	// client's start to the first sync.
	t.Logf("boot 1: first sync %.2f s after the NTP client started; offset %.0f s", st.Clock.FirstSyncSeconds, st.Clock.OffsetSeconds)
	if st.Clock.FirstSyncSeconds > 10 {
		t.Errorf("boot 1: first sync after %.1f s, want within 10 s", st.Clock.FirstSyncSeconds)
	}
	lastKnown := st.Clock.Now

	// Boot 2: the server is down. The clock starts where boot 1 stopped.
	srv.stop()
	if err := c.Reboot(ctx); err != nil {
		t.Fatal(err)
	}
	// Boot 2's lines follow its init's first; boot 1's QEMU has ended by
	// then, so none of its lines (printed late) can come after it.
	const stage1Start = "init: ingot-init stage1"
	waitConsole(strings.Index(console.String(), stage1Start)+1, regexp.MustCompile(regexp.QuoteMeta(stage1Start)), 4*time.Minute)
	from := strings.LastIndex(console.String(), stage1Start)
	if !regexp.MustCompile(`init: clock: saved \S+ on perm`).MatchString(console.String()[:from]) {
		t.Errorf("boot 1: init did not save the time on perm at its shutdown")
	}
	moved := waitConsole(from, regexp.MustCompile(`init: clock: moved forward from (\S+) to (\S+), the time saved at the last shutdown`), 4*time.Minute)
	if !strings.HasPrefix(moved[1], "2001-01-01T") {
		t.Errorf("boot 2: moved forward from %s, want from the RTC's 2001-01-01", moved[1])
	}
	if to := parse(moved[2]); to.Before(lastKnown.Truncate(time.Second)) {
		t.Errorf("boot 2: moved forward to %v, earlier than %v, the clock before the reboot", to, lastKnown)
	}
	waitConsole(from, regexp.MustCompile(`clocked: waiting for the clock \(wait_for_clock\): ntp `+regexp.QuoteMeta(guestServer)), 2*time.Minute)
	st = status("boot 2 waiting for the clock", func(s mgmt.Status) bool {
		return !s.Clock.Restored.IsZero() && s.Clock.Error != "" && len(s.Services) > 0
	})
	if st.Clock.Synced || !strings.Contains(st.Clock.Error, guestServer) {
		t.Errorf("boot 2: clock %+v, want not synced, naming %s", st.Clock, guestServer)
	}
	if st.Clock.Now.Before(lastKnown) || st.Clock.Restored.Before(lastKnown.Truncate(time.Second)) {
		t.Errorf("boot 2: the clock says %v (restored %v), earlier than %v, its time before the reboot", st.Clock.Now, st.Clock.Restored, lastKnown)
	}
	var svc mgmt.ServiceStatus
	for _, s := range st.Services {
		if s.Name == "clocked" {
			svc = s
		}
	}
	if svc.State != mgmt.StateHeld || !strings.HasPrefix(svc.Reason, "waiting for the clock (wait_for_clock): ntp "+guestServer) {
		t.Errorf("boot 2: service %+v, want held, waiting for the clock, naming the server", svc)
	}
	t.Logf("boot 2: clocked %s (%s); clock error %q", svc.State, svc.Reason, st.Clock.Error)
	if strings.Contains(console.String()[from:], "clocked: started pid") {
		t.Errorf("boot 2: the service started without a synced clock")
	}

	// The server comes back on the same port: the clock syncs and the
	// service starts.
	hostBefore = time.Now()
	srv = startNTPServer(t, fmt.Sprintf("127.0.0.1:%d", port), 0)
	m = waitConsole(from, clockedTimeRE, 2*time.Minute)
	if got := parse(m[1]); got.Before(hostBefore.Add(-time.Second)) {
		t.Errorf("boot 2: the service found the time %v once the server was back, want at least %v", got, hostBefore)
	}
	st = status("boot 2 synced", func(s mgmt.Status) bool { return s.Clock.Synced })
	t.Logf("boot 2: synced from %s, %d requests to the restarted server", st.Clock.Server, srv.count())
}
