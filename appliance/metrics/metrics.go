// Package metrics renders the appliance's state in Prometheus' text
// exposition format (version 0.0.4) for the /metrics endpoint: per service
// whether it is up, its restarts, OOM kills, health and its cgroup's CPU
// time and memory; the node's memory, load, uptime and perm usage; the
// agent's requests by route and code; the update state, the last trial's
// failure and the record of the last update (time, outcome); a
// build_info gauge; and the remote log spool.
//
// Values come from Sources at scrape time, so nothing is sampled in the
// background. Sample lines are written by github.com/VictoriaMetrics/metrics
// (its Set counts the agent's requests); HELP and TYPE lines, which that
// library writes only without help text and only through a process-wide
// switch, are written here, once per family, so `promtool check metrics`
// finds nothing to complain about. Every label value goes through
// labelValue; every name is a constant of this package.
package metrics

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	vm "github.com/VictoriaMetrics/metrics"

	"github.com/ingotdev/ingot/appliance/cgroup"
	"github.com/ingotdev/ingot/appliance/syslog"
	"github.com/ingotdev/ingot/mgmt"
)

// ContentType is the text exposition format's media type.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Sources are where the values come from. Status is required; a nil
// function leaves its metrics out.
type Sources struct {
	// Status is the agent's view: build, slot, trial, perm (with usage),
	// services.
	Status func() mgmt.Status
	// Usage is a service's cgroup usage.
	Usage func(service string) (cgroup.Usage, error)
	// SlotState is slot.json now; nil when updates are off.
	SlotState func(ctx context.Context) (mgmt.SlotState, error)
	// LastUpdate is the record of the last update (nil: none); nil when
	// updates are off.
	LastUpdate func(ctx context.Context) *mgmt.LastUpdate
	// RemoteLogs reports the syslog forwarder; false without one.
	RemoteLogs func() (syslog.Stats, bool)
	// ProcDir is where /proc is (default "/proc").
	ProcDir string
}

// Exporter writes the metrics.
type Exporter struct {
	src Sources
	// requests counts the agent's requests by route and code.
	requests *vm.Set
}

// New returns an exporter over src.
func New(src Sources) *Exporter {
	if src.ProcDir == "" {
		src.ProcDir = "/proc"
	}
	return &Exporter{src: src, requests: vm.NewSet()}
}

// Metric families. One place for each name and its help.
const (
	famBuildInfo       = "ingot_build_info"
	famServiceUp       = "ingot_service_up"
	famServiceRestarts = "ingot_service_restarts_total"
	famServiceOOM      = "ingot_service_oom_kills_total"
	famServiceHealth   = "ingot_service_health"
	famServiceCPU      = "ingot_service_cpu_seconds_total"
	famServiceMemory   = "ingot_service_memory_bytes"
	famNodeMemTotal    = "ingot_node_memory_total_bytes"
	famNodeMemAvail    = "ingot_node_memory_available_bytes"
	famNodeLoad1       = "ingot_node_load1"
	famNodeLoad5       = "ingot_node_load5"
	famNodeLoad15      = "ingot_node_load15"
	famNodeUptime      = "ingot_node_uptime_seconds"
	famPermUsed        = "ingot_perm_used_bytes"
	famPermSize        = "ingot_perm_size_bytes"
	famAgentRequests   = "ingot_agent_requests_total"
	famUpdateTrial     = "ingot_update_trial"
	famUpdatePending   = "ingot_update_trial_pending"
	famUpdateLastFail  = "ingot_update_last_failed"
	famUpdateError     = "ingot_update_state_error"
	famUpdateLastTime  = "ingot_update_last_timestamp_seconds"
	famUpdateLastEnd   = "ingot_update_last_finished_timestamp_seconds"
	famUpdateLastOut   = "ingot_update_last_outcome"
	famSpoolBytes      = "ingot_logs_spool_bytes"
	famSpoolMax        = "ingot_logs_spool_max_bytes"
	famLogsDropped     = "ingot_logs_dropped_lines_total"
	famLogsSent        = "ingot_logs_sent_lines_total"
	famLogsConnected   = "ingot_logs_remote_connected"
)

// healthStates are the states of a health check, one series each.
var healthStates = []string{"starting", "healthy", "unhealthy"}

// CountRequest counts one agent request (agent.WithRequestCounter).
func (e *Exporter) CountRequest(route string, code int) {
	name := famAgentRequests + labels("route", route, "code", strconv.Itoa(code))
	// Routes are the agent's patterns and codes are HTTP statuses, so the
	// series are few; the name is valid by construction.
	e.requests.GetOrCreateCounter(name).Inc()
}

// Handler serves the metrics (GET only; the caller adds authentication).
func (e *Exporter) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var buf bytes.Buffer
		e.Write(r.Context(), &buf)
		w.Header().Set("Content-Type", ContentType)
		_, _ = w.Write(buf.Bytes()) // the scraper may be gone
	})
}

