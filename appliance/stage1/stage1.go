// Package stage1 is ingot-init as the long-lived PID 1 of an appliance,
// after stage0 switched to the root slot (or straight from the kernel on
// boards without an initramfs). It mounts the runtime filesystems, sets the
// hostname and network, mounts /perm, starts the services of
// /etc/ingot/appliance.json under a supervisor, reaps every orphan, and
// shuts down cleanly on request, on SIGTERM/SIGINT, Ctrl-Alt-Del or the
// power button.
//
// PID 1 must never exit (the kernel panics): every error is logged and
// boot goes on with less; only a failed reboot(2) at the very end leaves
// init idling.
//
// What the root image must provide (it is read-only):
//   - /init: ingot-init itself; /etc/ingot/appliance.json (package spec);
//   - empty directories /proc, /sys, /dev, /run, /tmp and /perm to mount on;
//   - symlinks /etc/resolv.conf -> /run/resolv.conf and /etc/hosts ->
//     /run/hosts, which stage1 writes (and a copy of the resolver
//     configuration for containers, spec.ContainerResolvConfPath, kept
//     current on the DHCP client's SIGHUP);
//   - optionally /dev/console (char 5:1), for kernels that start stage1
//     directly and do not mount devtmpfs themselves.
//
// The kernel command line gives ingot.perm=PARTUUID=... (an ext4
// partition), and ingot.ip=ADDR/PREFIX,GATEWAY,DNS for a static network;
// appliance.json's network is used when ingot.ip is absent. With neither,
// the DHCP client the builder adds as a system service (condition
// no-static-network) runs, and /run/resolv.conf points at the file it
// writes; with a static address that service is not started. The power
// button needs the button and evdev modules (amd64) loaded by stage0; a
// watchdog device (softdog, i6300esb) is armed when present.
//
// With logs.remote in appliance.json, every line of init and of each
// service also goes to a syslog receiver through package syslog, started
// once perm is mounted (its spool is there) and before any service.
// Right after /perm, the clock (package clock) is moved forward to the
// time saved there at the last shutdown if it is behind, and the NTP
// client starts; services with wait_for_clock wait for its first sync.
// The DHCP client's SIGHUP after each lease also tells the clock, which
// then asks the DHCP servers for NTP servers when ingot.yaml names none.
// Kernel modules that appliance.json lists (a Pi's Wi-Fi driver) are
// loaded before the network.
//
// Extensions (the management agent) get a *System through WithExtension.
package stage1

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ingotdev/ingot/appliance/blockdev"
	"github.com/ingotdev/ingot/appliance/cgroup"
	"github.com/ingotdev/ingot/appliance/clock"
	"github.com/ingotdev/ingot/appliance/cmdline"
	"github.com/ingotdev/ingot/appliance/internal/sysmount"
	"github.com/ingotdev/ingot/appliance/kmod"
	"github.com/ingotdev/ingot/appliance/logs"
	"github.com/ingotdev/ingot/appliance/netconf"
	"github.com/ingotdev/ingot/appliance/permgrow"
	"github.com/ingotdev/ingot/appliance/supervise"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/gpt"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// Paths stage1 uses in the root filesystem. The image must have the mount
// points (the root is read-only); /etc/resolv.conf and /etc/hosts should be
// symlinks to ResolvConfPath and HostsPath.
const (
	PermDir = "/perm"
	// LogDir keeps each service's log, and init's, across boots
	// (<name>.log and its rotated <name>.log.1); the supervisor writes
	// there under its perm directory.
	LogDir         = spec.PermLogDir
	ResolvConfPath = "/run/resolv.conf"
	HostsPath      = "/run/hosts"
)

const (
	initLogBytes = 1 << 20
	// permWait bounds the search for the perm partition; stage0 already
	// waited for the disk, so it is there or it is not.
	permWait = 3 * time.Second
	// netWait bounds the wait for the network interface to appear.
	netWait = 5 * time.Second
)

// Extension is a component that runs inside init alongside the services,
// such as the management agent. It gets the System and runs until ctx ends
// (at shutdown); a returned error is logged.
type Extension func(ctx context.Context, sys *System) error

