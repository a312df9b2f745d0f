// Package netconf configures the network of an appliance without ip(8) or
// a DHCP client: it brings links up, adds an address and a default route
// with rtnetlink messages, and writes resolv.conf and hosts files.
package netconf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// ackTimeout bounds each request: the kernel answers at once, so a silent
// socket means something is badly wrong and init should go on.
const ackTimeout = 5 * time.Second

// Conn is an rtnetlink socket.
type Conn struct {
	fd  int
	seq uint32
}

// Dial opens an rtnetlink socket in the calling thread's network namespace.
func Dial() (*Conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netconf: netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netconf: netlink bind: %w", err)
	}
	tv := unix.NsecToTimeval(ackTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netconf: netlink receive timeout: %w", err)
	}
	return &Conn{fd: fd}, nil
}

// Close closes the socket.
func (c *Conn) Close() error { return unix.Close(c.fd) }

// SetLinkUp sets IFF_UP on the interface with the given index.
func (c *Conn) SetLinkUp(index int) error {
	if err := c.request(linkUpMessage(c.next(), index)); err != nil {
		return fmt.Errorf("netconf: link %d up: %w", index, err)
	}
	return nil
}

// AddAddress adds (or replaces) address p on the interface.
func (c *Conn) AddAddress(index int, p netip.Prefix) error {
	m, err := addressMessage(c.next(), index, p)
	if err == nil {
		err = c.request(m)
	}
	if err != nil {
		return fmt.Errorf("netconf: link %d: address %s: %w", index, p, err)
	}
	return nil
}

// AddDefaultRoute adds (or replaces) the default route via gw out of the
// interface. A gateway outside the interface's prefix is marked on-link,
// as cloud networks with /32 addresses need.
func (c *Conn) AddDefaultRoute(index int, gw netip.Addr, onLink bool) error {
	m, err := defaultRouteMessage(c.next(), index, gw, onLink)
	if err == nil {
		err = c.request(m)
	}
	if err != nil {
		return fmt.Errorf("netconf: link %d: default route via %s: %w", index, gw, err)
	}
	return nil
}

func (c *Conn) next() uint32 {
	c.seq++
	return c.seq
}

// request sends one message with NLM_F_ACK and waits for its ack.
func (c *Conn) request(m []byte) error {
	seq := binary.NativeEndian.Uint32(m[8:])
	if err := unix.Sendto(c.fd, m, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	buf := make([]byte, 16<<10)
	for {
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("receive: %w", err)
		}
		done, err := parseAck(buf[:n], seq)
		if done {
			return err
		}
	}
}

// parseAck looks through the messages of one datagram for the
// NLMSG_ERROR answering seq; done reports whether it was there.
func parseAck(b []byte, seq uint32) (done bool, err error) {
	for len(b) >= unix.SizeofNlMsghdr {
		l := binary.NativeEndian.Uint32(b[0:])
		typ := binary.NativeEndian.Uint16(b[4:])
		mseq := binary.NativeEndian.Uint32(b[8:])
		if l < unix.SizeofNlMsghdr || int(l) > len(b) {
			return true, fmt.Errorf("malformed netlink message of %d bytes in %d", l, len(b))
		}
		if typ == unix.NLMSG_ERROR && mseq == seq {
			if l < unix.SizeofNlMsghdr+4 {
				return true, errors.New("short netlink error message")
			}
			if code := int32(binary.NativeEndian.Uint32(b[unix.SizeofNlMsghdr:])); code != 0 {
				return true, unix.Errno(-code)
			}
			return true, nil
		}
		next := nlAlign(int(l))
		if next >= len(b) {
			break
		}
		b = b[next:]
	}
	return false, nil
}

func nlAlign(n int) int { return (n + 3) &^ 3 }

// message builds a netlink message: header, fixed body, attributes.
type message struct{ b []byte }

