package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ingotdev/ingot/appliance/agent"
	"github.com/ingotdev/ingot/appliance/logs"
	"github.com/ingotdev/ingot/mgmt"
)

type cliInfo struct{}

func (cliInfo) Status() mgmt.Status {
	return mgmt.Status{
		Name: "hello", BuildID: "b-7", Arch: "amd64", Slot: "b", Trial: true,
		SlotState: &mgmt.SlotState{Active: "a", Trial: "b"},
		LastUpdate: &mgmt.LastUpdate{Started: time.Now().Add(-2 * time.Minute), Slot: "b", BuildID: "b-7", Release: 3,
			FromSlot: "a", FromBuildID: "b-6", FromRelease: 2, Outcome: mgmt.OutcomePending},
		UptimeSeconds: 61,
		Perm:          mgmt.PermStatus{Mounted: true, UsedBytes: 3 << 20, TotalBytes: 64 << 20},
		Host:          &mgmt.HostStatus{MemTotalBytes: 480 << 20, MemAvailableBytes: 400 << 20, Load: [3]float64{0.5, 0.25, 0.125}, InitRSSBytes: 9 << 20},
		Clock: &mgmt.ClockStatus{Servers: []string{"10.0.2.2:1234"}, Error: "ntp 10.0.2.2:1234: no answer",
			Restored: time.Date(2026, 12, 4, 18, 0, 0, 0, time.UTC)},
		Services: []mgmt.ServiceStatus{
			{Name: "web", State: "running", PID: 42, Restarts: 2, StartedAt: time.Now().Add(-time.Minute),
				LastExit: &mgmt.Exit{Code: 1, RanSeconds: 0.25}},
			{Name: "db", State: "held", Reason: "needs /perm"},
		},
	}
}

type cliSupervisor struct {
	mu      sync.Mutex
	actions []string
}

func (s *cliSupervisor) Service(name string) (mgmt.ServiceStatus, bool) {
	return mgmt.ServiceStatus{Name: name, State: "running", PID: 43}, name == "web"
}

func (s *cliSupervisor) record(a string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.actions = append(s.actions, a)
	return nil
}

func (s *cliSupervisor) Start(_ context.Context, n string) error   { return s.record("start " + n) }
func (s *cliSupervisor) Stop(_ context.Context, n string) error    { return s.record("stop " + n) }
func (s *cliSupervisor) Restart(_ context.Context, n string) error { return s.record("restart " + n) }

type cliLogs struct{ ring *logs.Ring }

func (l cliLogs) Logs(name string, n int, follow bool) (agent.LogStream, error) {
	if name != "web" {
		return nil, mgmt.ErrNotFound
	}
	return agent.RingLines(l.ring, n, follow), nil
}

type cliPower struct{ calls chan string }

func (p cliPower) Reboot(context.Context) error   { p.calls <- "reboot"; return nil }
func (p cliPower) Poweroff(context.Context) error { p.calls <- "poweroff"; return nil }

// startAgent serves fake dependencies on loopback TCP and returns the
// target and an appliance directory holding the token at its default path.
func startFakeAgent(t *testing.T) (target, dir string, sup *cliSupervisor, power cliPower) {
	t.Helper()
	const token = "cli-token"
	dir = t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, ".ingot"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".ingot", "token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ring := logs.NewRing(1 << 16)
	for _, s := range []string{"one", "two", "three"} {
		ring.Append(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), logs.Stdout, s)
	}
	ring.Append(time.Date(2025, 1, 2, 3, 4, 6, 0, time.UTC), logs.Stderr, "oops")
	sup = &cliSupervisor{}
	power = cliPower{calls: make(chan string, 2)}
	sum := sha256.Sum256([]byte(token))
	a, err := agent.New(agent.Deps{Info: cliInfo{}, Supervisor: sup, Logs: cliLogs{ring}, Power: power}, hex.EncodeToString(sum[:]))
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
	return "tcp://" + l.Addr().String(), dir, sup, power
}

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = runMain(context.Background(), &out, &errb, args)
	return code, out.String(), errb.String()
}

