package builder

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// TestBuildDHCPService checks that network: dhcp (the default) adds the
// DHCP client as a conditional root service, and that the other network
// modes leave it out.
func TestBuildDHCPService(t *testing.T) {
	for _, tc := range []struct {
		name, network string
		want          bool
	}{
		{"default", "", true},
		{"dhcp", "network: dhcp", true},
		{"none", "network: none", false},
		{"static", "network: {static: {address: 10.0.0.5/24, gateway: 10.0.0.1}}", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, "  - {name: hello, go: ./cmd/hello}", tc.network)
			r, err := Build(context.Background(), cfg, config.TargetVMAmd64, testOptions(t, t.TempDir())...)
			if err != nil {
				t.Fatalf("Build = %v", err)
			}
			var got *spec.Service
			for i, s := range r.Appliance.Services {
				if s.Name == spec.DHCPServiceName {
					got = &r.Appliance.Services[i]
				}
			}
			_, inTree := r.Root.Get(DHCPPath)
			if (got != nil) != tc.want || inTree != tc.want {
				t.Fatalf("Build(%q): dhcp service %v, %s in the tree %v; want both %v", tc.network, got != nil, DHCPPath, inTree, tc.want)
			}
			// The clock is ingot's default, so a DHCP server's NTP
			// servers come first.
			if !r.Appliance.Clock.Defaulted || !r.Appliance.Clock.AsksDHCP() {
				t.Errorf("Build(%q): clock %+v, want the default servers marked Defaulted", tc.network, r.Appliance.Clock)
			}
			if !tc.want {
				return
			}
			want := spec.Service{Name: "dhcp", Path: DHCPPath, Args: []string{"-interface", "eth0"},
				Restart: spec.RestartAlways, User: "root", Condition: spec.ConditionNoStaticNetwork}
			if diff := cmp.Diff(want, *got); diff != "" {
				t.Errorf("dhcp service (-want +got):\n%s", diff)
			}
			last := r.Binaries[len(r.Binaries)-1]
			if last.Service != "dhcp" || last.Package != DHCPPackage || last.Path != DHCPPath || last.Bytes == 0 {
				t.Errorf("last binary = %+v, want the DHCP client", last)
			}
		})
	}
}

func TestBuildDHCPNameTaken(t *testing.T) {
	cfg := testConfig(t, "  - {name: dhcp, go: ./cmd/hello}")
	_, err := Build(context.Background(), cfg, config.TargetVMAmd64, testOptions(t, t.TempDir())...)
	if err == nil || !strings.Contains(err.Error(), `service "dhcp": the name is taken by the DHCP client`) {
		t.Errorf("Build(service named dhcp) = %v, want the name conflict", err)
	}
	cfg = testConfig(t, "  - {name: dhcp, go: ./cmd/hello}", "network: none")
	if _, err := Build(context.Background(), cfg, config.TargetVMAmd64, testOptions(t, t.TempDir())...); err != nil {
		t.Errorf("Build(service named dhcp, network: none) = %v, want success", err)
	}
}
