package spec

import (
	"fmt"
	"net"
	"net/url"
	"time"
)

// Health is a service's health check: a probe that init runs in the
// appliance's network while the service runs. A trial boot is confirmed
// only when every checked service is healthy at the end of the health
// window; with Restart, a service that turns unhealthy is restarted.
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
		return fmt.Errorf("health: set http or tcp")
	case h.HTTP != "" && h.TCP != "":
		return fmt.Errorf("health: set http or tcp, not both")
	case h.HTTP != "":
		if err := ValidateHealthURL(h.HTTP); err != nil {
			return fmt.Errorf("health: http: %w", err)
		}
	default:
		if err := ValidateHealthAddress(h.TCP); err != nil {
			return fmt.Errorf("health: tcp: %w", err)
		}
	}
	iv, to := h.Interval(), h.Timeout()
	switch {
	case h.IntervalMillis < 0 || iv < MinHealthInterval || iv > MaxHealthInterval:
		return fmt.Errorf("health: interval %v outside %v..%v", iv, MinHealthInterval, MaxHealthInterval)
	case h.TimeoutMillis < 0 || to < MinHealthTimeout || to > iv:
		return fmt.Errorf("health: timeout %v outside %v..the interval (%v)", to, MinHealthTimeout, iv)
	case h.Retries < 0 || h.RetryCount() > MaxHealthRetries:
		return fmt.Errorf("health: retries %d outside 1..%d", h.Retries, MaxHealthRetries)
	}
	return nil
}

// ValidateHealthURL checks an http health check URL: http (probes run
// inside the appliance, where a certificate for 127.0.0.1 would prove
// nothing), a host and no user info.
func ValidateHealthURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return err
	case u.Scheme != "http":
		return fmt.Errorf("%q: want an http:// URL", s)
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("%q: no host", s)
	case u.User != nil:
		return fmt.Errorf("%q: no user info, please", s)
	case u.Fragment != "":
		return fmt.Errorf("%q: a fragment is never sent", s)
	}
	return nil
}

// ValidateHealthAddress checks a tcp health check address, HOST:PORT.
func ValidateHealthAddress(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	if host == "" {
		return fmt.Errorf("%q: no host (127.0.0.1:PORT for the appliance itself)", s)
	}
	if port == "" || port == "0" {
		return fmt.Errorf("%q: no port", s)
	}
	return nil
}
