// Package dhcpinform asks the LAN's DHCP server for the NTP servers of an
// address the appliance already has: it sends a DHCPINFORM (RFC 2131,
// section 3.4.4) asking for option 42 (RFC 2132, section 8.3) and reads
// them from the DHCPACK. ingot's DHCP client (gokrazy's cmd/dhcp) does
// not ask for option 42 and keeps no lease file, so the clock asks again
// this way once an interface has its address.
//
// The packet code is the standard library only. Answers are parsed
// strictly, because any peer on the LAN can send one: only a BOOTREPLY
// with the request's xid and hardware address is taken, every option must
// fit in the message, and the servers must be usable IPv4 unicast
// addresses, at most spec.MaxNTPServers of them.
package dhcpinform

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/ingotdev/ingot/packer/format/spec"
)

// The BOOTP/DHCP message (RFC 2131, section 2): a fixed header, the magic
// cookie, then options.
const (
	opRequest     = 1 // BOOTREQUEST
	opReply       = 2 // BOOTREPLY
	htypeEthernet = 1
	hlenEthernet  = 6

	offOp     = 0
	offHtype  = 1
	offHlen   = 2
	offXID    = 4
	offCiaddr = 12
	offChaddr = 28
	chaddrLen = 16
	offSname  = 44
	snameLen  = 64
	offFile   = 108
	fileLen   = 128
	offCookie = 236
	offOpts   = 240

	magicCookie = 0x63825363
	// minRequestBytes: a BOOTP message is at least 300 bytes (RFC 1542,
	// section 2.1); relays and old servers drop shorter ones.
	minRequestBytes = 300
)

// Options (RFC 2132) and DHCP message types (RFC 2132, section 9.6).
const (
	optPad          = 0
	optNTPServers   = 42
	optOverload     = 52
	optMessageType  = 53
	optServerID     = 54
	optParamRequest = 55
	optEnd          = 255

	msgAck    = 5
	msgNak    = 6
	msgInform = 8
)

// Request is one DHCPINFORM.
type Request struct {
	// XID identifies the exchange; the answer must carry it.
	XID uint32
	// HardwareAddr is the interface's Ethernet address (chaddr); the
	// answer must carry it too.
	HardwareAddr net.HardwareAddr
	// ClientAddr is the address the interface already has (ciaddr); the
	// server answers to it.
	ClientAddr netip.Addr
}

// Marshal encodes the DHCPINFORM: BOOTREQUEST, Ethernet, the xid, ciaddr,
// chaddr, the magic cookie, option 53 (DHCPINFORM) and option 55 asking
// for option 42, padded to 300 bytes. secs and flags stay 0: the server
// answers to ciaddr by unicast.
func (r Request) Marshal() ([]byte, error) {
	if len(r.HardwareAddr) != hlenEthernet {
		return nil, fmt.Errorf("dhcpinform: hardware address %q: want 6 bytes (Ethernet)", r.HardwareAddr)
	}
	if !r.ClientAddr.Is4() {
		return nil, fmt.Errorf("dhcpinform: client address %s: want IPv4", r.ClientAddr)
	}
	b := make([]byte, minRequestBytes)
	b[offOp], b[offHtype], b[offHlen] = opRequest, htypeEthernet, hlenEthernet
	binary.BigEndian.PutUint32(b[offXID:], r.XID)
	ip := r.ClientAddr.As4()
	copy(b[offCiaddr:], ip[:])
	copy(b[offChaddr:], r.HardwareAddr)
	binary.BigEndian.PutUint32(b[offCookie:], magicCookie)
	copy(b[offOpts:], []byte{
		optMessageType, 1, msgInform,
		optParamRequest, 1, optNTPServers,
		optEnd,
	})
	return b, nil
}

// Reply is what a DHCPACK said.
type Reply struct {
	// NTPServers are option 42's addresses, in the server's order; none
	// when the answer has no option 42.
	NTPServers []netip.Addr
	// ServerID is option 54, the server's address; invalid when absent.
	ServerID netip.Addr
}

// errNotOurs marks an answer to another request (another xid or client);
// on a LAN such answers are normal and are skipped.
var errNotOurs = errors.New("not an answer to our request")

