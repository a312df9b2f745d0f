package manage

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"

	"github.com/ingotdev/ingot/appliance/agent"
	"github.com/ingotdev/ingot/appliance/logs"
	"github.com/ingotdev/ingot/appliance/session"
	"github.com/ingotdev/ingot/appliance/stage1"
	"github.com/ingotdev/ingot/appliance/supervise"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/mgmt/transport"
)

type listener = net.Listener

func listenVsock(port uint32) (listener, error) { return transport.Listen(port) }

// info serves agent.Info from the System.
type info struct {
	sys *stage1.System
	// updatesErr says why updates are off; shown as SlotError.
	updatesErr string
	// firmwareTrial is a trial boot that the command line does not show
	// (a Raspberry Pi's firmware chose it; see update.FirmwareBoot).
	firmwareTrial bool
}

// Status is stage1's snapshot with what only manage knows: why updates
// are off, a trial the command line does not show, and the perm
// partition's usage and the machine's memory and load, measured at
// request time.
func (i info) Status() mgmt.Status {
	st := i.sys.Status()
	st.SlotError = i.updatesErr
	st.Trial = st.Trial || i.firmwareTrial
	if st.Perm.Mounted {
		used, total, err := agent.FilesystemUsage(stage1.PermDir)
		if err != nil {
			st.Perm.Error = err.Error()
		} else {
			st.Perm.UsedBytes, st.Perm.TotalBytes = used, total
		}
	}
	host := agent.HostUsage("/proc")
	st.Host = &host
	return st
}

// supervisor serves agent.Supervisor from the System's supervisor.
type supervisor struct{ sys *stage1.System }

func (s supervisor) Service(name string) (mgmt.ServiceStatus, bool) {
	return s.sys.Supervisor().Service(name)
}

func (s supervisor) Start(ctx context.Context, name string) error {
	return notFound(s.sys.Supervisor().Start(ctx, name))
}

func (s supervisor) Stop(ctx context.Context, name string) error {
	return notFound(s.sys.Supervisor().Stop(ctx, name))
}

func (s supervisor) Restart(ctx context.Context, name string) error {
	return notFound(s.sys.Supervisor().Restart(ctx, name))
}

// notFound marks an unknown service for the agent's 404.
func notFound(err error) error {
	if errors.Is(err, supervise.ErrUnknownService) {
		return fmt.Errorf("%w: %w", err, mgmt.ErrNotFound)
	}
	return err
}

// logsAdapter serves agent.Logs from the System's log rings.
type logsAdapter struct{ sys *stage1.System }

func (l logsAdapter) Logs(name string, n int, follow bool) (agent.LogStream, error) {
	ring, ok := l.sys.Logs(name)
	if !ok {
		return nil, fmt.Errorf("logs: no service %q (init's own log is %q): %w", name, stage1.InitLogName, mgmt.ErrNotFound)
	}
	return agent.RingLines(ring, n, follow), nil
}

// diskLogs serves agent.DiskLogs from the log files on perm.
type diskLogs struct{ sys *stage1.System }

func (d diskLogs) DiskLogs(ctx context.Context, name string, n int) ([]mgmt.LogLine, error) {
	// Only names the System knows: the name becomes part of a path.
	if _, ok := d.sys.Logs(name); !ok {
		return nil, fmt.Errorf("no service %q (init's own log is %q): %w", name, stage1.InitLogName, mgmt.ErrNotFound)
	}
	if perm := d.sys.Status().Perm; !perm.Mounted {
		return nil, fmt.Errorf("no perm partition mounted (%s), so nothing is kept: %w", perm.Error, mgmt.ErrConflict)
	}
	lines, err := logs.ReadFile(filepath.Join(stage1.LogDir, name+".log"), n)
	if err != nil {
		return nil, err
	}
	out := make([]mgmt.LogLine, len(lines))
	for i, l := range lines {
		out[i] = agent.LogLine(l)
	}
	return out, nil
}

// power serves agent.Power through stage1's orderly shutdown.
type power struct {
	sys *stage1.System
	// rebootArg returns the firmware's reboot argument, if any.
	rebootArg func() string
}

func (p power) Reboot(ctx context.Context) error {
	if p.rebootArg != nil {
		if arg := p.rebootArg(); arg != "" {
			return p.sys.RebootWithArg(ctx, arg, "requested by the management API; the firmware boots the trial slot")
		}
	}
	return p.sys.Shutdown(ctx, true)
}

func (p power) Poweroff(ctx context.Context) error { return p.sys.Shutdown(ctx, false) }

// execer serves agent.Execer from a session.Starter.
type execer struct{ st *session.Starter }

func (e execer) Exec(ctx context.Context, req mgmt.ExecRequest) (agent.Session, error) {
	return e.st.Start(ctx, req)
}

func (e execer) HasShell() bool { return e.st.HasShell() }