func newMessage(typ uint16, flags uint16, seq uint32, body []byte) *message {
	m := &message{b: make([]byte, unix.SizeofNlMsghdr, 64)}
	binary.NativeEndian.PutUint16(m.b[4:], typ)
	binary.NativeEndian.PutUint16(m.b[6:], flags)
	binary.NativeEndian.PutUint32(m.b[8:], seq)
	// pid 0: the kernel fills in the socket's port id.
	m.b = append(m.b, body...)
	return m
}

func (m *message) attr(typ uint16, data []byte) {
	var h [unix.SizeofRtAttr]byte
	binary.NativeEndian.PutUint16(h[0:], uint16(unix.SizeofRtAttr+len(data)))
	binary.NativeEndian.PutUint16(h[2:], typ)
	m.b = append(m.b, h[:]...)
	m.b = append(m.b, data...)
	for len(m.b)%4 != 0 {
		m.b = append(m.b, 0)
	}
}

func (m *message) bytes() []byte {
	binary.NativeEndian.PutUint32(m.b[0:], uint32(len(m.b)))
	return m.b
}

func linkUpMessage(seq uint32, index int) []byte {
	body := make([]byte, unix.SizeofIfInfomsg)
	body[0] = unix.AF_UNSPEC
	binary.NativeEndian.PutUint32(body[4:], uint32(index))
	binary.NativeEndian.PutUint32(body[8:], unix.IFF_UP)  // flags
	binary.NativeEndian.PutUint32(body[12:], unix.IFF_UP) // change mask
	return newMessage(unix.RTM_NEWLINK, unix.NLM_F_REQUEST|unix.NLM_F_ACK, seq, body).bytes()
}

func family(a netip.Addr) (uint8, error) {
	switch {
	case a.Is4():
		return unix.AF_INET, nil
	case a.Is6() && !a.Is4In6():
		return unix.AF_INET6, nil
	}
	return 0, fmt.Errorf("%v is not an IPv4 or IPv6 address", a)
}

func addressMessage(seq uint32, index int, p netip.Prefix) ([]byte, error) {
	if !p.IsValid() {
		return nil, errors.New("invalid prefix")
	}
	fam, err := family(p.Addr())
	if err != nil {
		return nil, err
	}
	body := make([]byte, unix.SizeofIfAddrmsg)
	body[0] = fam
	body[1] = uint8(p.Bits())
	if fam == unix.AF_INET6 {
		// Skip duplicate address detection: an appliance owns its static
		// address, and DAD would keep it unusable for a second or two.
		body[2] = unix.IFA_F_NODAD
	}
	body[3] = unix.RT_SCOPE_UNIVERSE
	binary.NativeEndian.PutUint32(body[4:], uint32(index))
	m := newMessage(unix.RTM_NEWADDR, unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_REPLACE, seq, body)
	addr := p.Addr().AsSlice()
	m.attr(unix.IFA_LOCAL, addr)
	m.attr(unix.IFA_ADDRESS, addr)
	return m.bytes(), nil
}

func defaultRouteMessage(seq uint32, index int, gw netip.Addr, onLink bool) ([]byte, error) {
	fam, err := family(gw)
	if err != nil {
		return nil, err
	}
	body := make([]byte, unix.SizeofRtMsg)
	body[0] = fam
	// dst_len, src_len, tos stay 0: the default route.
	body[4] = unix.RT_TABLE_MAIN
	body[5] = unix.RTPROT_BOOT
	body[6] = unix.RT_SCOPE_UNIVERSE
	body[7] = unix.RTN_UNICAST
	if onLink {
		binary.NativeEndian.PutUint32(body[8:], unix.RTNH_F_ONLINK)
	}
	m := newMessage(unix.RTM_NEWROUTE, unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_REPLACE, seq, body)
	m.attr(unix.RTA_GATEWAY, gw.AsSlice())
	var oif [4]byte
	binary.NativeEndian.PutUint32(oif[:], uint32(index))
	m.attr(unix.RTA_OIF, oif[:])
	return m.bytes(), nil
}
