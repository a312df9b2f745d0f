package spec

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"
)

// Health is a service's health check: a probe that init runs in the
// appliance's network while the service runs. A trial boot is confirmed
// only when every checked service has passed TrialPasses probes in a row
// (or is healthy at the end of the health window); with Restart, a
// service that turns unhealthy is restarted.
// Exactly one of HTTP and TCP is set.
type Health struct {
	// HTTP is an http:// URL to GET; a 2xx or 3xx answer is healthy.
	HTTP string `json:"http,omitempty"`
	// TCP is HOST:PORT to connect to; a connection is healthy.
	TCP string `json:"tcp,omitempty"`
	// IntervalMillis is the time between probes, 0 for
	// DefaultHealthInterval.
	IntervalMillis int64 `json:"interval_ms,omitempty"`
	// TimeoutMillis bounds one probe, 0 for DefaultHealthTimeout.
	TimeoutMillis int64 `json:"timeout_ms,omitempty"`
	// Retries is how many probes in a row must fail for the service to be
	// unhealthy, 0 for DefaultHealthRetries.
	Retries int `json:"retries,omitempty"`
	// Restart restarts the service when it turns unhealthy (SIGTERM, its
	// grace period, SIGKILL; then its restart policy, as for a crash).
	Restart bool `json:"restart,omitempty"`
}

// Defaults and bounds of a health check.
const (
	DefaultHealthInterval = 5 * time.Second
	DefaultHealthTimeout  = 2 * time.Second
	DefaultHealthRetries  = 3
	MinHealthInterval     = time.Second
	MaxHealthInterval     = time.Hour
	MinHealthTimeout      = 100 * time.Millisecond
	MaxHealthRetries      = 100
)

// Interval returns the time between probes.
func (h Health) Interval() time.Duration {
	if h.IntervalMillis == 0 {
		return DefaultHealthInterval
	}
	return time.Duration(h.IntervalMillis) * time.Millisecond
}

// Timeout returns the bound of one probe.
func (h Health) Timeout() time.Duration {
	if h.TimeoutMillis == 0 {
		return DefaultHealthTimeout
	}
	return time.Duration(h.TimeoutMillis) * time.Millisecond
}

// RetryCount returns how many failed probes in a row make the service
// unhealthy.
func (h Health) RetryCount() int {
	if h.Retries == 0 {
		return DefaultHealthRetries
	}
	return h.Retries
}

// Target is what the probe reaches, for messages: the URL or HOST:PORT.
func (h Health) Target() string {
	if h.HTTP != "" {
		return h.HTTP
	}
	return h.TCP
}

// Validate checks the probe and its timing.
func (h Health) Validate() error {
	switch {
	case h.HTTP == "" && h.TCP == "":
		return fmt.Errorf("health: %w", ErrHealthNoProbe)
	case h.HTTP != "" && h.TCP != "":
		return fmt.Errorf("health: %w", ErrHealthTwoProbes)
	case h.HTTP != "":
		if err := CheckHealthURL(h.HTTP); err != nil {
			return fmt.Errorf("health: http: %w", err)
		}
	default:
		if err := CheckHealthAddress(h.TCP); err != nil {
			return fmt.Errorf("health: tcp: %w", err)
		}
	}
	if err := CheckHealthInterval(h.Interval()); err != nil {
		return fmt.Errorf("health: interval: %w", err)
	}
	if err := CheckHealthTimeout(h.Timeout(), h.Interval()); err != nil {
		return fmt.Errorf("health: timeout: %w", err)
	}
	if h.Retries < 0 || h.RetryCount() > MaxHealthRetries {
		return fmt.Errorf("health: retries %d outside 1..%d", h.Retries, MaxHealthRetries)
	}
	return nil
}

// The errors of a health check with other than exactly one probe.
var (
	ErrHealthNoProbe   = errors.New("set http: (a URL to GET) or tcp: (HOST:PORT to connect to)")
	ErrHealthTwoProbes = errors.New("set http: or tcp:, not both")
)

// CheckHealthURL checks an http health check URL: http (probes run
// inside the appliance, where a certificate for 127.0.0.1 would prove
// nothing), a host and no user info.
func CheckHealthURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Errorf("%q is not a URL: %w", s, err)
	case u.Scheme != "http":
		return fmt.Errorf("%q: want an http:// URL (the probe runs inside the appliance, e.g. http://127.0.0.1:8080/healthz)", s)
	case u.Hostname() == "":
		return fmt.Errorf("%q has no host", s)
	case u.User != nil:
		return fmt.Errorf("%q: no user info in a health check URL", s)
	case u.Fragment != "":
		return fmt.Errorf("%q: a fragment is never sent", s)
	}
	return nil
}

// CheckHealthAddress checks a tcp health check address, HOST:PORT.
func CheckHealthAddress(s string) error {
	host, port, err := net.SplitHostPort(s)
	switch {
	case err != nil:
		return fmt.Errorf("%q: want HOST:PORT (127.0.0.1:5432): %w", s, err)
	case host == "":
		return fmt.Errorf("%q has no host (127.0.0.1:PORT for the appliance itself)", s)
	case port == "" || port == "0":
		return fmt.Errorf("%q has no port", s)
	}
	return nil
}

// CheckHealthInterval checks the time between probes: whole milliseconds
// from MinHealthInterval to MaxHealthInterval.
func CheckHealthInterval(d time.Duration) error {
	if d < MinHealthInterval || d > MaxHealthInterval || d%time.Millisecond != 0 {
		return fmt.Errorf("%v is outside %v..%v (whole milliseconds)", d, MinHealthInterval, MaxHealthInterval)
	}
	return nil
}

// CheckHealthTimeout checks the bound of one probe: whole milliseconds
// from MinHealthTimeout to the interval.
func CheckHealthTimeout(d, interval time.Duration) error {
	if d < MinHealthTimeout || d > interval || d%time.Millisecond != 0 {
		return fmt.Errorf("%v is outside %v..the interval, %v (whole milliseconds)", d, MinHealthTimeout, interval)
	}
	return nil
}
