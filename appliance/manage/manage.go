// Package manage plugs the management side of an appliance into stage1: it
// mounts the boot partition read-write on a tmpfs, serves the management
// agent on AF_VSOCK with adapters from stage1's System, performs A/B
// updates through package update, and confirms a trial boot once every
// restart: always service stayed up for the health window (or records why
// it did not and reboots, so the boot loader falls back).
//
// Register it in ingot-init with stage1.WithExtension(manage.Name,
// manage.Extension()).
package manage

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/ingotdev/ingot/appliance/agent"
	"github.com/ingotdev/ingot/appliance/stage1"
	"github.com/ingotdev/ingot/appliance/update"
	"github.com/ingotdev/ingot/packer/format/piboot"
	"github.com/ingotdev/ingot/packer/format/slot"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// Name is the extension's name in init's log.
const Name = "manage"

// BootDir is where the boot partition is mounted. The root is read-only;
// /run is a tmpfs, so the mount point can be created there.
const BootDir = "/run/boot"

// bootFindWait bounds the search for the boot partition: stage0 already
// waited for the disk.
const bootFindWait = 3 * time.Second

// serveStopWait bounds the wait for the agent at shutdown; stage1 gives
// extensions a little more than this before it goes on.
const serveStopWait = 1500 * time.Millisecond

// Option configures the extension.
type Option func(*options)

type options struct {
	bootDir string
	listen  func(port uint32) (listener, error)
	// certPath and keyPath are the TCP listener's certificate and key.
	certPath, keyPath string
}

// namedListener is a listener with its description for the log.
type namedListener struct {
	l    listener
	what string
}

// listeners opens the agent's listeners: AF_VSOCK on the configured port
// and, when configured, TCP with TLS (the only way in on bare metal).
func (o options) listeners(m spec.Management) ([]namedListener, error) {
	var out []namedListener
	if m.VsockPort != 0 {
		l, err := o.listen(m.VsockPort)
		if err != nil {
			return nil, err
		}
		out = append(out, namedListener{l, fmt.Sprintf("vsock port %d", m.VsockPort)})
	}
	if m.TCP != "" {
		l, err := listenTLS(m.TCP, o.certPath, o.keyPath)
		if err != nil {
			for _, x := range out {
				x.l.Close()
			}
			return nil, err
		}
		out = append(out, namedListener{l, fmt.Sprintf("tcp %s (TLS, certificate sha256 %s)", l.Addr(), m.TLSCertSHA256)})
	}
	if len(out) == 0 {
		return nil, errors.New("management: neither vsock_port nor tcp is set: no agent")
	}
	return out, nil
}

func listenTLS(addr, certPath, keyPath string) (listener, error) {
	cert, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("management tcp %s: certificate: %w", addr, err)
	}
	key, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("management tcp %s: key: %w", addr, err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("management tcp: %w", err)
	}
	tl, err := agent.ListenTLS(l, cert, key)
	if err != nil {
		l.Close()
		return nil, err
	}
	return tl, nil
}

// WithBootDir sets where the boot partition is mounted (default BootDir).
func WithBootDir(dir string) Option { return func(o *options) { o.bootDir = dir } }

// Extension returns the stage1 extension.
func Extension(opts ...Option) stage1.Extension {
	o := options{bootDir: BootDir, listen: listenVsock, certPath: spec.TLSCertPath, keyPath: spec.TLSKeyPath}
	for _, opt := range opts {
		opt(&o)
	}
	return func(ctx context.Context, sys *stage1.System) error { return run(ctx, sys, o) }
}

