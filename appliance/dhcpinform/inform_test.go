package dhcpinform

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeServer is a DHCP server on loopback: it records each DHCPINFORM
// and sends back what answer returns for it, from its own port, or from
// a second socket on another port when fromOtherPort is set.
type fakeServer struct {
	conn, other *net.UDPConn
	answer      func(req []byte) (msgs [][]byte, fromOtherPort bool)

	mu       sync.Mutex
	requests [][]byte
}

func startFakeServer(t *testing.T, answer func(req []byte) ([][]byte, bool)) *fakeServer {
	t.Helper()
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	s := &fakeServer{conn: listen(), other: listen(), answer: answer}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := s.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			req := slices.Clone(buf[:n])
			s.mu.Lock()
			s.requests = append(s.requests, req)
			s.mu.Unlock()
			msgs, other := s.answer(req)
			for _, m := range msgs {
				c := s.conn
				if other {
					c = s.other
				}
				_, _ = c.WriteToUDPAddrPort(m, from)
			}
		}
	}()
	return s
}

func (s *fakeServer) addr() netip.AddrPort { return s.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (s *fakeServer) received() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// reply answers req as a server would: a BOOTREPLY with req's xid and
// chaddr and the given options after the magic cookie.
func reply(req []byte, opts ...byte) []byte {
	b := make([]byte, offOpts)
	b[offOp], b[offHtype], b[offHlen] = opReply, htypeEthernet, hlenEthernet
	copy(b[offXID:offXID+4], req[offXID:])
	copy(b[offCiaddr:offCiaddr+4], req[offCiaddr:])
	copy(b[offChaddr:offChaddr+chaddrLen], req[offChaddr:])
	binary.BigEndian.PutUint32(b[offCookie:], magicCookie)
	return append(b, opts...)
}

var loIfc = Interface{Name: "lo", HardwareAddr: testHW, Addr: netip.MustParseAddr("192.0.2.7")}

func testClient(s *fakeServer) Client {
	return Client{Server: s.addr(), Local: netip.MustParseAddrPort("127.0.0.1:0"), Tries: 3, FirstWait: 5 * time.Second}
}

// TestInform: a DHCPINFORM for the interface's address and hardware
// address reaches the server, and the NTP servers of its DHCPACK come
// back.
func TestInform(t *testing.T) {
	s := startFakeServer(t, func(req []byte) ([][]byte, bool) {
		return [][]byte{reply(req, 53, 1, 5, 54, 4, 192, 0, 2, 1, 42, 8, 192, 0, 2, 123, 198, 51, 100, 7, 255)}, false
	})
	r, err := testClient(s).Inform(t.Context(), loIfc)
	if err != nil {
		t.Fatal(err)
	}
	if want := addrs("192.0.2.123", "198.51.100.7"); !slices.Equal(r.NTPServers, want) || r.ServerID != netip.MustParseAddr("192.0.2.1") {
		t.Errorf("Inform = %+v, want servers %v from 192.0.2.1", r, want)
	}
	reqs := s.received()
	if len(reqs) != 1 {
		t.Fatalf("the server got %d requests, want 1", len(reqs))
	}
	req := reqs[0]
	if len(req) != minRequestBytes || req[offOp] != opRequest || string(req[offCiaddr:offCiaddr+4]) != "\xc0\x00\x02\x07" ||
		string(req[offChaddr:offChaddr+6]) != string(testHW) || string(req[offOpts:offOpts+7]) != "\x35\x01\x08\x37\x01\x2a\xff" {
		t.Errorf("request % x, want a DHCPINFORM for 192.0.2.7 from %s asking for option 42", req, testHW)
	}
}

// TestInformSkipsOthersAndRefusesHostile: answers to other transactions,
// from another port, and malformed ones before the real answer are
// skipped or refused (and logged), and the real answer is still taken.
func TestInformSkipsOthersAndRefusesHostile(t *testing.T) {
	s := startFakeServer(t, func(req []byte) ([][]byte, bool) {
		otherXID := reply(req, 53, 1, 5, 42, 4, 203, 0, 113, 66, 255)
		otherXID[offXID] ^= 0xff
		otherHW := reply(req, 53, 1, 5, 42, 4, 203, 0, 113, 66, 255)
		otherHW[offChaddr] ^= 0xff
		tooMany := reply(req, 53, 1, 5, 42, 36)
		for i := 0; i < 9; i++ {
			tooMany = append(tooMany, 203, 0, 113, byte(i))
		}
		tooMany = append(tooMany, 255)
		return [][]byte{
			otherXID, otherHW,
			reply(req, 53, 1, 5, 42, 16, 203, 0, 113, 66, 255), // option past the end
			reply(req, 53, 1, 5, 42, 4, 127, 0, 0, 1, 255),     // loopback
			tooMany,
			[]byte("garbage"),
			reply(req, 53, 1, 5, 42, 4, 192, 0, 2, 123, 255),
		}, false
	})
	var logged []string
	c := testClient(s)
	c.Logf = func(format string, args ...any) { logged = append(logged, format) }
	r, err := c.Inform(t.Context(), loIfc)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.NTPServers, addrs("192.0.2.123")) {
		t.Errorf("Inform = %+v, want 192.0.2.123 from the last answer", r)
	}
	if len(logged) != maxLoggedRefusals {
		t.Errorf("logged %d refusals, want %d (the limit)", len(logged), maxLoggedRefusals)
	}
}

