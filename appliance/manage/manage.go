// Package manage plugs the management side of an appliance into stage1: it
// mounts the boot partition read-write on a tmpfs, serves the management
// agent on AF_VSOCK with adapters from stage1's System, performs A/B
// updates through package update, and confirms a trial boot once every
// restart: always service stayed up for the health window (or records why
// it did not and reboots, so the boot loader falls back). With metrics:
// in appliance.json it also serves package metrics on its own TCP port,
// through the agent (its connection limits and, with auth: token, its
// token check).
//
// Register it in ingot-init with stage1.WithSetup(manage.Name,
// manage.Setup()): its listeners are bound before any service starts.
package manage

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/ingotdev/ingot/appliance/agent"
	"github.com/ingotdev/ingot/appliance/session"
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
	// vsockKeyPath is the vsock listener's TLS key (certpin.TokenKey);
	// certPath and keyPath are the TCP listener's certificate and key.
	vsockKeyPath      string
	certPath, keyPath string
}

// Waits between attempts to bind a listener that is not bound: its first
// bind failed, or it failed while serving. The wait doubles up to the
// maximum, and a listener that served for the maximum starts over.
const (
	rebindWait    = 100 * time.Millisecond
	rebindMaxWait = 5 * time.Second
)

// endpoint is one of the agent's listeners: how to bind it, and the
// listener bound now (nil while it is not).
type endpoint struct {
	what string
	bind func() (listener, error)
	// handler is what the endpoint serves instead of the agent's API
	// (the metrics); nil for the API.
	handler http.Handler

	mu sync.Mutex
	l  listener
}

// bindNow binds the endpoint unless it is bound.
func (e *endpoint) bindNow() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.l != nil {
		return nil
	}
	l, err := e.bind()
	if err != nil {
		return err
	}
	e.l = l
	return nil
}

// current returns the bound listener, nil while there is none.
func (e *endpoint) current() listener {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.l
}

// lost forgets l, which stopped serving, and closes it.
func (e *endpoint) lost(l listener) {
	e.mu.Lock()
	if e.l == l {
		e.l = nil
	}
	e.mu.Unlock()
	l.Close()
}

// endpoints describes the agent's listeners: AF_VSOCK on the configured
// port, TLS with the token-derived key, and, when configured, TCP with TLS
// and the pinned certificate (the only way in on bare metal).
func (o options) endpoints(m spec.Management) ([]*endpoint, error) {
	var out []*endpoint
	if m.VsockPort != 0 {
		port := m.VsockPort
		out = append(out, &endpoint{
			what: fmt.Sprintf("vsock port %d (TLS, token-derived key)", port),
			bind: func() (listener, error) { return listenVsockTLS(o.listen, port, o.vsockKeyPath) },
		})
	}
	if m.TCP != "" {
		out = append(out, &endpoint{
			what: fmt.Sprintf("tcp %s (TLS, certificate sha256 %s)", m.TCP, m.TLSCertSHA256),
			bind: func() (listener, error) { return listenTLS(m.TCP, o.certPath, o.keyPath) },
		})
	}
	if len(out) == 0 {
		return nil, errors.New("management: neither vsock_port nor tcp is set: no agent")
	}
	return out, nil
}

// listenVsockTLS binds the vsock port and wraps it in TLS with the key at
// keyPath. Without the key nothing listens: the client would refuse an
// agent that cannot prove it anyway.
func listenVsockTLS(listen func(uint32) (listener, error), port uint32, keyPath string) (listener, error) {
	key, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("management vsock port %d: key: %w", port, err)
	}
	l, err := listen(port)
	if err != nil {
		return nil, err
	}
	tl, err := agent.ListenTokenTLS(l, key)
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("management vsock port %d: %w", port, err)
	}
	return tl, nil
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

// Setup returns the stage1 setup of the extension. It binds the agent's
// listeners before any service starts: vsock ports are not namespaced,
// so a service (a container, even as nobody) could otherwise bind the
// agent's port first. A listener that fails to bind, or fails later, is
// bound again until shutdown.
func Setup(opts ...Option) stage1.Setup {
	o := options{bootDir: BootDir, listen: listenVsock, vsockKeyPath: spec.VsockKeyPath, certPath: spec.TLSCertPath, keyPath: spec.TLSKeyPath}
	for _, opt := range opts {
		opt(&o)
	}
	return func(sys *stage1.System) (stage1.Extension, error) {
		sp := sys.Spec()
		if sp == nil {
			return nil, errors.New("no appliance.json: no management agent")
		}
		eps, err := o.endpoints(sp.Management)
		if err != nil {
			return nil, err
		}
		var metricsEP *endpoint
		if addr := sp.Metrics.Listen; addr != "" {
			metricsEP = &endpoint{
				what: fmt.Sprintf("tcp %s (metrics, auth %s)", addr, metricsAuth(sp.Metrics)),
				bind: func() (listener, error) { return net.Listen("tcp", addr) },
			}
			bindAll([]*endpoint{metricsEP}, sys.Printf)
		}
		bindAll(eps, sys.Printf)
		return func(ctx context.Context, sys *stage1.System) error { return run(ctx, sys, o, eps, metricsEP) }, nil
	}
}

// bindAll binds every endpoint once; serve binds the ones that failed
// again.
func bindAll(eps []*endpoint, logf func(string, ...any)) {
	for _, e := range eps {
		if err := e.bindNow(); err != nil {
			logf("manage: %s: %v (binding it again)", e.what, err)
			continue
		}
		logf("manage: agent listening on %s", e.what)
	}
}