// Setup prepares an extension before any service starts and returns the
// Extension to run once they have been started; an error is logged and
// the extension does not run. What a Setup takes, no service can take
// first: the management agent binds its listeners here, since vsock ports
// are not namespaced and any service could bind the agent's port.
type Setup func(sys *System) (Extension, error)

// Option configures Main.
type Option func(*config)

type config struct {
	extensions []namedSetup
}

type namedSetup struct {
	name  string
	setup Setup
}

type namedExtension struct {
	name string
	run  Extension
}

// WithExtension runs ext (named name in the log) once the services have
// been started.
func WithExtension(name string, ext Extension) Option {
	return WithSetup(name, func(*System) (Extension, error) { return ext, nil })
}

// WithSetup runs setup (named name in the log) before any service starts,
// and the Extension it returns once the services have been started.
func WithSetup(name string, setup Setup) Option {
	return func(c *config) { c.extensions = append(c.extensions, namedSetup{name, setup}) }
}

// Main runs stage1 as PID 1. It never returns.
func Main(opts ...Option) {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	// Before anything else: a signal without a Go handler would kill init
	// (the runtime's default action) and panic the kernel.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, handledSignals...)

	s := &System{
		startedAt:    time.Now(),
		reaper:       supervise.NewReaper(),
		shutdownReq:  make(chan shutdownRequest, 1),
		shuttingDown: make(chan struct{}),
	}
	go s.reaper.Run(context.Background()) // until the power goes off

	mountErrs := mountRuntime()
	ensureConsole()
	s.console = logs.NewConsole(os.Stdout, 0)
	s.initLog = logs.NewSink(InitLogName, logs.NewRing(initLogBytes), s.console)
	s.Printf("ingot-init stage1 (%s/%s), kernel uptime %s", runtime.GOOS, runtime.GOARCH, uptime())
	for _, err := range mountErrs {
		s.warnf("%v", err)
	}
	// Ctrl-Alt-Del becomes SIGINT to init instead of an instant reboot.
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF); err != nil {
		s.warnf("ctrl-alt-del to SIGINT: %v", err)
	}

	params, err := cmdline.Read()
	s.params = params
	s.boot = BootInfo{Slot: string(params.Slot), Trial: params.Trial,
		Root: guidString(params.Root), BootPartition: guidString(params.Boot), PermPartition: guidString(params.Perm)}
	if err != nil {
		s.boot.CmdlineError = err.Error()
		s.warnf("%v", err)
	}

	a, err := spec.Load(spec.AppliancePath)
	if err != nil {
		s.specErr = err.Error()
		s.warnf("no services will run: %v", err)
	} else {
		s.spec = a
		if a.Arch != runtime.GOARCH {
			s.warnf("appliance.json is for %s, this init is %s", a.Arch, runtime.GOARCH)
		}
	}

	s.setupHost()
	s.loadModules()
	s.setupNetwork()
	s.setupPerm()
	s.setupRemoteLogs()
	ctx, stopAll := context.WithCancel(context.Background())
	s.setupClock(ctx)
	supDone, extDone := s.start(ctx, cfg.extensions, s.startServices)
	s.Printf("boot done at kernel uptime %s", uptime())

	wd := openWatchdog(s)
	go watchPowerButton(s)
	pet := time.NewTicker(watchdogPet)
	defer pet.Stop()
	for {
		select {
		case sig := <-sigs:
			if req, ok := signalRequest(sig); ok {
				_ = s.requestShutdown(context.Background(), req)
			} else if sig == unix.SIGHUP {
				// gokrazy's DHCP client signals init after each lease.
				s.Printf("network: SIGHUP: addresses changed")
				s.syncContainerResolvConf()
				if s.clock != nil {
					s.clock.AddressesChanged()
				}
			} else {
				s.Printf("ignoring signal %v", sig)
			}
		case req := <-s.shutdownReq:
			s.shutdown(req, stopAll, supDone, extDone, wd) // never returns
		case <-pet.C:
			wd.pet()
		}
	}
}

