// Package clock keeps an appliance's system clock: it moves the clock
// forward at boot to the time saved on perm at the last shutdown (a board
// without a battery-backed clock, or a VM whose RTC is wrong, must not
// start in the past: certificates, logs and file times depend on it), asks
// the configured NTP servers with a small SNTP client (RFC 4330, standard
// library only) and steps the clock to their time, and tells the
// supervisor when it has, for services that set wait_for_clock. Its state
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
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

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
	servers  []string
	savePath string
	logf     func(format string, args ...any)
	// Replaced by tests.
	query   func(ctx context.Context, server string) (Sample, error)
	setTime func(time.Time) error

	saveMu sync.Mutex // one Save at a time: they share the temporary file

	mu      sync.Mutex
	st      mgmt.ClockStatus
	changed chan struct{} // closed and replaced on every change of st
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

// New returns a Clock for the appliance's clock settings; logf receives
// what it does.
func New(cfg spec.Clock, logf func(format string, args ...any), opts ...Option) *Clock {
	c := &Clock{
		servers:  append([]string(nil), cfg.NTP...),
		savePath: spec.PermClockPath,
		logf:     logf,
		query:    Query,
		setTime:  setSystemTime,
		changed:  make(chan struct{}),
	}
	c.st.Servers = append([]string(nil), cfg.NTP...)
	if len(c.servers) == 0 {
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
// PollInterval (FailedPollInterval after a failure). It saves the time on
// perm after each sync and every SaveInterval. With no servers it only
// saves.
func (c *Clock) Run(ctx context.Context) error {
	start := time.Now()
	save := time.NewTicker(SaveInterval)
	defer save.Stop()
	next := time.NewTimer(0)
	defer next.Stop()
	if len(c.servers) == 0 {
		next.Stop()
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
	for _, server := range c.servers {
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
