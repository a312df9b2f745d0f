package clock

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/ingotdev/ingot/appliance/dhcpinform"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/spec"
)

var defaulted = spec.Clock{NTP: spec.DefaultNTPServers, Defaulted: true}

// fakeDHCP answers Inform per interface name: servers, or an error.
type fakeDHCP struct {
	mu      sync.Mutex
	ifs     []dhcpinform.Interface
	servers map[string][]netip.Addr
	errs    map[string]error
	asked   []string
}

func (f *fakeDHCP) inform(_ context.Context, ifc dhcpinform.Interface) (dhcpinform.Reply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, ifc.Name)
	if err := f.errs[ifc.Name]; err != nil {
		return dhcpinform.Reply{}, err
	}
	return dhcpinform.Reply{NTPServers: f.servers[ifc.Name]}, nil
}

func (f *fakeDHCP) interfaces() ([]dhcpinform.Interface, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ifs), nil
}

// recordingQuery fails every query and records the servers asked.
type recordingQuery struct {
	mu    sync.Mutex
	asked []string
}

func (q *recordingQuery) query(_ context.Context, server string) (Sample, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.asked = append(q.asked, server)
	return Sample{}, errors.New("ntp " + server + ": no answer")
}

func (q *recordingQuery) take() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	a := q.asked
	q.asked = nil
	return a
}

func withPort(servers ...string) []string {
	var out []string
	for _, s := range servers {
		a, _ := spec.NTPServerAddr(s)
		out = append(out, a)
	}
	return out
}

func checkServers(t *testing.T, c *Clock, step string, servers []string, source string, fallback []string) {
	t.Helper()
	st := c.Status()
	if !slices.Equal(st.Servers, servers) || st.Source != source || !slices.Equal(st.Fallback, fallback) {
		t.Errorf("%s: servers %v (%s), fallback %v; want %v (%s), fallback %v", step, st.Servers, st.Source, st.Fallback, servers, source, fallback)
	}
}

// TestDHCPServersComeFirst: with ingot's default servers, the NTP servers
// a DHCP server names are asked first and the default ones after them;
// an answer without option 42 or an interface without its address any
// more goes back to the default, and no answer keeps what was known.
func TestDHCPServersComeFirst(t *testing.T) {
	eth0 := dhcpinform.Interface{Name: "eth0", Addr: netip.MustParseAddr("192.168.1.23")}
	wlan0 := dhcpinform.Interface{Name: "wlan0", Addr: netip.MustParseAddr("10.0.0.8")}
	f := &fakeDHCP{ifs: []dhcpinform.Interface{wlan0, eth0}, errs: map[string]error{},
		servers: map[string][]netip.Addr{
			"eth0":  {netip.MustParseAddr("192.168.1.1"), netip.MustParseAddr("192.168.1.2")},
			"wlan0": {netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("192.168.1.1")},
		}}
	var q recordingQuery
	c := New(defaulted, t.Logf, WithQuery(q.query), WithSavePath(""), WithDHCP(f.inform, f.interfaces))
	ctx := t.Context()
	checkServers(t, c, "before DHCP", spec.DefaultNTPServers, mgmt.ClockSourceDefault, nil)

	c.informAll(ctx)
	// By interface name, each server once.
	fromDHCP := []string{"192.168.1.1", "192.168.1.2", "10.0.0.1"}
	checkServers(t, c, "after DHCP", fromDHCP, mgmt.ClockSourceDHCP, spec.DefaultNTPServers)
	_ = c.sync(ctx, c.Status().Now)
	if got, want := q.take(), withPort(append(fromDHCP, spec.DefaultNTPServers...)...); !slices.Equal(got, want) {
		t.Errorf("servers asked %v, want %v: DHCP's first, then the default", got, want)
	}

	// No answer on eth0: its servers stay; wlan0 loses its address.
	f.errs["eth0"] = errors.New("dhcpinform eth0: no DHCPACK")
	f.ifs = []dhcpinform.Interface{eth0}
	c.informAll(ctx)
	checkServers(t, c, "eth0 silent, wlan0 gone", []string{"192.168.1.1", "192.168.1.2"}, mgmt.ClockSourceDHCP, spec.DefaultNTPServers)

	// eth0's server answers without option 42.
	f.errs["eth0"] = nil
	f.servers["eth0"] = nil
	c.informAll(ctx)
	checkServers(t, c, "no option 42", spec.DefaultNTPServers, mgmt.ClockSourceDefault, nil)
	_ = c.sync(ctx, c.Status().Now)
	if got, want := q.take(), withPort(spec.DefaultNTPServers...); !slices.Equal(got, want) {
		t.Errorf("servers asked %v, want the default %v", got, want)
	}
}

