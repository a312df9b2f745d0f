package netconf

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ingotdev/ingot/packer/format/spec"
)

// The golden messages are little-endian, the byte order of every ingot
// target (amd64, arm64).
func TestMessages(t *testing.T) {
	must := func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name string
		got  []byte
		want string
	}{
		{"link up", linkUpMessage(7, 2),
			"20000000" + "1000" + "0500" + "07000000" + "00000000" +
				"00000000" + "02000000" + "01000000" + "01000000"},
		{"ipv4 address", must(addressMessage(1, 2, netip.MustParsePrefix("10.0.2.15/24"))),
			"28000000" + "1400" + "0505" + "01000000" + "00000000" +
				"02180000" + "02000000" +
				"08000200" + "0a00020f" +
				"08000100" + "0a00020f"},
		{"ipv6 address", must(addressMessage(1, 3, netip.MustParsePrefix("fd00::7/64"))),
			"40000000" + "1400" + "0505" + "01000000" + "00000000" +
				"0a400200" + "03000000" +
				"14000200" + "fd000000000000000000000000000007" +
				"14000100" + "fd000000000000000000000000000007"},
		{"ipv4 default route", must(defaultRouteMessage(3, 2, netip.MustParseAddr("10.0.2.2"), false)),
			"2c000000" + "1800" + "0505" + "03000000" + "00000000" +
				"02000000" + "fe030001" + "00000000" +
				"08000500" + "0a000202" +
				"08000400" + "02000000"},
		{"on-link route", must(defaultRouteMessage(3, 2, netip.MustParseAddr("10.0.2.2"), true)),
			"2c000000" + "1800" + "0505" + "03000000" + "00000000" +
				"02000000" + "fe030001" + "04000000" +
				"08000500" + "0a000202" +
				"08000400" + "02000000"},
	} {
		if got := hex.EncodeToString(tc.got); got != tc.want {
			t.Errorf("%s = %s, want %s", tc.name, got, tc.want)
		}
	}
	if _, err := addressMessage(1, 1, netip.Prefix{}); err == nil {
		t.Errorf("addressMessage(invalid prefix) = nil error")
	}
}

func TestParseAck(t *testing.T) {
	ack := func(seq uint32, code int32) string {
		h := hex.EncodeToString([]byte{0x24, 0, 0, 0, 2, 0, 0, 0, byte(seq), 0, 0, 0, 0, 0, 0, 0})
		c := []byte{byte(code), byte(code >> 8), byte(code >> 16), byte(code >> 24)}
		return h + hex.EncodeToString(c) + strings.Repeat("00", 16)
	}
	for _, tc := range []struct {
		name     string
		msg      string
		done     bool
		wantErrn unix.Errno
	}{
		{"ok", ack(5, 0), true, 0},
		{"eexist", ack(5, -int32(unix.EEXIST)), true, unix.EEXIST},
		{"other seq", ack(4, 0), false, 0},
		{"other then ours", ack(4, 0) + ack(5, -int32(unix.ENODEV)), true, unix.ENODEV},
	} {
		b, _ := hex.DecodeString(tc.msg)
		done, err := parseAck(b, 5)
		var errno unix.Errno
		errors.As(err, &errno)
		if done != tc.done || errno != tc.wantErrn || (tc.wantErrn == 0) != (err == nil) {
			t.Errorf("parseAck(%s) = %v, %v, want %v, %v", tc.name, done, err, tc.done, tc.wantErrn)
		}
	}
	if done, err := parseAck([]byte{0xff, 0, 0, 0, 2, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0}, 5); !done || err == nil {
		t.Errorf("parseAck(truncated) = %v, %v, want done with an error", done, err)
	}
}