func TestManagementCommands(t *testing.T) {
	target, dir, sup, power := startFakeAgent(t)
	conn := []string{"-target", target, "-C", dir}
	tests := []struct {
		args []string
		code int
		want []string // substrings of stdout (code 0) or stderr
	}{
		{[]string{"status"}, 0, []string{"hello (build b-7, amd64)", "b, trial boot (not confirmed yet); slot.json: active a, trial b", "3.0 MiB of 64.0 MiB", "memory 80.0 MiB of 480.0 MiB used, load 0.50 0.25 0.12, init resident 9.0 MiB", "web      running", "exit status 1 after 250ms", "held (needs /perm)",
			"last update  pending build b-7 (release 3) into slot b, replacing build b-6 (release 2) on slot a; committed ",
			"clock        not synced: ntp 10.0.2.2:1234: no answer; moved forward at boot to 2026-12-04T18:00:00Z, saved at the last shutdown"}},
		{[]string{"logs", "-n", "2"}, 0, []string{"three\n", "[stderr] oops\n"}},
		{[]string{"restart"}, 0, []string{"web: restarted, now running (pid 43)"}},
		{[]string{"stop"}, 0, []string{"web: stopped"}},
		{[]string{"reboot"}, 0, []string{"reboot accepted"}},
		{[]string{"restart"}, 1, nil}, // with "nope", below
	}
	for i, tt := range tests {
		args := append(append([]string{tt.args[0]}, conn...), tt.args[1:]...)
		switch {
		case i == len(tests)-1:
			args = append(args, "nope")
		case tt.args[0] == "logs" || tt.args[0] == "restart" || tt.args[0] == "stop":
			args = append(args, "web")
		}
		code, out, errOut := runCLI(t, args...)
		if code != tt.code {
			t.Errorf("ingot %v: exit %d, want %d; stderr %s", args, code, tt.code, errOut)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(out, w) {
				t.Errorf("ingot %v: stdout %q, want %q", args, out, w)
			}
		}
	}
	if got := strings.Join(sup.actions, ","); got != "restart web,stop web" {
		t.Errorf("supervisor actions = %s, want restart web,stop web", got)
	}
	select {
	case c := <-power.calls:
		if c != "reboot" {
			t.Errorf("power call %s, want reboot", c)
		}
	case <-time.After(5 * time.Second):
		t.Error("reboot never reached the power dependency")
	}

	// Flags after the service name; -json; logs lines in order.
	code, out, errOut := runCLI(t, append(append([]string{"logs"}, conn...), "web", "-n", "3")...)
	if code != 0 || strings.Count(out, "\n") != 3 || !strings.HasSuffix(out, "[stderr] oops\n") {
		t.Errorf("ingot logs ... web -n 3: exit %d, stdout %q, stderr %s", code, out, errOut)
	}
	code, out, _ = runCLI(t, append([]string{"status", "-json"}, conn...)...)
	var s mgmt.Status
	if err := json.Unmarshal([]byte(out), &s); code != 0 || err != nil || s.BuildID != "b-7" {
		t.Errorf("ingot status -json: exit %d, %v, build %q", code, err, s.BuildID)
	}

	// A wrong token is reported plainly.
	bad := filepath.Join(t.TempDir(), "token")
	os.WriteFile(bad, []byte("wrong\n"), 0o600)
	code, _, errOut = runCLI(t, "status", "-target", target, "-token-file", bad)
	if code != 1 || !strings.Contains(errOut, "unauthorized: wrong or missing token") {
		t.Errorf("ingot status with a wrong token: exit %d, stderr %q", code, errOut)
	}
	// Usage errors exit 2.
	if code, _, _ := runCLI(t, "logs", "-target", target); code != 2 {
		t.Errorf("ingot logs without SERVICE: exit %d, want 2", code)
	}
}

