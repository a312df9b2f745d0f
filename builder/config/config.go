// Package config reads and checks ingot.yaml, the declarative description of
// an appliance: its name, the targets it is built for, its services (Go
// packages or OCI images), management, network and disk settings. Parsing
// is strict: an unknown field, a value of the wrong type, a missing required
// field or an inconsistent setting is an error that names the file, line,
// column and field path, and every default is filled in here, so the
// builder and the appliance never guess.
//
// The schema, with defaults:
//
//	name: hello                    # required; a hostname label
//	hostname: hello                # default: name
//	targets: [vm-amd64]            # vm-amd64 | vm-arm64 | rpi | rpi-armv7
//	kernel:                        # per target; relative paths are relative to the config
//	  vm-amd64: debian:PATH.deb    # or gomod:MODULE@VERSION; default: see package builder
//	token_file: .ingot/token       # the image stores only its SHA-256
//	services:                      # required, at least one
//	  - name: web                  # required; [a-z][a-z0-9_-]*, not init or log
//	    go: ./cmd/web              # exactly one of go: (./dir, import/path, module/path@version)
//	    image: registry/ref:tag    #   and image: (OCI)
//	    args: [-listen, ":8080"]
//	    entrypoint: [/bin/x]       # image services only
//	    env: {KEY: value}
//	    restart: always            # always | on-failure | never
//	    after: [db]                # services started first; no cycles
//	    user: nobody               # default nobody for Go services; root | nobody | UID[:GID] | (image) name
//	    volumes: ["/perm/web:/var/lib/web:ro"]   # image services only
//	    resources: {memory: 128Mi, cpu: "0.5", pids: 256}
//	    privileged: false          # image services only
//	    needs_perm: false          # held back while /perm is not mounted
//	    log_buffer: 1Mi            # up to 64Mi
//	    grace: 10s                 # whole seconds, up to 10m
//	management: {vsock_port: 1024, tcp: ":7443"}   # tcp defaults to :7443 on rpi, off in VMs
//	  # tls_cert: .ingot/tls-cert.pem, tls_key: .ingot/tls-key.pem (ingot new writes them)
//	network: dhcp                  # dhcp | none | {static: {address: CIDR, gateway: IP, dns: [IP]}}
//	perm: 64Mi                     # size of the perm partition; false or 0 for none
//	disk: {boot_size: 64Mi, root_size: 256Mi}    # whole MiB
//	update: {health_window: 30s}
//
// Sizes are integers with an optional unit: Ki, Mi, Gi, Ti (KiB, ...) are
// powers of 1024, K, M, G, T (KB, ...) powers of 1000.
package config

import (
	"fmt"
	"net/netip"
	"time"
)

// FileName is the conventional name of the config file in an appliance
// directory.
const FileName = "ingot.yaml"

// Defaults applied by Parse.
const (
	DefaultVsockPort       uint32 = 1024
	DefaultPermBytes       int64  = 64 << 20
	DefaultBootBytes       int64  = 64 << 20
	DefaultRootSlotBytes   int64  = 256 << 20
	DefaultLogBufferBytes  int64  = 1 << 20
	DefaultGrace                  = 10 * time.Second
	DefaultHealthWindow           = 30 * time.Second
	DefaultTokenFile              = ".ingot/token"
	DefaultTLSCertFile            = ".ingot/tls-cert.pem"
	DefaultTLSKeyFile             = ".ingot/tls-key.pem"
	DefaultRestart                = RestartAlways
	DefaultTarget                 = TargetVMAmd64
	DefaultPiManagementTCP        = ":7443"
)

// Bounds checked by Parse.
const (
	// MaxLogBufferBytes and MaxGrace are the most ingot-init accepts.
	MaxLogBufferBytes     int64 = 64 << 20
	MaxGrace                    = 10 * time.Minute
	partitionAlignBytes   int64 = 1 << 20
	maxServiceNameBytes         = 32
	maxHostnameLabelBytes       = 63
	// maxHostnameBytes is Linux's HOST_NAME_MAX.
	maxHostnameBytes = 64
)

