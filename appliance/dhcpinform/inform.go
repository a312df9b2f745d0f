package dhcpinform

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DHCP's UDP ports (RFC 2131, section 4.1).
const (
	ServerPort = 67
	ClientPort = 68
)

// Retries of Inform: DefaultTries DHCPINFORMs, the first waiting
// DefaultFirstWait for its answer and each next one twice as long as the
// one before (1 + 2 + 4 + 8 = 15 s in all). A server on the LAN answers in
// milliseconds; the retries cover a lost packet or a server still busy
// with the lease it just gave.
const (
	DefaultTries     = 4
	DefaultFirstWait = time.Second
)

// maxMessageBytes is the read buffer: any UDP payload fits, so a long
// answer is parsed, not truncated.
const maxMessageBytes = 65535

// maxLoggedRefusals bounds the log lines of one exchange, so that a
// flooding peer cannot fill init's log.
const maxLoggedRefusals = 3

// Interface is a network interface that has an IPv4 address.
type Interface struct {
	// Name is the kernel's name (eth0); the socket is bound to it
	// (SO_BINDTODEVICE) so that the broadcast leaves through it.
	Name string
	// HardwareAddr is its Ethernet address.
	HardwareAddr net.HardwareAddr
	// Addr is its IPv4 address.
	Addr netip.Addr
}

// Interfaces lists the interfaces a DHCPINFORM can go out of: up, not
// loopback, able to broadcast, with an Ethernet address and a global
// IPv4 address (the first, when there are several), in the kernel's
// order.
func Interfaces() ([]Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("dhcpinform: interfaces: %w", err)
	}
	var out []Interface
	for _, i := range ifs {
		if i.Flags&net.FlagUp == 0 || i.Flags&net.FlagLoopback != 0 || i.Flags&net.FlagBroadcast == 0 || len(i.HardwareAddr) != hlenEthernet {
			continue
		}
		addrs, err := i.Addrs()
		if err != nil {
			return nil, fmt.Errorf("dhcpinform: addresses of %s: %w", i.Name, err)
		}
		for _, a := range addrs {
			n, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(n.IP)
			if ip = ip.Unmap(); ok && ip.Is4() && ip.IsGlobalUnicast() {
				out = append(out, Interface{Name: i.Name, HardwareAddr: i.HardwareAddr, Addr: ip})
				break
			}
		}
	}
	return out, nil
}

// Client sends DHCPINFORMs. The zero Client is the real one: broadcast
// to 255.255.255.255:67 from port 68; tests point it elsewhere.
type Client struct {
	// Server is where requests go; zero means 255.255.255.255:ServerPort.
	// Answers must come from its port.
	Server netip.AddrPort
	// Local is the address the socket is bound to; zero means
	// 0.0.0.0:ClientPort, where the server's answer to ciaddr arrives.
	Local netip.AddrPort
	// Tries and FirstWait replace DefaultTries and DefaultFirstWait
	// when not zero.
	Tries     int
	FirstWait time.Duration
	// Logf, when set, receives the answers refused as malformed or
	// hostile (at most maxLoggedRefusals an exchange).
	Logf func(format string, args ...any)
}

// Inform asks the DHCP server on ifc's network for its NTP servers: it
// sends a DHCPINFORM for ifc.Addr and waits for the DHCPACK with its xid
// and ifc's hardware address, sending it again with the same xid when
// none came, Tries times in all. Answers to other requests are skipped;
// malformed ones are refused (logged) and the wait goes on. The error
// says when nothing acceptable came.
func (c Client) Inform(ctx context.Context, ifc Interface) (Reply, error) {
	server, local := c.Server, c.Local
	if !server.IsValid() {
		server = netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), ServerPort)
	}
	if !local.IsValid() {
		local = netip.AddrPortFrom(netip.IPv4Unspecified(), ClientPort)
	}
	tries, wait := c.Tries, c.FirstWait
	if tries <= 0 {
		tries = DefaultTries
	}
	if wait <= 0 {
		wait = DefaultFirstWait
	}
	var xid [4]byte
	if _, err := rand.Read(xid[:]); err != nil {
		return Reply{}, fmt.Errorf("dhcpinform %s: xid: %w", ifc.Name, err)
	}
	req := Request{XID: binary.BigEndian.Uint32(xid[:]), HardwareAddr: ifc.HardwareAddr, ClientAddr: ifc.Addr}
	msg, err := req.Marshal()
	if err != nil {
		return Reply{}, fmt.Errorf("dhcpinform %s: %w", ifc.Name, err)
	}
	conn, err := listen(ctx, ifc.Name, local)
	if err != nil {
		return Reply{}, fmt.Errorf("dhcpinform %s: %w", ifc.Name, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer stop()

	buf := make([]byte, maxMessageBytes)
	var refused, others int
	var lastRefusal string
	start := time.Now()
	for try := 0; try < tries; try, wait = try+1, wait*2 {
		if _, err := conn.WriteToUDPAddrPort(msg, server); err != nil {
			return Reply{}, fmt.Errorf("dhcpinform %s: send to %s: %w", ifc.Name, server, err)
		}
		if err := conn.SetReadDeadline(time.Now().Add(wait)); err != nil {
			return Reply{}, fmt.Errorf("dhcpinform %s: %w", ifc.Name, err)
		}
		// After the deadline is set: a cancellation from now on moves it.
		if err := ctx.Err(); err != nil {
			return Reply{}, fmt.Errorf("dhcpinform %s: %w", ifc.Name, err)
		}
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				if ctx.Err() != nil {
					return Reply{}, fmt.Errorf("dhcpinform %s: %w", ifc.Name, ctx.Err())
				}
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				return Reply{}, fmt.Errorf("dhcpinform %s: receive: %w", ifc.Name, err)
			}
			if from.Port() != server.Port() {
				others++ // not from a DHCP server
				continue
			}
			r, err := ParseReply(buf[:n], req)
			if errors.Is(err, errNotOurs) {
				others++
				continue
			}
			if err != nil {
				refused++
				lastRefusal = fmt.Sprintf("from %s: %v", from, err)
				if c.Logf != nil && refused <= maxLoggedRefusals {
					c.Logf("dhcpinform %s: refused an answer %s", ifc.Name, lastRefusal)
				}
				continue
			}
			return r, nil
		}
	}
	err = fmt.Errorf("dhcpinform %s: no DHCPACK to %d DHCPINFORMs for %s in %v", ifc.Name, tries, ifc.Addr, time.Since(start).Round(time.Millisecond))
	if refused > 0 {
		err = fmt.Errorf("%w; refused %d answers, the last %s", err, refused, lastRefusal)
	}
	if others > 0 {
		err = fmt.Errorf("%w; skipped %d packets for other requests", err, others)
	}
	return Reply{}, err
}

// listen opens the UDP socket: address reuse (another exchange on another
// interface may hold the port), broadcast allowed, and bound to the
// interface when one is named.
func listen(ctx context.Context, ifname string, local netip.AddrPort) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
				serr = fmt.Errorf("SO_REUSEADDR: %w", serr)
				return
			}
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1); serr != nil {
				serr = fmt.Errorf("SO_BROADCAST: %w", serr)
				return
			}
			if ifname != "" {
				if serr = unix.BindToDevice(int(fd), ifname); serr != nil {
					serr = fmt.Errorf("SO_BINDTODEVICE %s: %w", ifname, serr)
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(ctx, "udp4", local.String())
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", local, err)
	}
	return pc.(*net.UDPConn), nil
}