// mountRuntime mounts what stage1 needs beyond the read-only root. Errors
// are returned for the log, which does not exist yet.
func mountRuntime() []error {
	const (
		nosuid = unix.MS_NOSUID
		nodev  = unix.MS_NODEV
		noexec = unix.MS_NOEXEC
	)
	var errs []error
	for _, m := range []sysmount.Mount{
		{Source: "proc", Target: "/proc", FSType: "proc", Flags: nosuid | nodev | noexec},
		{Source: "sysfs", Target: "/sys", FSType: "sysfs", Flags: nosuid | nodev | noexec},
		{Source: "devtmpfs", Target: "/dev", FSType: "devtmpfs", Flags: nosuid, Data: "mode=0755"},
		{Source: "devpts", Target: "/dev/pts", FSType: "devpts", Flags: nosuid | noexec, Data: "mode=0620,ptmxmode=0666", Mkdir: true},
		{Source: "tmpfs", Target: "/dev/shm", FSType: "tmpfs", Flags: nosuid | nodev, Data: "mode=1777", Mkdir: true},
		{Source: "tmpfs", Target: "/run", FSType: "tmpfs", Flags: nosuid | nodev, Data: "mode=0755"},
		{Source: "tmpfs", Target: "/tmp", FSType: "tmpfs", Flags: nosuid | nodev, Data: "mode=1777"},
		{Source: "cgroup2", Target: "/sys/fs/cgroup", FSType: "cgroup2", Flags: nosuid | nodev | noexec},
	} {
		if _, err := sysmount.Do(m); err != nil {
			errs = append(errs, err)
		}
	}
	// stage0 mounts the root nosuid and nodev; a root the kernel mounted
	// (the Pi's) is only read-only until this.
	if _, err := sysmount.Restrict("/"); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// ensureConsole gives init a stdin/stdout/stderr on /dev/console when the
// kernel could not (no /dev/console node in the root before devtmpfs).
func ensureConsole() {
	if _, err := unix.FcntlInt(1, unix.F_GETFD, 0); err == nil {
		return
	}
	fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return // nowhere to say so; the logs API still works
	}
	for i := 0; i < 3; i++ {
		if i != fd {
			_ = unix.Dup3(fd, i, 0)
		}
	}
	if fd > 2 {
		unix.Close(fd)
	}
}

func (s *System) setupHost() {
	host := "ingot"
	if s.spec != nil {
		host = s.spec.EffectiveHostname()
	}
	if err := unix.Sethostname([]byte(host)); err != nil {
		s.warnf("hostname %q: %v", host, err)
	}
	if err := netconf.WriteFile(HostsPath, netconf.Hosts(host)); err != nil {
		s.warnf("%v", err)
	}
	// Services run unprivileged by default; let them bind ports below 1024
	// (an appliance has no other users to protect those ports from).
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_unprivileged_port_start", []byte("0\n"), 0o644); err != nil {
		s.warnf("unprivileged low ports: %v", err)
	}
}

// loadModules loads appliance.json's modules (a Pi's Wi-Fi driver) from
// spec.ModulesDir/<kernel release>, in order; a failure is logged and the
// boot goes on.
func (s *System) loadModules() {
	if s.spec == nil || len(s.spec.Modules) == 0 {
		return
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		s.warnf("modules: uname: %v", err)
		return
	}
	release := unix.ByteSliceToString(uts.Release[:])
	for _, m := range s.spec.Modules {
		p := filepath.Join(spec.ModulesDir, release, m)
		if err := kmod.Load(p); err != nil {
			s.warnf("modules: %v", err)
			continue
		}
		s.Printf("modules: loaded %s", filepath.Base(p))
	}
}

