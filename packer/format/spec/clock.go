package spec

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Clock says how ingot-init keeps the system clock: it restores the time
// saved on perm (PermClockPath) when the clock is earlier, and asks the
// NTP servers of NTP (SNTP, RFC 4330) until one answers, then again every
// NTPPollInterval. An empty NTP turns the client off.
type Clock struct {
	// NTP lists servers as "host" or "host:port" (port NTPPort by
	// default), asked in order.
	NTP []string `json:"ntp,omitempty"`
	// Defaulted says that NTP is DefaultNTPServers because ingot.yaml
	// names no clock.ntp (the builder's config parser decides). Then the
	// NTP servers of a DHCP server (option 42, asked with a DHCPINFORM)
	// are asked first and NTP only after them; servers named in
	// ingot.yaml are used as they are.
	Defaulted bool `json:"defaulted,omitempty"`
}

// AsksDHCP reports whether the NTP servers of a DHCP server come before
// NTP: only when ingot.yaml named none and the client is on.
func (c Clock) AsksDHCP() bool { return c.Defaulted && len(c.NTP) > 0 }

// DefaultNTPServers are the servers of an ingot.yaml without clock.ntp.
var DefaultNTPServers = []string{"0.pool.ntp.org", "1.pool.ntp.org", "2.pool.ntp.org", "3.pool.ntp.org"}

// NTPPort is the NTP server port of a server given without one.
const NTPPort = 123

// MaxNTPServers bounds clock.ntp, and the servers taken from a DHCP
// server's answer.
const MaxNTPServers = 8

// PermClockPath is where ingot-init keeps the last known time on perm: a
// dot file, which no service's /perm/<name> can be.
const PermClockPath = "/perm/.ingot-clock"

// Validate checks the clock settings.
func (c Clock) Validate() error {
	if c.Defaulted && len(c.NTP) == 0 {
		return fmt.Errorf("defaulted: set, but ntp names no server")
	}
	if len(c.NTP) > MaxNTPServers {
		return fmt.Errorf("ntp: %d servers, at most %d", len(c.NTP), MaxNTPServers)
	}
	for i, s := range c.NTP {
		if _, err := NTPServerAddr(s); err != nil {
			return fmt.Errorf("ntp[%d]: %w", i, err)
		}
	}
	return nil
}

// NTPServerAddr returns server as "host:port", with NTPPort when it names
// no port, or says what is wrong with it.
func NTPServerAddr(server string) (string, error) {
	host, port := server, strconv.Itoa(NTPPort)
	if h, p, err := net.SplitHostPort(server); err == nil {
		host, port = h, p
	} else if strings.Count(server, ":") == 1 || strings.HasPrefix(server, "[") {
		return "", fmt.Errorf("%q: %v", server, err)
	}
	if host == "" || len(host) > 253 || strings.ContainsAny(host, " /\\\x00") || hasControl(host) {
		return "", fmt.Errorf("%q: want a host name or address, optionally with :port", server)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("%q: port %q is not 1..65535", server, port)
	}
	return net.JoinHostPort(host, port), nil
}
