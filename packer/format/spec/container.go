package spec

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ContainerRoot is the directory of the root filesystem under which the
// builder stores each image service: ContainerRoot/<service>/rootfs is the
// flattened image, ContainerRoot/<service>/config.json its OCI image
// config as pulled.
const ContainerRoot = "/oci"

// ContainerSubcommand is argv[1] with which the supervisor re-executes
// ingot-init (Service.Path is then "/init") to launch an image service:
// argv is ["/init", ContainerSubcommand, <service name>], and the launcher
// reads the service's Container from AppliancePath.
const ContainerSubcommand = "container"

// ContainerResolvConfPath is the resolver configuration that init keeps
// for containers, a copy of the appliance's /etc/resolv.conf rewritten in
// place (its inode never changes) whenever the network configuration
// does, so that a container's read-only bind mount of it stays current.
const ContainerResolvConfPath = "/run/ingot/resolv.conf"

// ContainerStageDir is where each container launcher, in its own mount
// namespace, mounts a small tmpfs for the /etc/hosts and /etc/hostname it
// generates for its container.
const ContainerStageDir = "/run/ingot/container"

// Resources are cgroup v2 limits of a service (any service, Go or image);
// zero means unlimited.
type Resources struct {
	// MemoryBytes is written to memory.max.
	MemoryBytes int64 `json:"memory_bytes,omitempty"`
	// CPUMillis is the CPU quota in thousandths of a CPU, written to
	// cpu.max as "<CPUMillis*100> 100000".
	CPUMillis int64 `json:"cpu_millis,omitempty"`
	// Pids is written to pids.max.
	Pids int64 `json:"pids,omitempty"`
}

// IsZero reports whether r sets no limit.
func (r Resources) IsZero() bool { return r == Resources{} }

// Validate checks that no limit is negative.
func (r Resources) Validate() error {
	switch {
	case r.MemoryBytes < 0:
		return fmt.Errorf("resources: memory_bytes: %d is negative", r.MemoryBytes)
	case r.CPUMillis < 0:
		return fmt.Errorf("resources: cpu_millis: %d is negative", r.CPUMillis)
	case r.Pids < 0:
		return fmt.Errorf("resources: pids: %d is negative", r.Pids)
	}
	return nil
}

// Container is how an image service runs: everything the launcher needs,
// resolved at build time (the image config merged with ingot.yaml).
type Container struct {
	// Image is the reference as written in ingot.yaml; Digest the manifest
	// digest it resolved to for this target ("sha256:...").
	Image  string `json:"image"`
	Digest string `json:"digest"`
	// Rootfs is the absolute path of the flattened image in the root
	// filesystem: ContainerRoot/<service>/rootfs.
	Rootfs string `json:"rootfs"`
	// Argv is entrypoint + cmd after ingot.yaml's overrides; Argv[0] is
	// resolved inside the container (absolute, or looked up in its PATH).
	Argv []string `json:"argv"`
	// Env is the image env followed by ingot.yaml's env, KEY=VALUE, later
	// entries winning; INGOT_BUILD_ID and INGOT_SERVICE are added at run
	// time.
	Env []string `json:"env,omitempty"`
	// WorkingDir defaults to "/".
	WorkingDir string `json:"working_dir,omitempty"`
	// UID, GID and AdditionalGIDs are numeric: names are resolved in the
	// image's /etc/passwd and /etc/group at build time.
	UID            uint32   `json:"uid"`
	GID            uint32   `json:"gid"`
	AdditionalGIDs []uint32 `json:"additional_gids,omitempty"`
	// Hostname is the UTS name inside the container; defaults to the
	// service name.
	Hostname string `json:"hostname,omitempty"`
	// Volumes bind directories of /perm into the container.
	Volumes []Volume `json:"volumes,omitempty"`
	// Privileged keeps the full capability bounding set.
	Privileged bool `json:"privileged,omitempty"`
	// NetworkNamespace gives the container its own (empty but for lo)
	// network namespace; false shares the appliance's.
	NetworkNamespace bool `json:"network_namespace,omitempty"`
	// ExposedPorts are the image config's ports ("8080/tcp"), for status.
	ExposedPorts []string `json:"exposed_ports,omitempty"`
}

// Volume binds Source, a directory under /perm, to Target inside a
// container.
type Volume struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

// Validate checks a container description.
func (c *Container) Validate() error {
	switch {
	case c.Image == "":
		return fmt.Errorf("container: image: empty")
	case !strings.HasPrefix(c.Digest, "sha256:") || len(c.Digest) != len("sha256:")+64:
		return fmt.Errorf("container: digest: %q is not sha256:<64 hex>", c.Digest)
	case !isAbsClean(c.Rootfs) || !strings.HasPrefix(c.Rootfs, ContainerRoot+"/"):
		return fmt.Errorf("container: rootfs: %q is not a clean path under %s", c.Rootfs, ContainerRoot)
	case len(c.Argv) == 0 || c.Argv[0] == "":
		return fmt.Errorf("container: argv: empty: the image has no entrypoint or cmd and ingot.yaml gives none")
	case c.WorkingDir != "" && !isAbsClean(c.WorkingDir):
		return fmt.Errorf("container: working_dir: %q is not a clean absolute path", c.WorkingDir)
	case c.Hostname != "" && !validHostname(c.Hostname):
		return fmt.Errorf("container: hostname: %q is not a valid hostname", c.Hostname)
	}
	for i, a := range c.Argv {
		if strings.ContainsRune(a, 0) {
			return fmt.Errorf("container: argv[%d]: contains a NUL byte", i)
		}
	}
	for i, e := range c.Env {
		k, _, ok := strings.Cut(e, "=")
		if !ok || k == "" || strings.ContainsRune(e, 0) {
			return fmt.Errorf("container: env[%d]: %q is not KEY=VALUE", i, e)
		}
	}
	for i, v := range c.Volumes {
		if err := v.Validate(); err != nil {
			return fmt.Errorf("container: volumes[%d]: %s:%s: %w", i, v.Source, v.Target, err)
		}
	}
	return nil
}

// PermLogDir is where init keeps every service's log, and its own, on perm.
const PermLogDir = "/perm/log"

// CheckVolumeSource refuses a volume of service whose source is init's log
// directory or the perm directory of another service (any of others): init
// writes there as root, or another service trusts what it finds there, so
// a container given it could redirect those writes through links.
func CheckVolumeSource(service string, others []string, source string) error {
	if source == PermLogDir || strings.HasPrefix(source, PermLogDir+"/") {
		return fmt.Errorf("the source %s is in init's log directory %s, which no container may write", source, PermLogDir)
	}
	top, _, _ := strings.Cut(strings.TrimPrefix(source, "/perm/"), "/")
	if strings.HasPrefix(top, ".ingot") {
		return fmt.Errorf("the source %s is in /perm/%s, which ingot-init keeps (its clock, the release puller's state and registry credentials)", source, top)
	}
	if top != service && slices.Contains(others, top) {
		return fmt.Errorf("the source %s is in /perm/%s, the directory of service %s", source, top, top)
	}
	return nil
}

// Validate checks that the source is a directory under /perm and the
// target a directory other than the container's root.
func (v Volume) Validate() error {
	switch {
	case !isAbsClean(v.Source) || !strings.HasPrefix(v.Source, "/perm/"):
		return errors.New("the source must be a clean path under /perm/")
	case !isAbsClean(v.Target) || v.Target == "/":
		return errors.New("the target must be a clean absolute path other than /")
	}
	return nil
}
