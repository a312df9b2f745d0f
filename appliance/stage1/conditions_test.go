package stage1

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ingotdev/ingot/packer/format/spec"
)

func TestServicesToRun(t *testing.T) {
	dhcp := spec.Service{Name: "dhcp", Path: "/usr/lib/ingot/dhcp", Condition: spec.ConditionNoStaticNetwork}
	web := spec.Service{Name: "web", Path: "/usr/bin/web", After: []string{"dhcp", "db"}}
	db := spec.Service{Name: "db", Path: "/usr/bin/db"}
	all := []spec.Service{dhcp, web, db}
	for _, tc := range []struct {
		name, static string
		want         []spec.Service
		skipped      []string
		dhcp         bool
	}{
		{"no static network", "", all, nil, true},
		{"cmdline", "cmdline", []spec.Service{{Name: "web", Path: "/usr/bin/web", After: []string{"db"}}, db}, []string{"dhcp"}, false},
		{"spec", "spec", []spec.Service{{Name: "web", Path: "/usr/bin/web", After: []string{"db"}}, db}, []string{"dhcp"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, skipped := servicesToRun(all, tc.static)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("servicesToRun(%q) (-want +got):\n%s", tc.static, diff)
			}
			var names []string
			for _, s := range skipped {
				names = append(names, s.name)
			}
			if !cmp.Equal(names, tc.skipped) {
				t.Errorf("servicesToRun(%q) skipped %v, want %v", tc.static, names, tc.skipped)
			}
			if got := dhcpWillRun(all, tc.static); got != tc.dhcp {
				t.Errorf("dhcpWillRun(%q) = %v, want %v", tc.static, got, tc.dhcp)
			}
		})
	}
	if web.After[0] != "dhcp" {
		t.Errorf("servicesToRun changed the caller's After list: %v", web.After)
	}
}
