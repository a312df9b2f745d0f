// Package clock keeps an appliance's system clock: it moves the clock
// forward at boot to the time saved on perm at the last shutdown (a board
// without a battery-backed clock, or a VM whose RTC is wrong, must not
// start in the past: certificates, logs and file times depend on it), asks
// the configured NTP servers with a small SNTP client (RFC 4330, standard
// library only) and steps the clock to their time, and tells the
// supervisor when it has, for services that set wait_for_clock. When
// ingot.yaml names no NTP server, it asks the DHCP server of each
// interface for its NTP servers (package dhcpinform) whenever addresses
// change, and asks those before ingot's default ones. Its state
// is the management protocol's mgmt.ClockStatus, which `ingot status`
// shows as it is.
//
// The client runs inside ingot-init, not as a system service, because the
// sync state is init's business: it gates services and is reported by the
// agent, and a separate program would need a protocol to say either.
package clock

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ingotdev/ingot/appliance/dhcpinform"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// Timing of the client.
const (
	// RetryInterval is the wait between attempts until the first sync
	// (each attempt asks every server once): an appliance waits for its
	// clock, and one packet every two seconds burdens nobody.
	RetryInterval = 2 * time.Second
	// PollInterval is the wait between syncs once synced (NTP's longest
	// poll, 2^10 s).
	PollInterval = 1024 * time.Second
	// FailedPollInterval is the wait after a failed poll once synced.
	FailedPollInterval = 64 * time.Second
	// QueryTimeout bounds one server's answer.
	QueryTimeout = 2 * time.Second
	// SaveInterval is how often the time is saved on perm, besides after
	// each sync and at shutdown, so that a power cut loses at most this.
	SaveInterval = 10 * time.Minute
	// StepThreshold: smaller offsets are reported but not corrected, so
	// that a synced clock does not jitter back and forth; the client
	// steps the clock only, it does not slew.
	StepThreshold = 100 * time.Millisecond
)

// Clock is the appliance's clock keeper. Create it with New; call Restore
// once perm is mounted, then Run; Save at shutdown.
type Clock struct {
	configured []string // clock.ntp as built: named in ingot.yaml, or the default
	asksDHCP   bool     // spec.Clock.AsksDHCP: DHCP's servers come first
	savePath   string
	logf       func(format string, args ...any)
	// Replaced by tests.
	query      func(ctx context.Context, server string) (Sample, error)
	setTime    func(time.Time) error
	inform     func(ctx context.Context, ifc dhcpinform.Interface) (dhcpinform.Reply, error)
	interfaces func() ([]dhcpinform.Interface, error)

	addrsChanged   chan struct{} // AddressesChanged: ask the DHCP servers again
	serversChanged chan struct{} // the DHCP servers changed the list: sync now

	saveMu sync.Mutex // one Save at a time: they share the temporary file

	mu      sync.Mutex
	st      mgmt.ClockStatus
	changed chan struct{} // closed and replaced on every change of st
	// fromDHCP are the NTP servers each interface's DHCP server named
	// (an entry without servers: it answered without option 42).
	fromDHCP map[string][]string
}

// Option configures a Clock.
type Option func(*Clock)

// WithSavePath keeps the last known time at path instead of
// spec.PermClockPath; "" keeps it nowhere (no perm).
func WithSavePath(path string) Option { return func(c *Clock) { c.savePath = path } }

// WithQuery replaces the SNTP query (tests).
func WithQuery(q func(ctx context.Context, server string) (Sample, error)) Option {
	return func(c *Clock) { c.query = q }
}

// WithSetTime replaces setting the system clock (tests, which are not
// allowed to).
func WithSetTime(set func(time.Time) error) Option { return func(c *Clock) { c.setTime = set } }