// Config is a parsed, defaulted and validated ingot.yaml.
type Config struct {
	// File is the path the config was read from, as given to Load or Parse;
	// it prefixes error messages.
	File string
	// Dir is the absolute directory of File. Relative paths in the config
	// (local Go packages, kernel files, the token file) are relative to it.
	Dir string

	Name string
	// Hostname defaults to Name.
	Hostname string
	// Targets lists the images to build, in config order, without duplicates.
	// It defaults to [vm-amd64].
	Targets []Target
	// Kernels holds the kernels given explicitly under kernel:. A target
	// without an entry uses the builder's default resolution.
	Kernels  map[Target]KernelSource
	Services []Service

	Management Management
	Network    Network
	// PermBytes is the size of the persistent partition; 0 means the image
	// has none (perm: false or perm: 0).
	PermBytes int64
	Disk      Disk
	// TokenFile is the absolute path of the management token file written
	// by `ingot new`; the image stores only its SHA-256.
	TokenFile string
	Update    Update
}

// Service returns the service named name.
func (c *Config) Service(name string) (*Service, bool) {
	for i := range c.Services {
		if c.Services[i].Name == name {
			return &c.Services[i], true
		}
	}
	return nil, false
}

// HasTarget reports whether t is one of the config's targets.
func (c *Config) HasTarget(t Target) bool {
	for _, x := range c.Targets {
		if x == t {
			return true
		}
	}
	return false
}

// ManagementTCP returns the TCP listen address of the management API on
// target t: the configured one, or DefaultPiManagementTCP on a Raspberry Pi
// (which has no vsock), or "" (off) on a VM.
func (c *Config) ManagementTCP(t Target) string {
	if c.Management.TCP != "" {
		return c.Management.TCP
	}
	if !t.IsVM() {
		return DefaultPiManagementTCP
	}
	return ""
}

// Pos is a position in the config file.
type Pos struct {
	File         string
	Line, Column int
}

func (p Pos) String() string {
	switch {
	case p.Line == 0:
		return p.File
	case p.Column == 0:
		return fmt.Sprintf("%s:%d", p.File, p.Line)
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Column)
}

// RestartPolicy says when the supervisor restarts a service that exited.
type RestartPolicy string

// The restart policies.
const (
	RestartAlways    RestartPolicy = "always"
	RestartOnFailure RestartPolicy = "on-failure"
	RestartNever     RestartPolicy = "never"
)

var restartPolicies = []RestartPolicy{RestartAlways, RestartOnFailure, RestartNever}

// Service is one supervised program of the appliance.
type Service struct {
	Name string
	// Exactly one of Go and Image is set.
	Go    *GoPackage
	Image string // OCI image reference, resolved per target by the builder
	// Args are the program arguments; for an image service they replace
	// the image's cmd.
	Args []string
	// Entrypoint replaces an image's entrypoint (image services only).
	Entrypoint []string
	Env        map[string]string
	Restart    RestartPolicy
	// After lists services that must be started before this one.
	After []string
	// User is nil for the default: nobody (65534) for a Go service, the
	// image's user for an image service.
	User      *User
	Volumes   []Volume
	Resources Resources
	// Privileged keeps the full capability set (image services only).
	Privileged bool
	// NeedsPerm holds the service back when /perm is not mounted.
	NeedsPerm      bool
	LogBufferBytes int64
	// Grace is how long the service has between SIGTERM and SIGKILL.
	Grace time.Duration
	// Health is the service's health check; nil without one.
	Health *Health
	// Pos is where the service is defined, for later errors about it.
	Pos Pos
}

// GoPackage is a Go main package to cross-compile.
type GoPackage struct {
	// Path is the package as written without any version: "./cmd/x" (local,
	// relative to Config.Dir), or an import path ("example.com/m/cmd/x").
	Path string
	// Version is set for "module/path@version" and names the version to
	// build from a generated module; empty means the package is resolved
	// in the module of Config.Dir.
	Version string
}

// Local reports whether the package is a directory relative to the config.
func (g GoPackage) Local() bool {
	return g.Path == "." || g.Path == ".." || hasPrefix(g.Path, "./") || hasPrefix(g.Path, "../")
}

