package stage1

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ingotdev/ingot/appliance/clock"
	"github.com/ingotdev/ingot/appliance/cmdline"
	"github.com/ingotdev/ingot/appliance/logs"
	"github.com/ingotdev/ingot/appliance/supervise"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// InitLogName is the name under which init's own log is served.
const InitLogName = "init"

// BootInfo describes how this boot came about.
type BootInfo struct {
	// Slot is the root slot booted ("a" or "b"); empty when the kernel
	// mounted the root itself without ingot.slot.
	Slot string
	// Trial reports a trial boot of a freshly updated slot.
	Trial bool
	// Root, BootPartition and PermPartition are the PARTUUIDs from the
	// kernel command line ("" when absent).
	Root          string
	BootPartition string
	PermPartition string
	// CmdlineError reports malformed ingot.* parameters.
	CmdlineError string
}

// System is the running appliance as stage1 set it up: what the management
// agent serves and controls. Its methods are safe for concurrent use.
type System struct {
	startedAt time.Time
	spec      *spec.Appliance // nil when specErr is set
	specErr   string
	params    cmdline.Params
	// staticNet is where the static network configuration came from:
	// "cmdline" (ingot.ip), "spec" (appliance.json) or "" for none.
	staticNet string
	boot      BootInfo
	initLog   *logs.Sink
	console   *logs.Console
	reaper    *supervise.Reaper
	sup       *supervise.Supervisor // nil without a usable spec
	remote    *remoteLogs           // nil without logs.remote
	clock     *clock.Clock          // nil without a usable spec

	mu       sync.Mutex
	perm     mgmt.PermStatus // its usage is measured by whoever asks
	warnings []string

	shutdownOnce sync.Once
	shutdownReq  chan shutdownRequest
	shuttingDown chan struct{} // closed when the shutdown begins
}

type shutdownRequest struct {
	reboot bool
	// rebootArg, when set, is passed to the kernel with
	// LINUX_REBOOT_CMD_RESTART2: "0 tryboot" makes the Raspberry Pi
	// firmware boot tryboot.txt once.
	rebootArg string
	reason    string
}

// ErrShuttingDown is returned by Shutdown when one is already under way.
var ErrShuttingDown = errors.New("stage1: already shutting down")

// Shutdown asks init to stop every service (SIGTERM, grace period,
// SIGKILL), sync and unmount /perm, and power off or reboot. It returns once
// init has accepted the request; the machine goes down shortly after, so an
// agent should answer its client first.
func (s *System) Shutdown(ctx context.Context, reboot bool) error {
	return s.requestShutdown(ctx, shutdownRequest{reboot: reboot, reason: "requested by the management API"})
}

// RebootWithArg is Shutdown(ctx, true) with a reboot argument for the
// firmware (see LINUX_REBOOT_CMD_RESTART2), such as "0 tryboot".
func (s *System) RebootWithArg(ctx context.Context, arg, reason string) error {
	return s.requestShutdown(ctx, shutdownRequest{reboot: true, rebootArg: arg, reason: reason})
}

func (s *System) requestShutdown(ctx context.Context, req shutdownRequest) error {
	err := ErrShuttingDown
	s.shutdownOnce.Do(func() {
		select {
		case s.shutdownReq <- req: // buffered: never blocks
			err = nil
		case <-ctx.Done():
			err = ctx.Err()
		}
	})
	return err
}

// Status returns a snapshot of the appliance in the management
// protocol's form. A spec error is among the warnings; the slot state,
// perm usage and features are for the agent to add.
func (s *System) Status() mgmt.Status {
	st := mgmt.Status{Slot: s.boot.Slot, Trial: s.boot.Trial, StartedAt: s.startedAt}
	if s.spec != nil {
		st.Name, st.BuildID, st.Release, st.Arch, st.Target, st.Hostname = s.spec.Name, s.spec.BuildID, s.spec.Release, s.spec.Arch, s.spec.Target, s.spec.EffectiveHostname()
	}
	if s.sup != nil {
		st.Services = s.sup.Status()
	}
	if s.clock != nil {
		c := s.clock.Status()
		st.Clock = &c
	}
	select {
	case <-s.shuttingDown:
		st.ShuttingDown = true
	default:
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st.Perm = s.perm
	st.Warnings = append([]string(nil), s.warnings...)
	if s.specErr != "" {
		st.Warnings = append(st.Warnings, s.specErr)
	}
	return st
}

// Spec returns the appliance description, or nil if it could not be read.
func (s *System) Spec() *spec.Appliance { return s.spec }

// Boot returns how this boot came about.
func (s *System) Boot() BootInfo { return s.boot }

// Supervisor returns the service supervisor (nil when there is no usable
// appliance.json), for Start, Stop and Restart.
func (s *System) Supervisor() *supervise.Supervisor { return s.sup }

// Reaper returns init's reaper. Anything in init that starts a process
// (a container launcher, say) must start it with Reaper().Spawn: init waits
// for all children, so os/exec's Cmd.Wait would lose the exit status.
func (s *System) Reaper() *supervise.Reaper { return s.reaper }

// Logs returns the log of a service, or init's own for InitLogName.
func (s *System) Logs(name string) (*logs.Sink, bool) {
	if name == InitLogName {
		return s.initLog, true
	}
	if s.sup == nil {
		return nil, false
	}
	return s.sup.Logs(name)
}

// Printf writes a line to init's log (and the console).
func (s *System) Printf(format string, args ...any) { s.initLog.Printf(format, args...) }

// warnf logs a boot problem and keeps it for Status.
func (s *System) warnf(format string, args ...any) {
	s.initLog.Printf("warning: "+format, args...)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.warnings = append(s.warnings, fmt.Sprintf(format, args...))
}