// WithDHCP replaces how the DHCP servers are asked for NTP servers
// (dhcpinform.Client.Inform) and which interfaces they are asked on
// (dhcpinform.Interfaces), for tests.
func WithDHCP(inform func(ctx context.Context, ifc dhcpinform.Interface) (dhcpinform.Reply, error), interfaces func() ([]dhcpinform.Interface, error)) Option {
	return func(c *Clock) { c.inform, c.interfaces = inform, interfaces }
}

// New returns a Clock for the appliance's clock settings; logf receives
// what it does.
func New(cfg spec.Clock, logf func(format string, args ...any), opts ...Option) *Clock {
	c := &Clock{
		configured:     append([]string(nil), cfg.NTP...),
		asksDHCP:       cfg.AsksDHCP(),
		savePath:       spec.PermClockPath,
		logf:           logf,
		query:          Query,
		setTime:        setSystemTime,
		inform:         dhcpinform.Client{Logf: logf}.Inform,
		interfaces:     dhcpinform.Interfaces,
		addrsChanged:   make(chan struct{}, 1),
		serversChanged: make(chan struct{}, 1),
		changed:        make(chan struct{}),
		fromDHCP:       map[string][]string{},
	}
	c.st.Servers, c.st.Source, c.st.Fallback = c.serversLocked()
	if len(c.configured) == 0 {
		c.st.Error = "NTP is off: clock.ntp names no server"
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Status returns the clock's state.
func (c *Clock) Status() mgmt.ClockStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.st
	st.Servers = append([]string(nil), c.st.Servers...)
	st.Fallback = append([]string(nil), c.st.Fallback...)
	st.Now = time.Now()
	return st
}

// Synced reports whether the clock was set by NTP this boot. When it has
// not, why says what the last attempt found, and changed is closed at the
// next change of the state (a sync or another error).
func (c *Clock) Synced() (synced bool, why string, changed <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st.Synced {
		return true, "", nil
	}
	why = c.st.Error
	if why == "" {
		why = "no NTP answer yet"
	}
	return false, why, c.changed
}

func (c *Clock) update(f func(st *mgmt.ClockStatus)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f(&c.st)
	close(c.changed)
	c.changed = make(chan struct{})
}

// Restore moves the clock forward to the time saved on perm when it is
// earlier, so that it never runs behind the last shutdown. A missing file
// (first boot, no perm) is not an error.
func (c *Clock) Restore() error {
	if c.savePath == "" {
		return nil
	}
	b, err := os.ReadFile(c.savePath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("clock: %w", err)
	}
	var saved time.Time
	if err := saved.UnmarshalText([]byte(strings.TrimSpace(string(b)))); err != nil {
		return fmt.Errorf("clock: %s: %w", c.savePath, err)
	}
	now := time.Now()
	if !now.Before(saved) {
		return nil
	}
	if err := c.setTime(saved); err != nil {
		return fmt.Errorf("clock: restore %s from %s: %w", saved.UTC().Format(time.RFC3339), c.savePath, err)
	}
	c.update(func(st *mgmt.ClockStatus) { st.Restored = saved })
	c.logf("clock: moved forward from %s to %s, the time saved at the last shutdown", now.UTC().Format(time.RFC3339), saved.UTC().Format(time.RFC3339))
	return nil
}

// Save writes the current time to perm (temporary file, fsync, rename),
// for Restore at the next boot. It does nothing when the directory is
// not there (no perm).
func (c *Clock) Save() error {
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	if c.savePath == "" {
		return nil
	}
	dir := filepath.Dir(c.savePath)
	if _, err := os.Stat(dir); err != nil {
		return nil
	}
	b, err := time.Now().UTC().MarshalText()
	if err != nil {
		return fmt.Errorf("clock: %w", err)
	}
	tmp := c.savePath + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("clock: save: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, c.savePath)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("clock: save %s: %w", c.savePath, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// Run keeps the clock synced until ctx ends: it asks the servers in order
// until one answers, every RetryInterval until the first sync, then every
// PollInterval (FailedPollInterval after a failure), and at once when
// a DHCP server named other NTP servers. It saves the time on perm after
// each sync and every SaveInterval. With no servers it only saves. When
// ingot.yaml names no server, it also asks the DHCP servers (askDHCP).
func (c *Clock) Run(ctx context.Context) error {
	start := time.Now()
	save := time.NewTicker(SaveInterval)
	defer save.Stop()
	next := time.NewTimer(0)
	defer next.Stop()
	if len(c.configured) == 0 {
		next.Stop()
	}
	if c.asksDHCP {
		go c.askDHCP(ctx)
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-save.C:
			if err := c.Save(); err != nil {
				c.logf("%v", err)
			}
			continue
		case <-c.serversChanged:
		case <-next.C:
		}
		err := c.sync(ctx, start)
		synced, _, _ := c.Synced()
		switch {
		case err == nil:
			next.Reset(PollInterval)
		case synced:
			next.Reset(FailedPollInterval)
		default:
			next.Reset(RetryInterval)
		}
	}
}

// sync asks each server in turn and sets the clock from the first answer.
func (c *Clock) sync(ctx context.Context, start time.Time) error {
	var errs []string
	c.mu.Lock()
	servers, _, fallback := c.serversLocked()
	c.mu.Unlock()
	for _, server := range append(servers, fallback...) {
		addr, err := spec.NTPServerAddr(server)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		qctx, cancel := context.WithTimeout(ctx, QueryTimeout)
		s, err := c.query(qctx, addr)
		cancel()
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		return c.apply(s, start)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	err := errors.New(strings.Join(errs, "; "))
	c.mu.Lock()
	same := c.st.Error == err.Error()
	c.mu.Unlock()
	if !same {
		c.logf("clock: not synced: %v", err)
		c.update(func(st *mgmt.ClockStatus) { st.Error = err.Error() })
	}
	return err
}

// apply steps the clock by s.Offset when it is at least StepThreshold and
// records the sync.
func (c *Clock) apply(s Sample, start time.Time) error {
	stepped := false
	if s.Offset >= StepThreshold || s.Offset <= -StepThreshold {
		before := time.Now()
		if err := c.setTime(before.Add(s.Offset)); err != nil {
			err = fmt.Errorf("clock: set the time from %s (offset %v): %w", s.Server, s.Offset, err)
			c.update(func(st *mgmt.ClockStatus) { st.Error = err.Error() })
			c.logf("%v", err)
			return err
		}
		stepped = true
		c.logf("clock: stepped by %v from %s to %s (NTP %s, stratum %d, delay %v)", s.Offset.Round(time.Millisecond),
			before.UTC().Format(time.RFC3339), time.Now().UTC().Format(time.RFC3339), s.Server, s.Stratum, s.Delay.Round(time.Microsecond))
	}
	first := false
	c.update(func(st *mgmt.ClockStatus) {
		if !st.Synced {
			first = true
			st.FirstSyncSeconds = time.Since(start).Seconds()
		}
		st.Synced, st.Server, st.OffsetSeconds, st.LastSync, st.Error = true, s.Server, s.Offset.Seconds(), time.Now(), ""
	})
	if first {
		if !stepped {
			c.logf("clock: synced with NTP %s, offset %v (stratum %d, delay %v)", s.Server, s.Offset, s.Stratum, s.Delay.Round(time.Microsecond))
		} else {
			c.logf("clock: synced with NTP %s", s.Server)
		}
	}
	if err := c.Save(); err != nil {
		c.logf("%v", err)
	}
	return nil
}

// setSystemTime sets CLOCK_REALTIME (needs CAP_SYS_TIME; init is root).
func setSystemTime(t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return fmt.Errorf("clock_settime: %w", err)
	}
	return nil
}

// AddressesChanged tells the clock that an interface's addresses changed
// (the DHCP client signals init after each lease): when ingot.yaml names
// no NTP server, the DHCP servers are asked again. It does not block;
// changes while an exchange runs are taken together.
func (c *Clock) AddressesChanged() {
	select {
	case c.addrsChanged <- struct{}{}:
	default:
	}
}

// askDHCP asks each interface's DHCP server for NTP servers now and after
// each AddressesChanged, until ctx ends.
func (c *Clock) askDHCP(ctx context.Context) {
	for {
		c.informAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-c.addrsChanged:
		}
	}
}

// informAll sends a DHCPINFORM on every interface with an address, one
// after the other, and takes each answer's NTP servers. An interface
// whose server does not answer (QEMU's user network never does) keeps
// what it had; one without an address any more loses it.
func (c *Clock) informAll(ctx context.Context) {
	ifs, err := c.interfaces()
	if err != nil {
		c.logf("clock: NTP servers from DHCP: %v", err)
		return
	}
	have := map[string]bool{}
	for _, ifc := range ifs {
		have[ifc.Name] = true
		r, err := c.inform(ctx, ifc)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			c.logf("clock: no NTP servers from DHCP on %s: %v", ifc.Name, err)
			continue
		}
		servers := make([]string, 0, len(r.NTPServers))
		for _, a := range r.NTPServers {
			servers = append(servers, a.String())
		}
		c.setFromDHCP(ifc.Name, servers, true)
	}
	c.mu.Lock()
	var gone []string
	for name := range c.fromDHCP {
		if !have[name] {
			gone = append(gone, name)
		}
	}
	c.mu.Unlock()
	for _, name := range gone {
		c.setFromDHCP(name, nil, false)
	}
}

