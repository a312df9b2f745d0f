package metrics

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ingotdev/ingot/appliance/cgroup"
	"github.com/ingotdev/ingot/appliance/syslog"
	"github.com/ingotdev/ingot/mgmt"
)

func fakeProc(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range map[string]string{
		"meminfo": "MemTotal:        1000 kB\nMemFree:          500 kB\nMemAvailable:     700 kB\n",
		"loadavg": "0.50 0.25 0.125 1/80 1234\n",
		"uptime":  "123.45 100.00\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func testExporter(t *testing.T) *Exporter {
	t.Helper()
	return New(Sources{
		Status: func() mgmt.Status {
			return mgmt.Status{Name: "hello", BuildID: "b-1", Target: "vm-amd64", Arch: "amd64", Slot: "a", Trial: true,
				Perm: mgmt.PermStatus{Mounted: true, UsedBytes: 10, TotalBytes: 100},
				Services: []mgmt.ServiceStatus{
					{Name: "hello", State: mgmt.StateRunning, Restarts: 2, OOMKills: 1, Health: &mgmt.Health{State: "healthy"}},
					{Name: "web\"x", State: mgmt.StateBackoff},
				}}
		},
		Usage: func(name string) (cgroup.Usage, error) {
			if name != "hello" {
				return cgroup.Usage{}, os.ErrNotExist
			}
			return cgroup.Usage{CPUSeconds: 1.5, MemoryBytes: 4096}, nil
		},
		SlotState: func(context.Context) (mgmt.SlotState, error) {
			return mgmt.SlotState{Active: "a", Trial: "b", LastFailed: &mgmt.SlotFailure{Slot: "b", Reason: "trial health check: \"hello\" unhealthy\nline 2"}}, nil
		},
		LastUpdate: func(context.Context) *mgmt.LastUpdate {
			return &mgmt.LastUpdate{Started: time.Unix(1764842400, 500e6), Slot: "b", BuildID: "b-2", Release: 7, FromSlot: "a", FromBuildID: "b-1",
				Outcome: mgmt.OutcomeFailed, Finished: time.Unix(1764842460, 0), Reason: "trial health check: x"}
		},
		RemoteLogs: func() (syslog.Stats, bool) {
			return syslog.Stats{SpoolBytes: 100, SpoolMaxBytes: 1000, Dropped: 3, Sent: 50, Connected: true}, true
		},
		ProcDir: fakeProc(t),
	})
}

func TestExposition(t *testing.T) {
	e := testExporter(t)
	e.CountRequest("GET /v1/status", 200)
	e.CountRequest("GET /v1/status", 200)
	e.CountRequest("unauthenticated", 401)
	var buf bytes.Buffer
	e.Write(context.Background(), &buf)
	out := buf.String()
	for _, want := range []string{
		`ingot_build_info{name="hello",build_id="b-1",target="vm-amd64",arch="amd64",slot="a"} 1`,
		`ingot_service_up{service="hello"} 1`,
		`ingot_service_up{service="web\"x"} 0`,
		`ingot_service_restarts_total{service="hello"} 2`,
		`ingot_service_oom_kills_total{service="hello"} 1`,
		`ingot_service_health{service="hello",state="healthy"} 1`,
		`ingot_service_health{service="hello",state="unhealthy"} 0`,
		`ingot_service_cpu_seconds_total{service="hello"} 1.5`,
		`ingot_service_memory_bytes{service="hello"} 4096`,
		`ingot_node_memory_total_bytes 1024000`,
		`ingot_node_memory_available_bytes 716800`,
		`ingot_node_load5 0.25`,
		`ingot_node_uptime_seconds 123.45`,
		`ingot_perm_used_bytes 10`,
		`ingot_agent_requests_total{route="GET /v1/status",code="200"} 2`,
		`ingot_agent_requests_total{route="unauthenticated",code="401"} 1`,
		`ingot_update_trial 1`,
		`ingot_update_trial_pending{slot="b"} 1`,
		`ingot_update_last_failed{slot="b",reason="trial health check: \"hello\" unhealthy\nline 2"} 1`,
		`ingot_update_last_timestamp_seconds 1764842400`,
		`ingot_update_last_finished_timestamp_seconds 1764842460`,
		`ingot_update_last_outcome{outcome="failed",slot="b",build_id="b-2",release="7"} 1`,
		`ingot_update_last_outcome{outcome="confirmed",slot="b",build_id="b-2",release="7"} 0`,
		`ingot_update_last_outcome{outcome="pending",slot="b",build_id="b-2",release="7"} 0`,
		`ingot_logs_spool_bytes 100`,
		`ingot_logs_dropped_lines_total 3`,
		`ingot_logs_remote_connected 1`,
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("exposition lacks %s", want)
		}
	}
	if strings.Contains(out, `service_cpu_seconds_total{service="web`) {
		t.Errorf("a service without a cgroup has a CPU series")
	}
	promtool(t, out)
}

// promtool runs Prometheus' own linter over the exposition.
func promtool(t *testing.T, exposition string) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool (Debian's prometheus package, installed by scripts/setup.sh): %v", err)
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = strings.NewReader(exposition)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s\nexposition:\n%s", err, out, exposition)
	}
}

func TestExpositionWithoutOptionalSources(t *testing.T) {
	e := New(Sources{Status: func() mgmt.Status { return mgmt.Status{} }, ProcDir: t.TempDir(),
		SlotState: func(context.Context) (mgmt.SlotState, error) { return mgmt.SlotState{}, errors.New("no slot.json") }})
	var buf bytes.Buffer
	e.Write(context.Background(), &buf)
	if !strings.Contains(buf.String(), "ingot_update_state_error 1\n") {
		t.Errorf("exposition lacks the slot.json error:\n%s", buf.String())
	}
	if strings.Contains(buf.String(), "ingot_update_last_") {
		t.Errorf("exposition has a last update without a record:\n%s", buf.String())
	}
	promtool(t, buf.String())
}

// TestExpositionPendingUpdate: a pending update has a start but no finish.
func TestExpositionPendingUpdate(t *testing.T) {
	e := New(Sources{Status: func() mgmt.Status { return mgmt.Status{} }, ProcDir: t.TempDir(),
		LastUpdate: func(context.Context) *mgmt.LastUpdate {
			return &mgmt.LastUpdate{Started: time.Unix(1764842400, 0), Slot: "a", FromSlot: "b", Outcome: mgmt.OutcomePending}
		}})
	var buf bytes.Buffer
	e.Write(context.Background(), &buf)
	out := buf.String()
	for _, want := range []string{
		"ingot_update_last_timestamp_seconds 1764842400\n",
		`ingot_update_last_outcome{outcome="pending",slot="a",build_id="",release="0"} 1` + "\n",
		`ingot_update_last_outcome{outcome="rolled-back",slot="a",build_id="",release="0"} 0` + "\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, famUpdateLastEnd) {
		t.Errorf("a pending update has a finish time:\n%s", out)
	}
	promtool(t, out)
}
