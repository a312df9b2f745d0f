package manage

import (
	"context"
	"net/http"

	"github.com/ingotdev/ingot/appliance/agent"
	"github.com/ingotdev/ingot/appliance/cgroup"
	"github.com/ingotdev/ingot/appliance/metrics"
	"github.com/ingotdev/ingot/appliance/stage1"
	"github.com/ingotdev/ingot/appliance/syslog"
	"github.com/ingotdev/ingot/appliance/update"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// newExporter gives the metrics the System's view: the agent's status
// (with perm usage), the services' cgroups, slot.json and the record of
// the last update when updates are on, and the remote log forwarder.
func newExporter(sys *stage1.System, info agent.Info, mgr *update.Manager) *metrics.Exporter {
	src := metrics.Sources{Status: info.Status}
	if sup := sys.Supervisor(); sup != nil {
		src.Usage = func(name string) (cgroup.Usage, error) { return sup.Usage(name) }
	}
	if mgr != nil {
		src.SlotState = func(ctx context.Context) (mgmt.SlotState, error) { return mgr.SlotState(ctx) }
		src.LastUpdate = mgr.LastUpdate
	}
	if fw := sys.RemoteLogs(); fw != nil {
		src.RemoteLogs = func() (syslog.Stats, bool) { return fw.Stats(), true }
	}
	return metrics.New(src)
}

// metricsHandler serves the exporter at spec.MetricsPath, behind the
// metrics token's check unless auth is none.
func metricsHandler(a *agent.Agent, e *metrics.Exporter, m spec.Metrics) (http.Handler, error) {
	pattern := "GET " + spec.MetricsPath
	if metricsAuth(m) == spec.MetricsAuthNone {
		return a.Open(pattern, e.Handler()), nil
	}
	return a.Protect(pattern, m.TokenSHA256, e.Handler())
}

func metricsAuth(m spec.Metrics) spec.MetricsAuth {
	if m.Auth == "" {
		return spec.MetricsAuthToken
	}
	return m.Auth
}