func (s *System) setupNetwork() {
	c, err := netconf.Dial()
	if err != nil {
		s.warnf("%v", err)
		return
	}
	defer c.Close()
	if err := netconf.LoopbackUp(c); err != nil {
		s.warnf("%v", err)
	}
	var n spec.Network
	var source string
	switch {
	case s.params.Network.Configured():
		n, source = s.params.Network, "cmdline"
	case s.spec != nil && s.spec.Network.Configured():
		n, source = s.spec.Network, "spec"
	}
	s.staticNet = source
	if source != "" {
		ctx, cancel := context.WithTimeout(context.Background(), netWait)
		ifc, err := netconf.Configure(ctx, c, n)
		cancel()
		var gw string
		if n.Gateway.IsValid() {
			gw = n.Gateway.String()
		}
		if err != nil {
			s.warnf("network (%s): %v", source, err)
		} else {
			s.Printf("network: %s %s via %s (from %s)", ifc, n.Address, gw, source)
		}
	}
	if s.spec != nil && dhcpWillRun(s.spec.Services, source) {
		// The DHCP client writes its own file; until it has a lease the
		// link dangles, which resolvers treat as no configuration.
		if err := os.Symlink(dhcpResolvConf, ResolvConfPath); err != nil {
			s.warnf("network: %v", err)
		}
		s.Printf("network: no static address; %s service will ask by DHCP", spec.DHCPServiceName)
	} else if err := netconf.WriteFile(ResolvConfPath, netconf.ResolvConf(n.DNS)); err != nil {
		// Written even without DNS servers so that the /etc/resolv.conf
		// symlink resolves.
		s.warnf("%v", err)
	}
	s.syncContainerResolvConf()
}

// syncContainerResolvConf copies the appliance's resolver configuration
// (ResolvConfPath, or the DHCP client's file it points to) to
// spec.ContainerResolvConfPath, in place, so containers that bind-mounted
// it follow the lease. A configuration that is not there yet (no lease)
// is copied as empty: resolvers treat that as no configuration too.
func (s *System) syncContainerResolvConf() {
	b, err := os.ReadFile(ResolvConfPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		s.warnf("network: containers' resolv.conf: %v", err)
		return
	}
	if err := os.MkdirAll(filepath.Dir(spec.ContainerResolvConfPath), 0o755); err != nil {
		s.warnf("network: containers' resolv.conf: %v", err)
		return
	}
	if err := netconf.WriteInPlace(spec.ContainerResolvConfPath, b); err != nil {
		s.warnf("network: containers' resolv.conf: %v", err)
	}
}

func (s *System) setupPerm() {
	var st mgmt.PermStatus
	defer func() {
		s.mu.Lock()
		s.perm = st
		s.mu.Unlock()
	}()
	if s.params.Perm.IsZero() {
		st.Error = "no ingot.perm=PARTUUID=<guid> on the kernel command line"
		s.warnf("perm: %s", st.Error)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), permWait)
	defer cancel()
	part, err := blockdev.New().Find(ctx, s.params.Perm)
	if err != nil {
		st.Error = err.Error()
		s.warnf("perm: %v", err)
		return
	}
	if err := unix.Mount(part.Device, PermDir, "ext4", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOATIME, ""); err != nil {
		st.Error = fmt.Sprintf("mount %s (ext4) on %s: %v", part.Device, PermDir, err)
		s.warnf("perm: %s", st.Error)
		return
	}
	st.Mounted = true
	s.Printf("perm: %s mounted on %s", part.Device, PermDir)
	s.growPerm(part)
	if err := os.MkdirAll(LogDir, 0o755); err != nil {
		s.warnf("perm: %v", err)
		return
	}
	f, err := logs.OpenFile(LogDir+"/"+InitLogName+".log", logs.DefaultFileBytes)
	if err != nil {
		s.warnf("perm: %v", err)
		return
	}
	// Lines logged before perm was mounted go to the file too, first.
	for _, l := range s.initLog.Ring().Tail(0) {
		_ = f.Write(l)
	}
	s.initLog.SetFile(f)
}

// setupClock moves the clock forward to the time saved on perm when it is
// earlier, and starts the NTP client (package clock) until ctx ends.
func (s *System) setupClock(ctx context.Context) {
	if s.spec == nil {
		return
	}
	s.Printf("clock: at boot %s", time.Now().UTC().Format(time.RFC3339))
	var opts []clock.Option
	if !s.Status().Perm.Mounted {
		opts = append(opts, clock.WithSavePath(""))
	}
	s.clock = clock.New(s.spec.Clock, s.Printf, opts...)
	if err := s.clock.Restore(); err != nil {
		s.warnf("%v", err)
	}
	switch {
	case len(s.spec.Clock.NTP) == 0:
		s.Printf("clock: NTP is off (clock.ntp is empty)")
	case s.spec.Clock.AsksDHCP():
		s.Printf("clock: NTP servers from DHCP once an interface has an address, then the default %s", strings.Join(s.spec.Clock.NTP, ", "))
	default:
		s.Printf("clock: NTP servers %s", strings.Join(s.spec.Clock.NTP, ", "))
	}
	go func() {
		if err := s.clock.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			s.warnf("%v", err)
		}
	}()
}