func run(ctx context.Context, sys *stage1.System, o options) error {
	sp := sys.Spec()
	if sp == nil {
		return errors.New("no appliance.json: no management agent")
	}
	boot := sys.Boot()

	// Without the boot partition the agent still serves status, logs and
	// control; only updates are off.
	var updater agent.Updater
	var mgr *update.Manager
	bootPart, updatesErr := mountBoot(ctx, boot.BootPartition, o.bootDir)
	if updatesErr != nil {
		sys.Printf("manage: updates disabled: %v", updatesErr)
	} else {
		defer func() {
			if err := unmountBoot(o.bootDir); err != nil {
				sys.Printf("manage: %v", err)
			} else {
				sys.Printf("manage: boot partition unmounted")
			}
		}()
		open := slotOpener(bootPart)
		uopts := []update.Option{update.WithArch(runtime.GOARCH)}
		if _, err := piboot.Active(o.bootDir); err == nil {
			// The Raspberry Pi firmware chose this boot: apply the trial
			// rules no host-side loader applied.
			uopts = append(uopts, update.WithFirmware(piboot.Firmware{}))
			trial, repaired, err := update.FirmwareBoot(o.bootDir, slot.Name(boot.Slot), piboot.Firmware{})
			if err != nil {
				sys.Printf("manage: firmware boot state: %v", err)
			}
			if repaired != "" {
				sys.Printf("manage: %s", repaired)
			}
			boot.Trial = boot.Trial || trial
		}
		m, err := update.NewManager(o.bootDir, slot.Name(boot.Slot), open, uopts...)
		if err != nil {
			updatesErr = err
			sys.Printf("manage: updates disabled: %v", err)
		} else {
			mgr = m
			updater = mgr // only a non-nil *Manager: a typed nil would not read as "no updater"
		}
	}

	deps := agent.Deps{
		Info:     info{sys: sys, updatesErr: errString(updatesErr), firmwareTrial: boot.Trial},
		Logs:     logsAdapter{sys},
		DiskLogs: diskLogs{sys},
		Power:    power{sys: sys, rebootArg: func() string { return rebootArg(mgr) }},
		Updater:  updater,
		SBOM:     func() ([]byte, error) { return os.ReadFile(spec.SBOMPath) },
	}
	if sys.Supervisor() != nil {
		deps.Supervisor = supervisor{sys}
	}
	a, err := agent.New(deps, sp.Management.TokenSHA256, agent.WithLogf(sys.Printf))
	if err != nil {
		return err
	}
	ls, err := o.listeners(sp.Management)
	if err != nil {
		return err
	}
	for _, l := range ls {
		sys.Printf("manage: agent listening on %s", l.what)
	}

	serveCtx, stopServe := context.WithCancel(ctx)
	defer stopServe()
	// served is closed when a listener stops serving: the trial check
	// needs to know the agent still serves at the end of the window, and
	// the unmount below waits for requests in flight.
	served := make(chan struct{})
	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Serve(serveCtx, l.l); err != nil {
				sys.Printf("manage: %s: %v", l.what, err)
			}
		}()
	}
	go func() {
		wg.Wait()
		close(served)
	}()

	if boot.Trial {
		go func() {
			window := healthWindow(sp)
			if mgr == nil {
				sys.Printf("manage: trial boot of slot %s cannot be confirmed: the boot partition is not mounted", boot.Slot)
				return
			}
			checkTrial(ctx, trialDeps{
				sys: sys, spec: sp, window: window, booted: slot.Name(boot.Slot),
				bootDir: o.bootDir, confirm: mgr.Confirm, served: served,
			})
		}()
	}

	<-ctx.Done()
	stopServe()
	// Serve returns once requests in flight ended (bounded by the agent's
	// shutdown timeout), so no update write races the unmount below.
	select {
	case <-served:
	case <-time.After(serveStopWait):
	}
	return ctx.Err()
}

func healthWindow(sp *spec.Appliance) time.Duration {
	s := sp.Management.HealthWindowSeconds
	if s <= 0 {
		s = spec.DefaultHealthWindowSeconds
	}
	return time.Duration(s) * time.Second
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return fmt.Sprintf("updates disabled: %v", err)
}

// rebootArg is the reboot argument a pending firmware trial needs; "" with
// updates off.
func rebootArg(m *update.Manager) string {
	if m == nil {
		return ""
	}
	return m.RebootArg()
}
