package spec

import (
	"fmt"
	"slices"
)

// ExecSubcommand is argv[1] with which the agent re-executes ingot-init to
// enter a running container: ["/init", ExecSubcommand, <service>, "--",
// <command>...] (`ingot exec`).
const ExecSubcommand = "exec"

// ShellSubcommand is argv[1] with which the agent re-executes ingot-init
// to launch the debug container: ["/init", ShellSubcommand, "--",
// <command>...] (`ingot shell`).
const ShellSubcommand = "shell"

// DebugContainerDir holds the debug image (ingot.yaml's debug:) in the
// root, like an image service's ContainerRoot/<service>: its rootfs and
// config.json. A service name cannot start with a dot, so no service
// shares it.
const DebugContainerDir = ContainerRoot + "/.debug"

// DebugHostname is the UTS name inside the debug container.
const DebugHostname = "debug"

// DebugID is the uid and gid the debug container's processes run as,
// whatever the image says: no service may run as it (Validate), so the
// shell can signal, trace or read the private /proc files of no process
// of the appliance, which it sees through a read-only /proc of the
// appliance's pid namespace.
const DebugID = 65533

// ContainerOf returns the container of the named image service.
func (a *Appliance) ContainerOf(name string) (*Container, error) {
	for i := range a.Services {
		if a.Services[i].Name != name {
			continue
		}
		if a.Services[i].Container == nil {
			return nil, fmt.Errorf("service %q is not an image service: it has no container", name)
		}
		return a.Services[i].Container, nil
	}
	return nil, fmt.Errorf("no service %q", name)
}

// validateDebug checks the debug container: a container at
// DebugContainerDir running as DebugID with no volumes and no privilege,
// and no service running as DebugID.
func (a *Appliance) validateDebug() error {
	for i, s := range a.Services {
		uid := uint32(0)
		if s.Container != nil {
			uid = s.Container.UID
		} else if c, err := s.Credential(); err == nil {
			uid = c.UID
		}
		if uid == DebugID && a.Debug != nil {
			return fmt.Errorf("services[%d] %q: runs as uid %d, which is the debug container's alone", i, s.Name, DebugID)
		}
	}
	d := a.Debug
	if d == nil {
		return nil
	}
	if err := d.Validate(); err != nil {
		return fmt.Errorf("debug: %w", err)
	}
	switch {
	case d.Rootfs != DebugContainerDir+"/rootfs":
		return fmt.Errorf("debug: rootfs: %q, want %s/rootfs", d.Rootfs, DebugContainerDir)
	case d.UID != DebugID || d.GID != DebugID || slices.ContainsFunc(d.AdditionalGIDs, func(g uint32) bool { return g != DebugID }):
		return fmt.Errorf("debug: runs as %d:%d %v, want %d:%d", d.UID, d.GID, d.AdditionalGIDs, DebugID, DebugID)
	case len(d.Volumes) > 0 || d.Privileged || d.NetworkNamespace:
		return fmt.Errorf("debug: volumes, privileged and network_namespace are not for the debug container")
	}
	return nil
}