// Write writes every metric family to w.
func (e *Exporter) Write(ctx context.Context, w io.Writer) {
	st := e.src.Status()
	family(w, famBuildInfo, "gauge", "Always 1; the labels name the running build.")
	vm.WriteGaugeUint64(w, famBuildInfo+labels("name", st.Name, "build_id", st.BuildID, "target", st.Target,
		"arch", st.Arch, "slot", st.Slot), 1)

	e.writeServices(w, st.Services)
	e.writeNode(w, st)

	family(w, famAgentRequests, "counter", "Requests the management agent and the metrics endpoint answered, by route pattern and HTTP status.")
	e.requests.WritePrometheus(w)

	family(w, famUpdateTrial, "gauge", "1 while this boot is an unconfirmed trial of an update.")
	vm.WriteGaugeUint64(w, famUpdateTrial, b2u(st.Trial))
	if e.src.SlotState != nil {
		s, err := e.src.SlotState(ctx)
		family(w, famUpdateError, "gauge", "1 when slot.json could not be read for these metrics.")
		vm.WriteGaugeUint64(w, famUpdateError, b2u(err != nil))
		if err == nil {
			family(w, famUpdatePending, "gauge", "1 while slot.json holds a trial (the slot label) that has not booted or not been confirmed.")
			if s.Trial != "" {
				vm.WriteGaugeUint64(w, famUpdatePending+labels("slot", s.Trial), 1)
			} else {
				vm.WriteGaugeUint64(w, famUpdatePending+labels("slot", ""), 0)
			}
			family(w, famUpdateLastFail, "gauge", "1 when the last trial failed and fell back; the labels say which slot and why. 0 when none failed.")
			if lf := s.LastFailed; lf != nil {
				vm.WriteGaugeUint64(w, famUpdateLastFail+labels("slot", lf.Slot, "reason", lf.Reason), 1)
			} else {
				vm.WriteGaugeUint64(w, famUpdateLastFail+labels("slot", "", "reason", ""), 0)
			}
		}
	}
	if e.src.LastUpdate != nil {
		if u := e.src.LastUpdate(ctx); u != nil {
			writeLastUpdate(w, *u)
		}
	}
	if e.src.RemoteLogs != nil {
		if s, ok := e.src.RemoteLogs(); ok {
			family(w, famSpoolBytes, "gauge", "Bytes of log lines spooled on perm for the remote syslog receiver.")
			vm.WriteGaugeUint64(w, famSpoolBytes, uint64(s.SpoolBytes))
			family(w, famSpoolMax, "gauge", "The bound of the remote log spool (logs.spool).")
			vm.WriteGaugeUint64(w, famSpoolMax, uint64(s.SpoolMaxBytes))
			family(w, famLogsDropped, "counter", "Log lines dropped before the remote receiver had them (queue or spool full).")
			vm.WriteCounterUint64(w, famLogsDropped, s.Dropped)
			family(w, famLogsSent, "counter", "Log lines written to the remote receiver (lines sent again after a reconnect count again).")
			vm.WriteCounterUint64(w, famLogsSent, s.Sent)
			family(w, famLogsConnected, "gauge", "1 while a connection to the remote syslog receiver is up.")
			vm.WriteGaugeUint64(w, famLogsConnected, b2u(s.Connected))
		}
	}
}

// writeLastUpdate writes the record of the last update: when it was
// committed and decided, and its outcome, one series per outcome.
func writeLastUpdate(w io.Writer, u mgmt.LastUpdate) {
	family(w, famUpdateLastTime, "gauge", "When the last update was committed (Unix time, the appliance's clock).")
	vm.WriteGaugeUint64(w, famUpdateLastTime, unixSeconds(u.Started))
	if !u.Finished.IsZero() {
		family(w, famUpdateLastEnd, "gauge", "When the last update's outcome was decided (Unix time); no series while it is pending.")
		vm.WriteGaugeUint64(w, famUpdateLastEnd, unixSeconds(u.Finished))
	}
	family(w, famUpdateLastOut, "gauge", "1 for the outcome of the last update (pending, confirmed, failed, cancelled, rolled-back), 0 for the others; slot, build_id and release say what it installed.")
	release := strconv.FormatUint(u.Release, 10)
	for _, o := range mgmt.Outcomes() {
		vm.WriteGaugeUint64(w, famUpdateLastOut+labels("outcome", o, "slot", u.Slot, "build_id", u.BuildID, "release", release), b2u(u.Outcome == o))
	}
}

// unixSeconds is t as Unix time in whole seconds (0 before 1970: a clock
// that was never set); the library writes floats with %g, which would
// round a timestamp to 100 s.
func unixSeconds(t time.Time) uint64 { return uint64(max(t.Unix(), 0)) }