// TestInformNoAnswer: a server that never answers gets Tries requests,
// all with the same xid, and the error says so; refused answers are
// named in it.
func TestInformNoAnswer(t *testing.T) {
	s := startFakeServer(t, func(req []byte) ([][]byte, bool) {
		return [][]byte{reply(req, 53, 1, 5, 42, 4, 224, 0, 1, 1, 255)}, false // multicast: refused
	})
	c := testClient(s)
	c.FirstWait = 20 * time.Millisecond
	_, err := c.Inform(t.Context(), loIfc)
	if err == nil || !strings.Contains(err.Error(), "dhcpinform lo: no DHCPACK to 3 DHCPINFORMs for 192.0.2.7") ||
		!strings.Contains(err.Error(), "refused 3 answers, the last from "+s.addr().String()+": option 42 (NTP servers) address 0: 224.0.1.1 is a multicast address") {
		t.Errorf("Inform = %v, want no DHCPACK after 3 tries, naming the refused answers", err)
	}
	reqs := s.received()
	if len(reqs) != 3 {
		t.Fatalf("the server got %d requests, want 3", len(reqs))
	}
	for _, r := range reqs[1:] {
		if string(r[offXID:offXID+4]) != string(reqs[0][offXID:offXID+4]) {
			t.Errorf("xids % x and % x: a retry must keep the xid", reqs[0][offXID:offXID+4], r[offXID:offXID+4])
		}
	}
}

// TestInformWrongPort: a valid-looking answer from a port other than the
// server's is not taken.
func TestInformWrongPort(t *testing.T) {
	s := startFakeServer(t, func(req []byte) ([][]byte, bool) {
		return [][]byte{reply(req, 53, 1, 5, 42, 4, 203, 0, 113, 66, 255)}, true
	})
	c := testClient(s)
	c.Tries, c.FirstWait = 2, 20*time.Millisecond
	r, err := c.Inform(t.Context(), loIfc)
	if err == nil || !strings.Contains(err.Error(), "skipped 2 packets for other requests") {
		t.Errorf("Inform = %+v, %v; want no answer, 2 packets skipped", r, err)
	}
}

// TestInformCancel: a cancelled context ends the wait at once.
func TestInformCancel(t *testing.T) {
	s := startFakeServer(t, func([]byte) ([][]byte, bool) { return nil, false })
	ctx, cancel := context.WithCancel(t.Context())
	c := testClient(s)
	c.FirstWait = time.Hour
	done := make(chan error, 1)
	go func() {
		_, err := c.Inform(ctx, loIfc)
		done <- err
	}()
	for len(s.received()) == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("Inform after cancel = %v, want context canceled", err)
	}
}

// TestInterfaces: loopback is never a candidate, and every candidate has
// an Ethernet address and a global IPv4 address.
func TestInterfaces(t *testing.T) {
	ifs, err := Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if i.Name == "lo" || len(i.HardwareAddr) != 6 || !i.Addr.Is4() || !i.Addr.IsGlobalUnicast() {
			t.Errorf("candidate %+v, want no loopback, an Ethernet address and a global IPv4", i)
		}
	}
}