// TestDescribeLastUpdate prints each outcome of the last update's record.
func TestDescribeLastUpdate(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	base := mgmt.LastUpdate{Started: now.Add(-time.Hour), Slot: "b", BuildID: "new", Release: 4, FromSlot: "a", FromBuildID: "old"}
	tests := []struct {
		outcome, reason string
		want            string
	}{
		{mgmt.OutcomePending, "", "pending build new (release 4) into slot b, replacing build old on slot a; committed 2026-12-04T11:00:00Z (1h0m0s ago)"},
		{mgmt.OutcomeConfirmed, "", "confirmed build new (release 4) into slot b, replacing build old on slot a; committed 2026-12-04T11:00:00Z (1h0m0s ago), confirmed 2026-12-04T11:59:00Z (1m0s ago)"},
		{mgmt.OutcomeFailed, "trial health check: service web is exited", ", failed 2026-12-04T11:59:00Z (1m0s ago): trial health check: service web is exited"},
		{mgmt.OutcomeCancelled, "cancelled by a rollback before its trial boot", "cancelled build new"},
		{mgmt.OutcomeRolledBack, "rolled back by request during its trial boot", "rolled-back build new (release 4) into slot b, replacing build old on slot a; committed 2026-12-04T11:00:00Z (1h0m0s ago), rolled-back 2026-12-04T11:59:00Z (1m0s ago): rolled back by request during its trial boot"},
	}
	for _, tt := range tests {
		u := base
		u.Outcome, u.Reason = tt.outcome, tt.reason
		if tt.outcome != mgmt.OutcomePending {
			u.Finished = now.Add(-time.Minute)
		}
		if got := describeLastUpdate(u, now); !strings.Contains(got, tt.want) {
			t.Errorf("describeLastUpdate(%s) = %q, want %q in it", tt.outcome, got, tt.want)
		}
	}
}

// TestDescribeClockSource: where the servers come from, with the default
// ones after a DHCP server's; nothing from an agent that does not say.
func TestDescribeClockSource(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		c    mgmt.ClockStatus
		want string
	}{
		{mgmt.ClockStatus{Servers: []string{"192.168.1.1"}, Source: mgmt.ClockSourceDHCP, Fallback: []string{"0.pool.ntp.org", "1.pool.ntp.org"}, Synced: true, Server: "192.168.1.1:123"},
			"synced with 192.168.1.1:123, offset 0s at the last sync; servers 192.168.1.1 (from the DHCP server), then 0.pool.ntp.org, 1.pool.ntp.org (default)"},
		{mgmt.ClockStatus{Servers: []string{"0.pool.ntp.org"}, Source: mgmt.ClockSourceDefault, Error: "ntp 0.pool.ntp.org:123: no answer"},
			"not synced: ntp 0.pool.ntp.org:123: no answer; servers 0.pool.ntp.org (default)"},
		{mgmt.ClockStatus{Servers: []string{"10.0.2.2:1234"}, Source: mgmt.ClockSourceConfig},
			"not synced; servers 10.0.2.2:1234 (from ingot.yaml)"},
		{mgmt.ClockStatus{Servers: []string{"10.0.2.2:1234"}}, "not synced"},
		{mgmt.ClockStatus{Source: mgmt.ClockSourceConfig}, "NTP off"},
	} {
		if got := describeClock(tt.c, now); got != tt.want {
			t.Errorf("describeClock(%+v) = %q, want %q", tt.c, got, tt.want)
		}
	}
}

func TestMgmtFlagsTarget(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "tok")
	os.WriteFile(tokenFile, []byte("t"), 0o600)
	tests := []struct{ target, want string }{
		{"unix:///run/x.sock", "unix:///run/x.sock?port=1024"},
		{"unix:///run/x.sock?port=7", "unix:///run/x.sock?port=7"},
		{"vsock://3:1024", "vsock://3:1024"},
	}
	for _, tt := range tests {
		f := &mgmtFlags{dir: dir, target: tt.target, tokenFile: tokenFile}
		c, err := f.client()
		if err != nil {
			t.Errorf("client(-target %s) = %v", tt.target, err)
			continue
		}
		if c.Target() != tt.want {
			t.Errorf("client(-target %s).Target() = %s, want %s", tt.target, c.Target(), tt.want)
		}
	}
	f := &mgmtFlags{dir: dir, tokenFile: tokenFile}
	if _, err := f.client(); err == nil || !strings.Contains(err.Error(), "-target is required") {
		t.Errorf("client() without -target or an image = %v, want a usage error", err)
	}
}
