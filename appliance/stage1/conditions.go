package stage1

import (
	"fmt"
	"slices"

	"github.com/ingotdev/ingot/packer/format/spec"
)

// dhcpResolvConf is where gokrazy's DHCP client writes the resolver
// configuration (a fixed path in its source). When it runs, stage1 points
// ResolvConfPath there, so /etc/resolv.conf follows the lease.
const dhcpResolvConf = "/tmp/resolv.conf"

// skippedService is a service whose condition is false on this boot.
type skippedService struct {
	name, reason string
}

// servicesToRun drops the services whose Condition does not hold, and
// removes them from the After lists of the others (a condition is about
// this boot, so waiting for a service that will never run would hold its
// dependents forever). staticSource names where a static address came
// from ("" when there is none).
func servicesToRun(services []spec.Service, staticSource string) ([]spec.Service, []skippedService) {
	var run []spec.Service
	var skipped []skippedService
	drop := map[string]bool{}
	for _, s := range services {
		if s.Condition == spec.ConditionNoStaticNetwork && staticSource != "" {
			drop[s.Name] = true
			skipped = append(skipped, skippedService{s.Name, fmt.Sprintf("not started: the network is static (from %s)", staticSource)})
			continue
		}
		run = append(run, s)
	}
	if len(drop) == 0 {
		return run, nil
	}
	for i, s := range run {
		if slices.ContainsFunc(s.After, func(n string) bool { return drop[n] }) {
			s.After = slices.DeleteFunc(slices.Clone(s.After), func(n string) bool { return drop[n] })
			run[i] = s
		}
	}
	return run, skipped
}

// dhcpWillRun reports whether a DHCP client service runs on this boot.
func dhcpWillRun(services []spec.Service, staticSource string) bool {
	run, _ := servicesToRun(services, staticSource)
	return slices.ContainsFunc(run, func(s spec.Service) bool {
		return s.Name == spec.DHCPServiceName && s.Condition == spec.ConditionNoStaticNetwork
	})
}