// serve serves a on e until ctx ends. Whenever e is not bound (its bind
// failed, or its listener failed), it binds e again after a wait that
// doubles up to rebindMaxWait.
func serve(ctx context.Context, a *agent.Agent, e *endpoint, logf func(string, ...any)) {
	wait := rebindWait
	pause := func() bool {
		t := time.NewTimer(wait)
		defer t.Stop()
		wait = min(2*wait, rebindMaxWait)
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	failing := e.current() == nil // bindAll said so already
	for ctx.Err() == nil {
		if err := e.bindNow(); err != nil {
			if !failing {
				logf("manage: %s: %v (binding it again)", e.what, err)
			}
			failing = true
			if !pause() {
				return
			}
			continue
		}
		if failing {
			logf("manage: agent listening on %s again", e.what)
			failing = false
		}
		l := e.current()
		start := time.Now()
		var err error
		if e.handler != nil {
			err = a.ServeHandler(ctx, l, e.handler)
		} else {
			err = a.Serve(ctx, l)
		}
		e.lost(l)
		if ctx.Err() != nil {
			return
		}
		logf("manage: %s stopped serving: %v (binding it again)", e.what, err)
		failing = true
		if time.Since(start) >= rebindMaxWait {
			wait = rebindWait
		}
		if !pause() {
			return
		}
	}
}

// bound reports whether every endpoint has a listener now.
func bound(eps []*endpoint) bool {
	for _, e := range eps {
		if e.current() == nil {
			return false
		}
	}
	return true
}

func run(ctx context.Context, sys *stage1.System, o options, eps []*endpoint, metricsEP *endpoint) error {
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
		uopts := []update.Option{update.WithArch(runtime.GOARCH), update.WithRunning(sp.BuildID, sp.Release), update.WithLogf(sys.Printf)}
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
		} else {
			// A VM: either systemd-boot (the UEFI path) or the host-side
			// loader chose this boot; Entries.Boot makes slot.json and
			// the UEFI entries agree about it.
			entries := &update.Entries{Title: "ingot " + sp.Name, Root: rootPARTUUID(bootPart)}
			uopts = append(uopts, update.WithEntries(entries))
			rep, err := entries.Boot(o.bootDir, slot.Name(boot.Slot), boot.Trial)
			if err != nil {
				sys.Printf("manage: boot entries: %v", err)
			}
			if rep.Note != "" {
				sys.Printf("manage: %s", rep.Note)
			}
			if err == nil {
				boot.Trial = rep.Trial
			}
			if rep.Reboot {
				go func() {
					if err := sys.Shutdown(context.Background(), true); err != nil {
						sys.Printf("manage: reboot: %v", err)
					}
				}()
			}
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

	pw := power{sys: sys, rebootArg: func() string { return rebootArg(mgr) }}
	deps := agent.Deps{
		Info:     info{sys: sys, updatesErr: errString(updatesErr), firmwareTrial: boot.Trial},
		Logs:     logsAdapter{sys},
		DiskLogs: diskLogs{sys},
		Power:    pw,
		Updater:  updater,
		SBOM:     func() ([]byte, error) { return os.ReadFile(spec.SBOMPath) },
	}
	if mgr != nil {
		unconfirmed := func() bool {
			// Until the trial is confirmed, slot.json's active slot is the
			// fallback, not the one this boot runs.
			s, err := mgr.SlotState(ctx)
			return err != nil || s.Active != boot.Slot
		}
		puller, err := newPuller(sys, sp, mgr, unconfirmed, pw.Reboot)
		if err != nil {
			sys.Printf("manage: pulled updates off: %v", err)
		} else if puller != nil {
			deps.Puller = puller // only a non-nil *Puller, as for the Updater
			go puller.Run(ctx)
		}
	}
	if sys.Supervisor() != nil {
		deps.Supervisor = supervisor{sys}
		deps.Exec = execer{session.NewStarter(sp, sys.Supervisor(), sys.Reaper(), os.Args[0], sys.Printf)}
	}
	exporter := newExporter(sys, deps.Info, mgr)
	a, err := agent.New(deps, sp.Management.TokenSHA256, agent.WithLogf(sys.Printf), agent.WithRequestCounter(exporter.CountRequest))
	if err != nil {
		return err
	}
	if metricsEP != nil {
		// appliance.json's Validate checked the hash: this cannot fail
		// on a built image, and an error only leaves metrics off.
		if metricsEP.handler, err = metricsHandler(a, exporter, sp.Metrics); err != nil {
			sys.Printf("manage: metrics: %v", err)
			metricsEP.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "metrics: no valid token hash in appliance.json", http.StatusInternalServerError)
			})
		}
	}
	serveCtx, stopServe := context.WithCancel(ctx)
	defer stopServe()
	// served is closed when every endpoint stopped serving (at shutdown):
	// the unmount below waits for requests in flight.
	served := make(chan struct{})
	var wg sync.WaitGroup
	servedEPs := eps
	if metricsEP != nil {
		servedEPs = append(slices.Clip(eps), metricsEP)
	}
	for _, e := range servedEPs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			serve(serveCtx, a, e, sys.Printf)
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
				bootDir: o.bootDir, confirm: mgr.Confirm, serving: func() bool { return bound(eps) },
				failed: mgr.SyncEntries,
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