func (g GoPackage) String() string {
	if g.Version != "" {
		return g.Path + "@" + g.Version
	}
	return g.Path
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

// User is whom a service runs as.
type User struct {
	// Name is "root", "nobody", or (image services only) a user name to
	// resolve in the image; empty when the user was given as numbers.
	Name     string
	UID, GID uint32
	// ByName is true when UID and GID are not known yet: Name must be
	// looked up in the image's /etc/passwd by the builder.
	ByName bool
}

func (u User) String() string {
	if u.ByName || (u.Name != "" && u.Name != "nobody" && u.Name != "root") {
		return u.Name
	}
	if u.Name != "" {
		return u.Name
	}
	return fmt.Sprintf("%d:%d", u.UID, u.GID)
}

// Volume binds a directory of the perm partition into an image service.
type Volume struct {
	Source   string // absolute, under /perm
	Target   string // absolute, inside the container
	ReadOnly bool
}

// Health is a service's health check (see ingot.yaml's health:): init
// probes it while the service runs; a trial boot needs every checked
// service healthy, and Restart restarts a service that turns unhealthy.
// Exactly one of HTTP and TCP is set; zero durations and Retries mean the
// defaults.
type Health struct {
	HTTP     string // http:// URL; 2xx or 3xx is healthy
	TCP      string // HOST:PORT; a connection is healthy
	Interval time.Duration
	Timeout  time.Duration
	Retries  int
	Restart  bool
}

// Defaults and bounds of a health check, as the appliance applies them.
const (
	DefaultHealthInterval = 5 * time.Second
	DefaultHealthTimeout  = 2 * time.Second
	DefaultHealthRetries  = 3
	MinHealthInterval     = time.Second
	MaxHealthInterval     = time.Hour
	MinHealthTimeout      = 100 * time.Millisecond
	MaxHealthRetries      = 100
)

// Resources are cgroup v2 limits; zero means unlimited.
type Resources struct {
	MemoryBytes int64
	// CPUMillis is the CPU quota in thousandths of a CPU (500 = half a CPU).
	CPUMillis int64
	Pids      int64
}

// Management configures the management API inside the appliance.
type Management struct {
	VsockPort uint32
	// TCP is the listen address of the TLS listener as written; empty means
	// the target's default (see Config.ManagementTCP).
	TCP string
	// TLSCertFile and TLSKeyFile are the absolute paths of the listener's
	// certificate and key (PEM), which `ingot new` generates; clients pin
	// the certificate.
	TLSCertFile, TLSKeyFile string
}

// NetworkMode is how the appliance configures its first NIC.
type NetworkMode string

// The network modes.
const (
	NetworkDHCP   NetworkMode = "dhcp"
	NetworkStatic NetworkMode = "static"
	NetworkNone   NetworkMode = "none"
)

// Network is the appliance's IP configuration.
type Network struct {
	Mode NetworkMode
	// Address, Gateway and DNS are set for NetworkStatic. Gateway may be
	// invalid (no default route).
	Address netip.Prefix
	Gateway netip.Addr
	DNS     []netip.Addr
}

// Disk holds partition sizes of the image.
type Disk struct {
	BootBytes     int64
	RootSlotBytes int64
}

// Update configures A/B updates.
type Update struct {
	// HealthWindow is how long every restart: always service must stay up
	// before a trial boot is confirmed.
	HealthWindow time.Duration
}

// KernelKind is where a kernel comes from.
type KernelKind string

// The kernel source kinds.
const (
	// KernelDebian is a Debian linux-image .deb file on the build machine.
	KernelDebian KernelKind = "debian"
	// KernelGoModule is a Go module holding a prebuilt kernel, e.g.
	// github.com/gokrazy/kernel.rpi, resolved like any Go module.
	KernelGoModule KernelKind = "gomod"
)

// KernelSource is one entry of kernel:, "debian:PATH.deb" or
// "gomod:MODULE[@VERSION]".
type KernelSource struct {
	Kind KernelKind
	// Path is the absolute path of a KernelDebian file.
	Path string
	// Module and Version name a KernelGoModule; Version may be empty.
	Module, Version string
	Pos             Pos
}

func (k KernelSource) String() string {
	switch k.Kind {
	case KernelDebian:
		return "debian:" + k.Path
	case KernelGoModule:
		if k.Version != "" {
			return "gomod:" + k.Module + "@" + k.Version
		}
		return "gomod:" + k.Module
	}
	return string(k.Kind)
}
