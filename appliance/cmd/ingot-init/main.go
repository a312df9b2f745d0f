// Command ingot-init is the userland of an ingot appliance: /init in the
// root filesystem, where it runs stage1 (PID 1: mounts, network, perm,
// service supervision, shutdown) with the management extension (agent,
// A/B updates, trial confirmation); a VM reaches it from ingot-stage0 in
// the initramfs. As `/init container <service>`, which
// the supervisor starts for image services, it is the container launcher
// (package container) instead; as `/init exec <service> -- CMD` it enters a
// running container and as `/init shell -- CMD` it starts the debug
// container, both for the agent's debug sessions.
package main

import (
	"fmt"
	"os"

	"github.com/ingotdev/ingot/appliance/container"
	"github.com/ingotdev/ingot/appliance/manage"
	"github.com/ingotdev/ingot/appliance/stage1"
	"github.com/ingotdev/ingot/packer/format/spec"
)

func main() {
	// The launcher is PID 1 of its own pid namespace, so this comes before
	// the check below, which is about the appliance's.
	if len(os.Args) > 1 && os.Args[1] == spec.ContainerSubcommand {
		container.Main(os.Args)
	}
	// The agent's debug sessions: a command entering a container, and the
	// debug container.
	if len(os.Args) > 1 && os.Args[1] == spec.ExecSubcommand {
		container.JoinMain(os.Args)
	}
	if len(os.Args) > 1 && os.Args[1] == spec.ShellSubcommand {
		container.ShellMain(os.Args)
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "ingot-init: this is the init of an ingot appliance; it runs only as PID 1")
		os.Exit(2)
	}
	stage1.Main(stage1.WithSetup(manage.Name, manage.Setup()))
}