// setFromDHCP records what the DHCP server of ifname named (present) or
// forgets it (!present), and, when the servers to ask change, updates
// the status, logs it and makes Run sync at once.
func (c *Clock) setFromDHCP(ifname string, servers []string, present bool) {
	c.mu.Lock()
	old, had := c.fromDHCP[ifname]
	if had == present && slices.Equal(old, servers) {
		c.mu.Unlock()
		return
	}
	if present {
		c.fromDHCP[ifname] = servers
	} else {
		delete(c.fromDHCP, ifname)
	}
	before, beforeSource := c.st.Servers, c.st.Source
	list, source, fallback := c.serversLocked()
	c.mu.Unlock()
	switch {
	case !present:
		c.logf("clock: %s has no address any more; its DHCP server's NTP servers are forgotten", ifname)
	case len(servers) == 0:
		c.logf("clock: the DHCP server on %s names no NTP server", ifname)
	default:
		c.logf("clock: the DHCP server on %s names NTP servers %s", ifname, strings.Join(servers, ", "))
	}
	if slices.Equal(before, list) && beforeSource == source {
		return
	}
	c.update(func(st *mgmt.ClockStatus) { st.Servers, st.Source, st.Fallback = list, source, fallback })
	c.logf("clock: NTP servers %s (%s)", strings.Join(list, ", "), source)
	select {
	case c.serversChanged <- struct{}{}:
	default:
	}
}

// serversLocked returns the servers to ask first, where they come from,
// and the servers to ask after them: clock.ntp when ingot.yaml named
// servers (or none); else the DHCP servers' NTP servers (by interface
// name, each once, at most spec.MaxNTPServers), then ingot's default
// ones; else the default ones. c.mu is held.
func (c *Clock) serversLocked() (servers []string, source string, fallback []string) {
	if !c.asksDHCP {
		return slices.Clone(c.configured), mgmt.ClockSourceConfig, nil
	}
	var fromDHCP []string
	for _, name := range slices.Sorted(maps.Keys(c.fromDHCP)) {
		for _, s := range c.fromDHCP[name] {
			if !slices.Contains(fromDHCP, s) && len(fromDHCP) < spec.MaxNTPServers {
				fromDHCP = append(fromDHCP, s)
			}
		}
	}
	if len(fromDHCP) == 0 {
		return slices.Clone(c.configured), mgmt.ClockSourceDefault, nil
	}
	return fromDHCP, mgmt.ClockSourceDHCP, slices.Clone(c.configured)
}