// TestConfigureInNetns configures loopback and a veth NIC in a fresh
// network namespace (needs root, as CI has, and the veth driver) and reads
// the result back from the kernel.
func TestConfigureInNetns(t *testing.T) {
	errc := make(chan error, 1)
	go func() {
		// The thread stays locked so it dies with the goroutine instead of
		// returning to the scheduler in the new namespace.
		runtime.LockOSThread()
		errc <- configureInNetns()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func configureInNetns() error {
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return err
	}
	c, err := Dial()
	if err != nil {
		return err
	}
	defer c.Close()
	if err := LoopbackUp(c); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	n := spec.Network{Interface: "lo", Address: netip.MustParsePrefix("10.9.8.7/24"), Gateway: netip.MustParseAddr("10.9.8.1")}
	name, err := Configure(ctx, c, n)
	if err != nil || name != "lo" {
		return errors.Join(errors.New("Configure(lo) failed, name "+name), err)
	}
	// Again: replacing must be idempotent.
	if _, err := Configure(ctx, c, n); err != nil {
		return err
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return err
	}
	if lo.Flags&net.FlagUp == 0 {
		return errors.New("lo is not up")
	}
	addrs, _ := lo.Addrs()
	found := false
	for _, a := range addrs {
		found = found || a.String() == "10.9.8.7/24"
	}
	if !found {
		return errors.New("lo addresses = " + formatAddrs(addrs) + ", want 10.9.8.7/24")
	}
	routes, err := os.ReadFile("/proc/thread-self/net/route")
	if err != nil {
		return err
	}
	// Default route: destination 00000000, gateway 10.9.8.1 little-endian.
	if !strings.Contains(string(routes), "lo\t00000000\t0108090A") {
		return errors.New("no default route via 10.9.8.1 in:\n" + string(routes))
	}
	// A missing interface times out with a clear error.
	short, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if _, err := Configure(short, c, spec.Network{Address: netip.MustParsePrefix("10.0.0.2/8")}); err == nil ||
		!strings.Contains(err.Error(), "no interface besides loopback") {
		return errors.Join(errors.New("Configure(no NIC) should fail naming the missing interface"), err)
	}
	// A veth pair gives a real NIC: Configure without an interface name
	// must pick the first one that is not loopback, and IPv6 works there.
	if err := c.request(vethMessage(c.next(), "v0", "v1")); err != nil {
		return fmt.Errorf("creating veth pair: %w", err)
	}
	first, err := findInterface("")
	if err != nil {
		return err
	}
	n6 := spec.Network{Address: netip.MustParsePrefix("fd00::7/64"), Gateway: netip.MustParseAddr("fd00::1")}
	name, err = Configure(ctx, c, n6)
	if err != nil {
		return err
	}
	if name != first.Name {
		return fmt.Errorf("Configure() picked %s, want the lowest-index NIC %s", name, first.Name)
	}
	routes6, err := os.ReadFile("/proc/thread-self/net/ipv6_route")
	if err != nil {
		return err
	}
	if !strings.Contains(string(routes6), "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001") {
		return errors.New("no IPv6 default route via fd00::1 in:\n" + string(routes6))
	}
	return nil
}

// vethMessage creates a veth pair: RTM_NEWLINK with IFLA_LINKINFO
// {IFLA_INFO_KIND "veth", IFLA_INFO_DATA {VETH_INFO_PEER {ifinfomsg,
// IFLA_IFNAME peer}}}.
func vethMessage(seq uint32, name, peer string) []byte {
	const vethInfoPeer = 1
	nest := func(typ uint16, parts ...[]byte) []byte {
		m := &message{}
		for _, p := range parts {
			m.b = append(m.b, p...)
		}
		return attrBytes(typ, m.b)
	}
	peerBody := append(make([]byte, unix.SizeofIfInfomsg), attrBytes(unix.IFLA_IFNAME, append([]byte(peer), 0))...)
	linkinfo := nest(unix.IFLA_LINKINFO,
		attrBytes(unix.IFLA_INFO_KIND, []byte("veth\x00")),
		nest(unix.IFLA_INFO_DATA, attrBytes(vethInfoPeer, peerBody)))
	m := newMessage(unix.RTM_NEWLINK, unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_EXCL, seq,
		make([]byte, unix.SizeofIfInfomsg))
	m.attr(unix.IFLA_IFNAME, append([]byte(name), 0))
	m.b = append(m.b, linkinfo...)
	return m.bytes()
}

func attrBytes(typ uint16, data []byte) []byte {
	m := &message{}
	m.attr(typ, data)
	return m.b
}

func formatAddrs(addrs []net.Addr) string {
	var s []string
	for _, a := range addrs {
		s = append(s, a.String())
	}
	return strings.Join(s, " ")
}

func TestFiles(t *testing.T) {
	got := string(ResolvConf([]netip.Addr{netip.MustParseAddr("10.0.2.3"), netip.MustParseAddr("fd00::53")}))
	if want := "# written by ingot-init\nnameserver 10.0.2.3\nnameserver fd00::53\n"; got != want {
		t.Errorf("ResolvConf() = %q, want %q", got, want)
	}
	if got := string(Hosts("hello")); !strings.Contains(got, "127.0.0.1\tlocalhost\n") || !strings.Contains(got, "127.0.1.1\thello\n") {
		t.Errorf("Hosts(hello) = %q", got)
	}
	p := t.TempDir() + "/resolv.conf"
	if err := WriteFile(p, []byte("x\n")); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("y\n")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	st, _ := os.Stat(p)
	if err != nil || string(b) != "y\n" || st.Mode().Perm() != 0o644 {
		t.Errorf("WriteFile then read = %q, %v, mode %v; want \"y\\n\", 0644", b, err, st.Mode())
	}
}

func TestWriteInPlace(t *testing.T) {
	p := t.TempDir() + "/resolv.conf"
	ino := func() uint64 {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	if err := WriteInPlace(p, []byte("nameserver 10.0.0.1\nnameserver 10.0.0.2\n")); err != nil {
		t.Fatal(err)
	}
	first := ino()
	for _, want := range []string{"nameserver 10.9.9.9\n", "", "nameserver 10.0.0.3\nsearch example\n"} {
		if err := WriteInPlace(p, []byte(want)); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil || string(b) != want {
			t.Errorf("after WriteInPlace(%q): %q, %v", want, b, err)
		}
		if got := ino(); got != first {
			t.Errorf("WriteInPlace(%q) changed the inode %d to %d; bind mounts would go stale", want, first, got)
		}
	}
	if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, %v; want 0644", st.Mode(), err)
	}
}