// TestDHCPCappedAtMax: several interfaces together give at most
// spec.MaxNTPServers servers.
func TestDHCPCappedAtMax(t *testing.T) {
	f := &fakeDHCP{servers: map[string][]netip.Addr{}}
	for base, name := range map[byte]string{0: "eth0", 100: "eth1"} {
		f.ifs = append(f.ifs, dhcpinform.Interface{Name: name})
		for i := range byte(spec.MaxNTPServers) {
			f.servers[name] = append(f.servers[name], netip.AddrFrom4([4]byte{192, 0, 2, base + i}))
		}
	}
	c := New(defaulted, t.Logf, WithSavePath(""), WithDHCP(f.inform, f.interfaces))
	c.informAll(t.Context())
	if st := c.Status(); len(st.Servers) != spec.MaxNTPServers || st.Servers[0] != f.servers["eth0"][0].String() {
		t.Errorf("servers %v, want eth0's %d", st.Servers, spec.MaxNTPServers)
	}
}

// TestConfiguredServersWin: servers named in ingot.yaml (or none) are
// never replaced by a DHCP server's.
func TestConfiguredServersWin(t *testing.T) {
	f := &fakeDHCP{ifs: []dhcpinform.Interface{{Name: "eth0"}},
		servers: map[string][]netip.Addr{"eth0": {netip.MustParseAddr("192.168.1.1")}}}
	for _, cfg := range []spec.Clock{{NTP: []string{"time.example.org"}}, {NTP: []string{"0.pool.ntp.org"}}, {}} {
		var q recordingQuery
		c := New(cfg, t.Logf, WithQuery(q.query), WithSavePath(""), WithDHCP(f.inform, f.interfaces))
		c.informAll(t.Context())
		checkServers(t, c, fmt.Sprintf("ingot.yaml %v", cfg.NTP), cfg.NTP, mgmt.ClockSourceConfig, nil)
		_ = c.sync(t.Context(), c.Status().Now)
		if got, want := q.take(), withPort(cfg.NTP...); !slices.Equal(got, want) {
			t.Errorf("%v: servers asked %v, want %v", cfg.NTP, got, want)
		}
	}
}

// startDHCPServer is a DHCP server on loopback that answers every
// DHCPINFORM with a DHCPACK naming ntp as NTP server, built by hand from
// RFC 2131 and 2132; it counts the requests on asked.
func startDHCPServer(t *testing.T, ntp netip.Addr, asked chan<- struct{}) netip.AddrPort {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if n < 243 || buf[0] != 1 || buf[240] != 53 || buf[242] != 8 {
				continue // not a DHCPINFORM
			}
			ack := make([]byte, 240)
			ack[0], ack[1], ack[2] = 2, 1, 6 // BOOTREPLY, Ethernet
			copy(ack[4:8], buf[4:8])         // xid
			copy(ack[12:16], buf[12:16])     // ciaddr
			copy(ack[28:44], buf[28:44])     // chaddr
			binary.BigEndian.PutUint32(ack[236:], 0x63825363)
			a := ntp.As4()
			ack = append(ack, 53, 1, 5, 42, 4, a[0], a[1], a[2], a[3], 255)
			_, _ = conn.WriteToUDPAddrPort(ack, from)
			select {
			case asked <- struct{}{}:
			default:
			}
		}
	}()
	return conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// TestRunAsksDHCP: Run sends a DHCPINFORM (over UDP, to a server on
// loopback) at start and again after AddressesChanged, and then asks the
// server's NTP server before the default ones.
func TestRunAsksDHCP(t *testing.T) {
	asked := make(chan struct{}, 1)
	server := startDHCPServer(t, netip.MustParseAddr("192.0.2.123"), asked)
	client := dhcpinform.Client{Server: server, Local: netip.MustParseAddrPort("127.0.0.1:0"), Logf: t.Logf}
	lo := func() ([]dhcpinform.Interface, error) {
		return []dhcpinform.Interface{{Name: "lo", HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 1}, Addr: netip.MustParseAddr("192.0.2.7")}}, nil
	}
	queried := make(chan string, 64)
	query := func(_ context.Context, s string) (Sample, error) {
		select {
		case queried <- s:
		default:
		}
		return Sample{}, errors.New("ntp " + s + ": no answer")
	}
	c := New(defaulted, t.Logf, WithQuery(query), WithSavePath(""), WithDHCP(client.Inform, lo))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	<-asked
	for s := range queried {
		if s == "192.0.2.123:123" {
			break
		}
	}
	checkServers(t, c, "after DHCP", []string{"192.0.2.123"}, mgmt.ClockSourceDHCP, spec.DefaultNTPServers)
	c.AddressesChanged()
	<-asked // asked again
}
