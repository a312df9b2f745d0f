package dhcpinform

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

var (
	testHW  = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	testReq = Request{XID: 0x12345678, HardwareAddr: testHW, ClientAddr: netip.MustParseAddr("192.168.1.23")}
)

// TestMarshalGolden compares a DHCPINFORM with bytes written by hand from
// RFC 2131 (section 2, figure 1; section 4.4.3 for what an INFORM sets)
// and RFC 2132 (options 53, 55, 255).
func TestMarshalGolden(t *testing.T) {
	want := []byte{
		1, 1, 6, 0, // op BOOTREQUEST, htype Ethernet, hlen 6, hops 0
		0x12, 0x34, 0x56, 0x78, // xid
		0, 0, 0, 0, // secs 0, flags 0 (the answer comes by unicast)
		192, 168, 1, 23, // ciaddr: the address we have
		0, 0, 0, 0, // yiaddr
		0, 0, 0, 0, // siaddr
		0, 0, 0, 0, // giaddr
		0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // chaddr, 16 bytes
	}
	want = append(want, make([]byte, 64+128)...) // sname, file
	want = append(want,
		99, 130, 83, 99, // magic cookie
		53, 1, 8, // DHCP message type: DHCPINFORM
		55, 1, 42, // parameter request list: NTP servers
		255, // end
	)
	want = append(want, make([]byte, 300-len(want))...) // BOOTP's minimum of 300 bytes
	got, err := testReq.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("Marshal =\n% x\nwant\n% x", got, want)
	}
}

func TestMarshalRefuses(t *testing.T) {
	for _, r := range []Request{
		{HardwareAddr: testHW[:4], ClientAddr: testReq.ClientAddr},
		{HardwareAddr: testHW, ClientAddr: netip.MustParseAddr("fd00::1")},
		{HardwareAddr: testHW},
	} {
		if _, err := r.Marshal(); err == nil {
			t.Errorf("Marshal(%+v) succeeded, want an error", r)
		}
	}
}

// ack builds a BOOTREPLY to testReq by hand; opts are the bytes after the
// magic cookie, end option included or not as the case needs.
func ack(opts ...byte) []byte {
	b := []byte{
		2, 1, 6, 0, // op BOOTREPLY, Ethernet
		0x12, 0x34, 0x56, 0x78, // xid
		0, 0, 0, 0,
		192, 168, 1, 23, // ciaddr
		0, 0, 0, 0,
		192, 168, 1, 1, // siaddr
		0, 0, 0, 0,
		0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	}
	b = append(b, make([]byte, 64+128)...)
	b = append(b, 99, 130, 83, 99)
	return append(b, opts...)
}

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

