package cmdline

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ingotdev/ingot/packer/format/gpt"
	"github.com/ingotdev/ingot/packer/format/spec"
)

func TestFields(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"  a b\n", []string{"a", "b"}},
		{`console=ttyS0 x="a b" "y=c d"  z`, []string{"console=ttyS0", "x=a b", "y=c d", "z"}},
		{`e=""`, []string{"e="}},
	} {
		if got := Fields(tc.in); !cmp.Equal(got, tc.want) {
			t.Errorf("Fields(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

const (
	rootGUID = "0fc63daf-8483-4772-8e79-3d69d8477de4"
	permGUID = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
)

func TestParse(t *testing.T) {
	in := "console=ttyS0 ingot.boot=PARTUUID=" + permGUID + " ingot.perm=PARTUUID=" + strings.ToUpper(permGUID) +
		" quiet ingot.root=PARTUUID=" + rootGUID + " ingot.slot=b ingot.trial=1 ingot.ip=10.0.2.15/24,10.0.2.2,10.0.2.3\n"
	got, err := Parse(in)
	if err != nil {
		t.Fatalf("Parse() error = %v", err)
	}
	want := Params{
		Root: mustGUID(t, rootGUID), Boot: mustGUID(t, permGUID), Perm: mustGUID(t, permGUID),
		Slot: "b", Trial: true,
		Network: spec.Network{Address: netip.MustParsePrefix("10.0.2.15/24"), Gateway: netip.MustParseAddr("10.0.2.2"),
			DNS: []netip.Addr{netip.MustParseAddr("10.0.2.3")}},
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(x, y netip.Addr) bool { return x == y }),
		cmp.Comparer(func(x, y netip.Prefix) bool { return x == y })); diff != "" {
		t.Errorf("Parse() mismatch (-want +got):\n%s", diff)
	}
	if got.Root.String() != rootGUID {
		t.Errorf("Root.String() = %s, want %s", got.Root, rootGUID)
	}
}

func TestParseIPVariants(t *testing.T) {
	for _, tc := range []struct {
		in      string
		gateway string
		dns     int
	}{
		{"ingot.ip=10.0.0.2/8", "", 0},
		{"ingot.ip=10.0.0.2/8,,1.1.1.1,8.8.8.8", "", 2},
		{"ingot.ip=fd00::2/64,fd00::1,fd00::53", "fd00::1", 1},
	} {
		p, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q) error = %v", tc.in, err)
			continue
		}
		if gw := p.Network.Gateway; (tc.gateway == "" && gw.IsValid()) || (tc.gateway != "" && gw.String() != tc.gateway) {
			t.Errorf("Parse(%q).Network.Gateway = %v, want %q", tc.in, gw, tc.gateway)
		}
		if len(p.Network.DNS) != tc.dns {
			t.Errorf("Parse(%q).Network.DNS = %v, want %d servers", tc.in, p.Network.DNS, tc.dns)
		}
	}
}

func TestParseErrorsKeepGoodParams(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"ingot.root=" + rootGUID, "want PARTUUID="},
		{"ingot.root=PARTUUID=xyz", "GUID"},
		{"ingot.root=PARTUUID=00000000-0000-0000-0000-000000000000", "zero GUID"},
		{"ingot.slot=c", "ingot.slot"},
		{"ingot.trial=yes", "ingot.trial"},
		{"ingot.ip=10.0.0.1", "ingot.ip: address"},
		{"ingot.ip=10.0.0.1/8,gw", "ingot.ip: gateway"},
		{"ingot.ip=10.0.0.1/8,,dns", "ingot.ip: dns 1"},
		{"ingot.ip=10.0.0.1/8,fe80::1", "family"},
	} {
		p, err := Parse("ingot.perm=PARTUUID=" + permGUID + " " + tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) error = %v, want containing %q", tc.in, err, tc.want)
		}
		if p.Perm.String() != permGUID {
			t.Errorf("Parse(%q).Perm = %v, want %s kept despite the error", tc.in, p.Perm, permGUID)
		}
	}
}

func mustGUID(t *testing.T, s string) gpt.GUID {
	t.Helper()
	g, err := gpt.ParseGUID(s)
	if err != nil {
		t.Fatal(err)
	}
	return g
}
