package spec

import (
	"strings"
	"testing"
)

func TestValidateDebug(t *testing.T) {
	digest := "sha256:" + strings.Repeat("0", 64)
	debug := func() *Container {
		return &Container{Image: "busybox:1", Digest: digest, Rootfs: DebugContainerDir + "/rootfs", Argv: []string{"/bin/sh"}, UID: DebugID, GID: DebugID}
	}
	box := Service{Name: "box", Path: "/init", Args: []string{ContainerSubcommand, "box"}, User: "root",
		Container: &Container{Image: "box:1", Digest: digest, Rootfs: "/oci/box/rootfs", Argv: []string{"/x"}}}
	base := func() *Appliance {
		b := box
		c := *box.Container
		b.Container = &c
		return &Appliance{Name: "x", BuildID: "1", Arch: "amd64", Services: []Service{b}, Debug: debug()}
	}
	if err := base().Validate(); err != nil {
		t.Fatalf("valid debug container: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(a *Appliance)
		want string
	}{
		{"root", func(a *Appliance) { a.Debug.UID, a.Debug.GID = 0, 0 }, "debug: runs as 0:0"},
		{"elsewhere", func(a *Appliance) { a.Debug.Rootfs = "/oci/box/rootfs" }, `debug: rootfs: "/oci/box/rootfs"`},
		{"privileged", func(a *Appliance) { a.Debug.Privileged = true }, "debug: volumes, privileged"},
		{"volumes", func(a *Appliance) { a.Debug.Volumes = []Volume{{Source: "/perm/x", Target: "/x"}} }, "debug: volumes, privileged"},
		{"no command", func(a *Appliance) { a.Debug.Argv = nil }, "debug: container: argv: empty"},
		{"a container service as the debug user", func(a *Appliance) { a.Services[0].Container.UID = DebugID }, `services[0] "box": runs as uid 65533`},
		{"a Go service as the debug user", func(a *Appliance) {
			a.Services = append(a.Services, Service{Name: "web", Path: "/usr/bin/web", User: "65533"})
		}, `services[1] "web": runs as uid 65533`},
	} {
		a := base()
		tc.edit(a)
		if err := a.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	// Without a debug container the uid is anybody's.
	a := base()
	a.Debug = nil
	a.Services[0].Container.UID = DebugID
	if err := a.Validate(); err != nil {
		t.Errorf("no debug container, a service as %d: %v", DebugID, err)
	}
}
