package spec

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Metrics is the Prometheus endpoint of the appliance (ingot.yaml's
// metrics:). An empty Listen turns it off.
type Metrics struct {
	// Listen is a TCP listen address such as ":9100"; the endpoint serves
	// plain HTTP at MetricsPath.
	Listen string `json:"listen,omitempty"`
	// Auth is MetricsAuthToken (the default when empty) or MetricsAuthNone.
	Auth MetricsAuth `json:"auth,omitempty"`
	// TokenSHA256 is the hex SHA-256 of the metrics token
	// (certpin.MetricsToken of the management token), which alone opens
	// the endpoint with auth token: the management token does not.
	TokenSHA256 string `json:"token_sha256,omitempty"`
}

// MetricsAuth is how a scraper authenticates.
type MetricsAuth string

// The metrics endpoint's authentication modes.
const (
	// MetricsAuthToken wants "Authorization: Bearer TOKEN" with the
	// metrics token, a read-only token derived from the management token
	// (`ingot metrics-token`; Prometheus: authorization.credentials).
	MetricsAuthToken MetricsAuth = "token"
	// MetricsAuthNone serves anyone who reaches the port.
	MetricsAuthNone MetricsAuth = "none"
)

// MetricsPath is where the metrics endpoint serves the text exposition
// format.
const MetricsPath = "/metrics"

// DefaultMetricsListen is metrics.listen when ingot.yaml has metrics:
// without a listen address.
const DefaultMetricsListen = ":9100"

// Validate checks the listen address and the auth mode.
func (m Metrics) Validate() error {
	if m.Listen == "" {
		if m.Auth != "" {
			return fmt.Errorf("auth: %q is set but listen is empty", m.Auth)
		}
		return nil
	}
	if err := CheckListenAddr(m.Listen); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	switch m.Auth {
	case "", MetricsAuthToken:
		if !tokenHashRE.MatchString(m.TokenSHA256) {
			return fmt.Errorf("token_sha256: %q is not 64 lowercase hex digits (auth token needs the metrics token's hash)", m.TokenSHA256)
		}
		return nil
	case MetricsAuthNone:
		return nil
	}
	return fmt.Errorf("auth: %q is not one of token, none", m.Auth)
}

// CheckListenAddr checks a TCP listen address: an optional IP address and
// a port 1..65535 (":9100", "0.0.0.0:9100", "[::1]:9100").
func CheckListenAddr(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not a listen address (like :9100 or 0.0.0.0:9100)", s)
	}
	if host != "" && net.ParseIP(host) == nil {
		return fmt.Errorf("%q: host must be an IP address or empty", s)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q: port must be 1..65535", s)
	}
	return nil
}

// Logs is where the appliance sends its log lines besides the console and
// perm (ingot.yaml's logs:). An empty Remote sends nothing.
type Logs struct {
	// Remote is a syslog receiver: syslog+tls://HOST:PORT,
	// syslog+tcp://HOST:PORT or syslog+udp://HOST:PORT (ParseRemote).
	Remote string `json:"remote,omitempty"`
	// SpoolBytes bounds the lines kept on perm while the receiver cannot
	// be reached; 0 means DefaultSpoolBytes.
	SpoolBytes int64 `json:"spool_bytes,omitempty"`
}

// LogsCAPath is the CA certificate (PEM) that a syslog+tls receiver's
// certificate must chain to; the builder copies ingot.yaml's logs.ca here.
const LogsCAPath = "/etc/ingot/logs-ca.pem"

// LogSpoolDir holds the lines waiting for the remote receiver, on perm.
// It is under PermLogDir, which no volume may expose to a service.
const LogSpoolDir = PermLogDir + "/spool"

// Bounds of Logs.SpoolBytes.
const (
	DefaultSpoolBytes int64 = 16 << 20
	MinSpoolBytes     int64 = 64 << 10
	MaxSpoolBytes     int64 = 1 << 30
)

// EffectiveSpoolBytes is SpoolBytes or its default.
func (l Logs) EffectiveSpoolBytes() int64 {
	if l.SpoolBytes == 0 {
		return DefaultSpoolBytes
	}
	return l.SpoolBytes
}

// Validate checks the receiver's URL and the spool's bound.
func (l Logs) Validate() error {
	if l.Remote == "" {
		if l.SpoolBytes != 0 {
			return fmt.Errorf("spool_bytes: %d is set but remote is empty", l.SpoolBytes)
		}
		return nil
	}
	if _, err := ParseRemote(l.Remote); err != nil {
		return fmt.Errorf("remote: %w", err)
	}
	if l.SpoolBytes != 0 && (l.SpoolBytes < MinSpoolBytes || l.SpoolBytes > MaxSpoolBytes) {
		return fmt.Errorf("spool_bytes: %d is outside %d..%d", l.SpoolBytes, MinSpoolBytes, MaxSpoolBytes)
	}
	return nil
}

// Remote is a parsed logs.remote URL.
type Remote struct {
	// Transport is "tls", "tcp" or "udp".
	Transport string
	// Addr is HOST:PORT; Host is its host part (the name a TLS
	// certificate must carry).
	Addr, Host string
}

// ParseRemote reads syslog+tls://HOST:PORT, syslog+tcp://HOST:PORT or
// syslog+udp://HOST:PORT. The port is required (6514 is syslog over TLS,
// 514 plain), and nothing may follow it.
func ParseRemote(s string) (Remote, error) {
	scheme, rest, ok := strings.Cut(s, "://")
	transport, okScheme := strings.CutPrefix(scheme, "syslog+")
	if !ok || !okScheme || (transport != "tls" && transport != "tcp" && transport != "udp") {
		return Remote{}, fmt.Errorf("%q: want syslog+tls://HOST:PORT, syslog+tcp://HOST:PORT or syslog+udp://HOST:PORT", s)
	}
	host, port, err := net.SplitHostPort(rest)
	if err != nil || host == "" || strings.ContainsAny(rest, "/?#@") || hasControl(rest) {
		return Remote{}, fmt.Errorf("%q: want HOST:PORT after %s://, nothing else", s, scheme)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return Remote{}, fmt.Errorf("%q: port must be 1..65535", s)
	}
	return Remote{Transport: transport, Addr: rest, Host: host}, nil
}