func TestParseReply(t *testing.T) {
	for _, c := range []struct {
		name string
		msg  []byte
		want Reply
	}{
		{"two servers and a server id", ack(53, 1, 5, 54, 4, 192, 168, 1, 1, 42, 8, 192, 168, 1, 1, 10, 0, 0, 5, 255),
			Reply{NTPServers: addrs("192.168.1.1", "10.0.0.5"), ServerID: netip.MustParseAddr("192.168.1.1")}},
		{"no option 42", ack(53, 1, 5, 3, 4, 192, 168, 1, 1, 255), Reply{}},
		{"pads and padding after the end", ack(0, 0, 53, 1, 5, 0, 42, 4, 192, 0, 2, 1, 255, 0, 0, 0), Reply{NTPServers: addrs("192.0.2.1")}},
		{"option 42 split in two (RFC 3396)", ack(42, 4, 192, 0, 2, 1, 53, 1, 5, 42, 4, 192, 0, 2, 2, 255), Reply{NTPServers: addrs("192.0.2.1", "192.0.2.2")}},
		{"eight servers", ack(append(append([]byte{53, 1, 5, 42, 32}, bytes.Repeat([]byte{192, 0, 2, 9}, 8)...), 255)...),
			Reply{NTPServers: slices.Repeat(addrs("192.0.2.9"), 8)}},
		{"link-local server", ack(53, 1, 5, 42, 4, 169, 254, 1, 1, 255), Reply{NTPServers: addrs("169.254.1.1")}},
	} {
		got, err := ParseReply(c.msg, testReq)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if !slices.Equal(got.NTPServers, c.want.NTPServers) || got.ServerID != c.want.ServerID {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
}

// TestParseReplyOverload: option 52 moves options into the file field,
// then the sname field (RFC 2131, section 4.1).
func TestParseReplyOverload(t *testing.T) {
	msg := ack(53, 1, 5, 52, 1, 3, 255)
	copy(msg[offFile:], []byte{42, 4, 192, 0, 2, 1, 255})
	copy(msg[offSname:], []byte{42, 4, 192, 0, 2, 2, 255})
	r, err := ParseReply(msg, testReq)
	if err != nil || !slices.Equal(r.NTPServers, addrs("192.0.2.1", "192.0.2.2")) {
		t.Errorf("overloaded file and sname = %+v, %v; want 192.0.2.1 from file, then 192.0.2.2 from sname", r, err)
	}
	// Without option 52 the file field is not options.
	msg = ack(53, 1, 5, 255)
	copy(msg[offFile:], []byte{42, 4, 192, 0, 2, 1, 255})
	if r, err := ParseReply(msg, testReq); err != nil || len(r.NTPServers) != 0 {
		t.Errorf("file field without overload = %+v, %v; want no servers", r, err)
	}
}

// TestParseReplyRefuses: what a broken or hostile peer can send, each
// refused with an error naming the byte, option or address.
func TestParseReplyRefuses(t *testing.T) {
	wrongXID := ack(53, 1, 5, 42, 4, 192, 0, 2, 1, 255)
	wrongXID[7] = 0x79
	wrongHW := ack(53, 1, 5, 42, 4, 192, 0, 2, 1, 255)
	wrongHW[offChaddr+5] = 0x57
	badCookie := ack(53, 1, 5, 255)
	badCookie[offCookie] = 98
	request := ack(53, 1, 5, 255)
	request[offOp] = opRequest
	notEthernet := ack(53, 1, 5, 255)
	notEthernet[offHlen] = 16
	overloadFileOverflow := ack(53, 1, 5, 52, 1, 1, 255)
	copy(overloadFileOverflow[offFile+fileLen-3:], []byte{42, 8, 1})
	overloadInFile := ack(53, 1, 5, 52, 1, 1, 255)
	copy(overloadInFile[offFile:], []byte{52, 1, 2, 255})
	for _, c := range []struct {
		name    string
		msg     []byte
		want    string
		notOurs bool
	}{
		{"wrong xid", wrongXID, "xid 0x12345679 at byte 4, want 0x12345678", true},
		{"wrong chaddr", wrongHW, "chaddr 52:54:00:12:34:57 at byte 28, want 52:54:00:12:34:56", true},
		{"truncated header", ack()[:100], "message of 100 bytes, shorter than the 240", false},
		{"a request, not a reply", request, "op 1 at byte 0, want 2 (BOOTREPLY)", false},
		{"not Ethernet", notEthernet, "hardware type 1, length 16 at byte 1", false},
		{"bad magic cookie", badCookie, "magic cookie 0x62825363 at byte 236, want 0x63825363", false},
		{"option past the end", ack(53, 1, 5, 42, 8, 192, 0, 2, 1), "option 42 at byte 243: length 8 runs past the end of the options (byte 249)", false},
		{"option without its length", ack(53, 1, 5, 42), "option 42 at byte 243: no length byte before the end of the options", false},
		{"no end option", ack(53, 1, 5, 42, 4, 192, 0, 2, 1), "the options end at byte 249 without option 255 (end)", false},
		{"overflow in the overloaded file field", overloadFileOverflow, "option 42 at byte 233: length 8 runs past the end of the file field (byte 236)", false},
		{"overload inside the file field", overloadInFile, "option 52 (overload) at byte 108: only allowed in the options, not the file field", false},
		{"bad overload value", ack(53, 1, 5, 52, 1, 4, 255), "option 52 (overload) is 04, want one byte 1, 2 or 3", false},
		{"no message type", ack(42, 4, 192, 0, 2, 1, 255), "option 53 (message type) has 0 bytes, want 1", false},
		{"DHCPNAK", ack(53, 1, 6, 255), "DHCPNAK", false},
		{"DHCPOFFER", ack(53, 1, 2, 255), "message type 2, want 5 (DHCPACK)", false},
		{"empty option 42", ack(53, 1, 5, 42, 0, 255), "option 42 (NTP servers) has 0 bytes, want a multiple of 4", false},
		{"option 42 not whole addresses", ack(53, 1, 5, 42, 5, 192, 0, 2, 1, 7, 255), "option 42 (NTP servers) has 5 bytes, want a multiple of 4", false},
		{"nine servers", ack(append(append([]byte{53, 1, 5, 42, 36}, bytes.Repeat([]byte{192, 0, 2, 9}, 9)...), 255)...), "option 42 (NTP servers) lists 9 servers, at most 8", false},
		{"nine servers in two parts", ack(append(append(append(append([]byte{53, 1, 5, 42, 32}, bytes.Repeat([]byte{192, 0, 2, 9}, 8)...), 42, 4), 192, 0, 2, 9), 255)...), "lists 9 servers, at most 8", false},
		{"0.0.0.0", ack(53, 1, 5, 42, 8, 192, 0, 2, 1, 0, 0, 0, 0, 255), "option 42 (NTP servers) address 1: 0.0.0.0 is in 0.0.0.0/8", false},
		{"limited broadcast", ack(53, 1, 5, 42, 4, 255, 255, 255, 255, 255), "255.255.255.255 is a broadcast or reserved address", false},
		{"multicast", ack(53, 1, 5, 42, 4, 224, 0, 1, 1, 255), "224.0.1.1 is a multicast address", false},
		{"loopback", ack(53, 1, 5, 42, 4, 127, 0, 0, 1, 255), "127.0.0.1 is a loopback address", false},
	} {
		r, err := ParseReply(c.msg, testReq)
		if err == nil {
			t.Errorf("%s: accepted %+v, want %q", c.name, r, c.want)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
		if errors.Is(err, errNotOurs) != c.notOurs {
			t.Errorf("%s: %v: not ours = %v, want %v", c.name, err, !c.notOurs, c.notOurs)
		}
	}
}