func (e *Exporter) writeServices(w io.Writer, svcs []mgmt.ServiceStatus) {
	family(w, famServiceUp, "gauge", "1 while the service's process runs.")
	for _, s := range svcs {
		vm.WriteGaugeUint64(w, famServiceUp+labels("service", s.Name), b2u(s.State == mgmt.StateRunning))
	}
	family(w, famServiceRestarts, "counter", "Starts of the service after its first in this boot.")
	for _, s := range svcs {
		vm.WriteCounterUint64(w, famServiceRestarts+labels("service", s.Name), uint64(s.Restarts))
	}
	family(w, famServiceOOM, "counter", "Processes of the service the kernel's OOM killer killed (its cgroup's memory.events).")
	for _, s := range svcs {
		vm.WriteCounterUint64(w, famServiceOOM+labels("service", s.Name), s.OOMKills)
	}
	family(w, famServiceHealth, "gauge", "1 for the state the service's health check is in; services without a running check have no series.")
	for _, s := range svcs {
		if s.Health == nil {
			continue
		}
		for _, state := range healthStates {
			vm.WriteGaugeUint64(w, famServiceHealth+labels("service", s.Name, "state", state), b2u(s.Health.State == state))
		}
	}
	if e.src.Usage == nil {
		return
	}
	usage := make(map[string]cgroup.Usage, len(svcs))
	for _, s := range svcs {
		if u, err := e.src.Usage(s.Name); err == nil {
			usage[s.Name] = u
		}
	}
	family(w, famServiceCPU, "counter", "CPU time the service's cgroup used in this boot (cpu.stat usage_usec).")
	for _, s := range svcs {
		if u, ok := usage[s.Name]; ok {
			vm.WriteCounterFloat64(w, famServiceCPU+labels("service", s.Name), u.CPUSeconds)
		}
	}
	family(w, famServiceMemory, "gauge", "Memory the service's cgroup uses now (memory.current).")
	for _, s := range svcs {
		if u, ok := usage[s.Name]; ok {
			vm.WriteGaugeUint64(w, famServiceMemory+labels("service", s.Name), u.MemoryBytes)
		}
	}
}

func (e *Exporter) writeNode(w io.Writer, st mgmt.Status) {
	if total, avail, err := readMeminfo(filepath.Join(e.src.ProcDir, "meminfo")); err == nil {
		family(w, famNodeMemTotal, "gauge", "Memory the kernel manages (MemTotal).")
		vm.WriteGaugeUint64(w, famNodeMemTotal, total)
		family(w, famNodeMemAvail, "gauge", "Memory available to start new work without swapping (MemAvailable).")
		vm.WriteGaugeUint64(w, famNodeMemAvail, avail)
	}
	if load, err := readLoad(filepath.Join(e.src.ProcDir, "loadavg")); err == nil {
		for i, f := range []string{famNodeLoad1, famNodeLoad5, famNodeLoad15} {
			family(w, f, "gauge", fmt.Sprintf("Load average over %s.", []string{"1 minute", "5 minutes", "15 minutes"}[i]))
			vm.WriteGaugeFloat64(w, f, load[i])
		}
	}
	if up, err := readUptime(filepath.Join(e.src.ProcDir, "uptime")); err == nil {
		family(w, famNodeUptime, "gauge", "Seconds since the kernel started.")
		vm.WriteGaugeFloat64(w, famNodeUptime, up)
	}
	if st.Perm.Mounted && st.Perm.TotalBytes > 0 {
		family(w, famPermUsed, "gauge", "Bytes used on the perm partition.")
		vm.WriteGaugeUint64(w, famPermUsed, uint64(st.Perm.UsedBytes))
		family(w, famPermSize, "gauge", "Size of the perm partition's file system.")
		vm.WriteGaugeUint64(w, famPermSize, uint64(st.Perm.TotalBytes))
	}
}

// family writes the HELP and TYPE lines of a metric family.
func family(w io.Writer, name, typ, help string) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

// labels renders {k1="v1",k2="v2"} with the values escaped as the text
// format wants (backslash, double quote, newline).
func labels(kv ...string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(kv[i])
		b.WriteString(`="`)
		b.WriteString(labelValue(kv[i+1]))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func labelValue(s string) string {
	return labelEscaper.Replace(strings.ToValidUTF8(s, "\uFFFD"))
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// readMeminfo returns MemTotal and MemAvailable in bytes.
func readMeminfo(path string) (total, avail uint64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var haveTotal, haveAvail bool
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %s: %q is not a number", path, k, fields[0])
		}
		switch k {
		case "MemTotal":
			total, haveTotal = n*1024, true
		case "MemAvailable":
			avail, haveAvail = n*1024, true
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if !haveTotal || !haveAvail {
		return 0, 0, fmt.Errorf("%s: no MemTotal or MemAvailable", path)
	}
	return total, avail, nil
}

func readLoad(path string) ([3]float64, error) {
	var load [3]float64
	b, err := os.ReadFile(path)
	if err != nil {
		return load, err
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return load, fmt.Errorf("%s: %q has no three load averages", path, b)
	}
	for i := range load {
		if load[i], err = strconv.ParseFloat(f[i], 64); err != nil {
			return load, fmt.Errorf("%s: %w", path, err)
		}
	}
	return load, nil
}

func readUptime(path string) (float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("%s is empty", path)
	}
	return strconv.ParseFloat(f[0], 64)
}