// growPerm grows perm to the end of its disk when the disk is larger than
// the image (a cloud disk, a resized VM disk); a failure leaves perm as it
// was, mounted, and is a warning.
func (s *System) growPerm(part blockdev.Partition) {
	r, err := permgrow.Grow(part.Disk, part.Number, part.Device, PermDir, s.Printf)
	if err != nil {
		s.warnf("perm: grow: %v", err)
		return
	}
	if r.BlocksAfter != r.BlocksBefore {
		s.Printf("perm: grown to %d MiB", r.BlocksAfter*r.BlockBytes>>20)
	}
}

// startServices creates the supervisor and runs it until ctx ends; the
// returned channel is closed when every service has stopped.
func (s *System) startServices(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	if s.spec == nil {
		close(done)
		return done
	}
	opts := []supervise.Option{supervise.WithBuildID(s.spec.BuildID), supervise.WithConsole(s.console)}
	if fw := s.RemoteLogs(); fw != nil {
		opts = append(opts, supervise.WithForwarder(fw))
	}
	if s.clock != nil {
		opts = append(opts, supervise.WithClock(s.clock))
	}
	if p := s.Status().Perm; p.Mounted {
		opts = append(opts, supervise.WithPerm(PermDir))
	} else {
		opts = append(opts, supervise.WithPermMissing(p.Error))
	}
	services, skipped := servicesToRun(s.spec.Services, s.staticNet)
	for _, sk := range skipped {
		s.Printf("%s: %s", sk.name, sk.reason)
	}
	// Every service runs in its own cgroup (resources: limits, OOM
	// accounting, killing what a service leaves behind).
	if h, err := cgroup.Setup(cgroup.DefaultRoot); err != nil {
		s.warnf("cgroups: %v; services with resources will not start", err)
	} else {
		opts = append(opts, supervise.WithCgroups(h))
	}
	sup, err := supervise.New(services, s.reaper, opts...)
	if err != nil {
		s.specErr = err.Error()
		s.warnf("no services will run: %v", err)
		close(done)
		return done
	}
	s.sup = sup
	go func() {
		defer close(done)
		if err := sup.Run(ctx); err != nil {
			s.warnf("supervisor: %v", err)
		}
	}()
	return done
}

// start runs every extension's Setup, then starts the services, then the
// extensions: what a Setup holds (the agent's listeners) is taken before
// any service could take it.
func (s *System) start(ctx context.Context, setups []namedSetup, startServices func(context.Context) <-chan struct{}) (supDone, extDone <-chan struct{}) {
	var exts []namedExtension
	for _, e := range setups {
		run, err := e.setup(s)
		if err != nil {
			s.warnf("%s: %v", e.name, err)
			continue
		}
		exts = append(exts, namedExtension{e.name, run})
	}
	supDone = startServices(ctx)
	return supDone, s.startExtensions(ctx, exts)
}

func (s *System) startExtensions(ctx context.Context, exts []namedExtension) <-chan struct{} {
	done := make(chan struct{})
	remaining := len(exts)
	if remaining == 0 {
		close(done)
		return done
	}
	finished := make(chan struct{}, remaining)
	for _, e := range exts {
		go func() {
			defer func() { finished <- struct{}{} }()
			if err := e.run(ctx, s); err != nil && !errors.Is(err, context.Canceled) {
				s.warnf("%s: %v", e.name, err)
			}
		}()
	}
	go func() {
		for ; remaining > 0; remaining-- {
			<-finished
		}
		close(done)
	}()
	return done
}

func guidString(g gpt.GUID) string {
	if g.IsZero() {
		return ""
	}
	return g.String()
}

// uptime returns the kernel's uptime from /proc/uptime, for boot timing.
func uptime() string {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "unknown"
	}
	secs, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return "unknown"
	}
	return (time.Duration(secs*1000) * time.Millisecond).String()
}