// ParseReply checks that b is a DHCPACK to req and returns its NTP
// servers. An answer to another request is an error that wraps
// errNotOurs; any other error says which byte or option is wrong.
func ParseReply(b []byte, req Request) (Reply, error) {
	if len(b) < offOpts {
		return Reply{}, fmt.Errorf("message of %d bytes, shorter than the %d of a BOOTP header and magic cookie", len(b), offOpts)
	}
	if b[offOp] != opReply {
		return Reply{}, fmt.Errorf("op %d at byte %d, want %d (BOOTREPLY)", b[offOp], offOp, opReply)
	}
	if xid := binary.BigEndian.Uint32(b[offXID:]); xid != req.XID {
		return Reply{}, fmt.Errorf("xid 0x%08x at byte %d, want 0x%08x: %w", xid, offXID, req.XID, errNotOurs)
	}
	if b[offHtype] != htypeEthernet || b[offHlen] != hlenEthernet {
		return Reply{}, fmt.Errorf("hardware type %d, length %d at byte %d, want %d, %d (Ethernet)", b[offHtype], b[offHlen], offHtype, htypeEthernet, hlenEthernet)
	}
	if hw := net.HardwareAddr(b[offChaddr : offChaddr+hlenEthernet]); string(hw) != string(req.HardwareAddr) {
		return Reply{}, fmt.Errorf("chaddr %s at byte %d, want %s: %w", hw, offChaddr, req.HardwareAddr, errNotOurs)
	}
	if c := binary.BigEndian.Uint32(b[offCookie:]); c != magicCookie {
		return Reply{}, fmt.Errorf("magic cookie 0x%08x at byte %d, want 0x%08x", c, offCookie, magicCookie)
	}
	opts := options{}
	if err := opts.parse(b[offOpts:], offOpts, "options"); err != nil {
		return Reply{}, err
	}
	// Option overload (RFC 2132, section 9.3): more options in the file
	// field, then in sname (RFC 2131, section 4.1).
	if ov, ok := opts[optOverload]; ok {
		if len(ov) != 1 || ov[0] < 1 || ov[0] > 3 {
			return Reply{}, fmt.Errorf("option %d (overload) is %x, want one byte 1, 2 or 3", optOverload, ov)
		}
		if ov[0]&1 != 0 {
			if err := opts.parse(b[offFile:offFile+fileLen], offFile, "file field"); err != nil {
				return Reply{}, err
			}
		}
		if ov[0]&2 != 0 {
			if err := opts.parse(b[offSname:offSname+snameLen], offSname, "sname field"); err != nil {
				return Reply{}, err
			}
		}
	}
	switch mt := opts[optMessageType]; {
	case len(mt) != 1:
		return Reply{}, fmt.Errorf("option %d (message type) has %d bytes, want 1", optMessageType, len(mt))
	case mt[0] == msgNak:
		return Reply{}, fmt.Errorf("DHCPNAK: the server refuses the request")
	case mt[0] != msgAck:
		return Reply{}, fmt.Errorf("message type %d, want %d (DHCPACK)", mt[0], msgAck)
	}
	var r Reply
	if id := opts[optServerID]; len(id) == 4 {
		r.ServerID = netip.AddrFrom4([4]byte(id))
	}
	ntp, ok := opts[optNTPServers]
	if !ok {
		return r, nil
	}
	switch {
	case len(ntp) == 0 || len(ntp)%4 != 0:
		return Reply{}, fmt.Errorf("option %d (NTP servers) has %d bytes, want a multiple of 4 (IPv4 addresses)", optNTPServers, len(ntp))
	case len(ntp)/4 > spec.MaxNTPServers:
		return Reply{}, fmt.Errorf("option %d (NTP servers) lists %d servers, at most %d", optNTPServers, len(ntp)/4, spec.MaxNTPServers)
	}
	for i := 0; i < len(ntp); i += 4 {
		a := netip.AddrFrom4([4]byte(ntp[i : i+4]))
		if err := checkServer(a); err != nil {
			return Reply{}, fmt.Errorf("option %d (NTP servers) address %d: %w", optNTPServers, i/4, err)
		}
		r.NTPServers = append(r.NTPServers, a)
	}
	return r, nil
}

// checkServer refuses addresses that cannot be a LAN's NTP server.
func checkServer(a netip.Addr) error {
	b := a.As4()
	switch {
	case b[0] == 0:
		return fmt.Errorf("%s is in 0.0.0.0/8 (this network)", a)
	case a.IsLoopback():
		return fmt.Errorf("%s is a loopback address", a)
	case a.IsMulticast():
		return fmt.Errorf("%s is a multicast address", a)
	case b[0] >= 240:
		return fmt.Errorf("%s is a broadcast or reserved address (240.0.0.0/4)", a)
	}
	return nil
}

// options holds a message's options by code; an option given more than
// once is concatenated (RFC 3396).
type options map[byte][]byte

// parse reads the options of one area of a message; base is the area's
// offset in the message and area its name, for errors. The area must end
// with option 255.
func (o options) parse(b []byte, base int, area string) error {
	for i := 0; i < len(b); {
		code := b[i]
		switch code {
		case optPad:
			i++
			continue
		case optEnd:
			return nil
		}
		if i+1 >= len(b) {
			return fmt.Errorf("option %d at byte %d: no length byte before the end of the %s", code, base+i, area)
		}
		n := int(b[i+1])
		if i+2+n > len(b) {
			return fmt.Errorf("option %d at byte %d: length %d runs past the end of the %s (byte %d)", code, base+i, n, area, base+len(b))
		}
		if code == optOverload && area != "options" {
			return fmt.Errorf("option %d (overload) at byte %d: only allowed in the options, not the %s", code, base+i, area)
		}
		o[code] = append(o[code], b[i+2:i+2+n]...)
		i += 2 + n
	}
	return fmt.Errorf("the %s end at byte %d without option %d (end)", area, base+len(b), optEnd)
}
