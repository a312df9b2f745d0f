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
//	token_file: .ingot/token       # ≥ 32 hex or base64 characters (token.go); the image stores only its SHA-256
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
//	    wait_for_clock: false      # first start only once NTP set the clock
//	management: {vsock_port: 1024, tcp: ":7443"}   # tcp defaults to :7443 on rpi, off in VMs
//	  # tls_cert: .ingot/tls-cert.pem, tls_key: .ingot/tls-key.pem (ingot new writes them)
//	network: dhcp                  # dhcp | none | {static: {address: CIDR, gateway: IP, dns: [IP]}}
//	  # rpi targets: {wifi: {ssid: NAME, psk_file: FILE, firmware_deb: firmware-brcm80211.deb}} (DHCP on eth0 and wlan0)
//	perm: 64Mi                     # size of the perm partition; false or 0 for none
//	disk: {boot_size: 64Mi, root_size: 256Mi}    # whole MiB
//	update: {health_window: 30s, keys: [release.pub]}   # keys: public keys releases are signed with (ingot key new)
//	  # from: REGISTRY/REPO:TAG (or @sha256:…) the appliance polls, needs keys; check: 1h (10s..168h); insecure: false (plain-HTTP registry)
//	release: 12                    # orders builds: an update to a lower release is refused
//	metrics: {listen: ":9100", auth: token}     # Prometheus text format on /metrics; auth: token | none; absent: off
//	logs: {remote: "syslog+tls://logs.example:6514", ca: logs-ca.pem, spool: 16Mi}
//	  # remote: syslog+tls | syslog+tcp | syslog+udp; ca: required with tls; spool: lines kept on perm while the receiver is away
//	clock: {ntp: [0.pool.ntp.org, ...]}   # host[:port], up to 8; [] turns NTP off
//	debug: {image: busybox:1.36}  # flattened into the image, started only by ingot shell
//
// Sizes are integers with an optional unit: Ki, Mi, Gi, Ti (KiB, ...) are
// powers of 1024, K, M, G, T (KB, ...) powers of 1000.
package config

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/ingotdev/ingot/packer/format/spec"
)

// FileName is the conventional name of the config file in an appliance
// directory.
const FileName = "ingot.yaml"

// Defaults applied by Parse. A service's defaults and bounds are the
// appliance's, in package spec.
const (
	DefaultVsockPort       uint32 = 1024
	DefaultPermBytes       int64  = 64 << 20
	DefaultBootBytes       int64  = 64 << 20
	DefaultRootSlotBytes   int64  = 256 << 20
	DefaultHealthWindow           = spec.DefaultHealthWindowSeconds * time.Second
	DefaultTokenFile              = ".ingot/token"
	DefaultTLSCertFile            = ".ingot/tls-cert.pem"
	DefaultTLSKeyFile             = ".ingot/tls-key.pem"
	DefaultTarget                 = TargetVMAmd64
	DefaultPiManagementTCP        = ":7443"
)

// Bounds checked by Parse.
const (
	partitionAlignBytes   int64 = 1 << 20
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
	// by `ingot new`; the image stores only its SHA-256. Token reads and
	// checks it.
	TokenFile string
	// TokenFilePos is where ingot.yaml sets token_file; zero for the
	// default file.
	TokenFilePos Pos
	Update       Update
	// Release orders the builds of this appliance (spec.Appliance.Release):
	// an update to a lower release is refused unless the operator allows
	// the downgrade. 0 when ingot.yaml sets none.
	Release uint64
	// Metrics is the Prometheus endpoint (off when Listen is empty).
	Metrics spec.Metrics
	// Logs is the remote syslog receiver (off when Remote is empty).
	Logs Logs
	// Clock lists the NTP servers (spec.DefaultNTPServers, Defaulted,
	// unless clock.ntp is set).
	Clock spec.Clock
	// Debug is the debug container's image; nil without debug: (debug.go).
	Debug *Debug
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

// Service is one supervised program of the appliance.
type Service struct {
	// Service is what ingot.yaml says that appliance.json carries as is,
	// defaults filled in: Name, Restart, After, NeedsPerm, LogBufferBytes,
	// GraceSeconds, Resources and Health; Args and Env (which an image
	// service's container takes instead); and User: "root", "nobody",
	// "UID:GID" or "" (nobody) for a Go service, and for an image service
	// "UID:GID" (root and nobody too, so the image cannot rename them), a
	// user name to resolve in the image, or "" for the image's user. Path,
	// Condition and Container are the builder's.
	spec.Service
	// Exactly one of Go and Image is set.
	Go    *GoPackage
	Image string // OCI image reference, resolved per target by the builder
	// Entrypoint replaces an image's entrypoint (image services only);
	// Args then replace its cmd.
	Entrypoint []string
	Volumes    []spec.Volume
	// Privileged keeps the full capability set (image services only).
	Privileged bool
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
	// WiFi, when set (with Mode NetworkDHCP), joins a WPA2 network on a
	// Raspberry Pi target's wlan0 and asks DHCP there too; VM targets
	// ignore it.
	WiFi *WiFi
	// Address, Gateway and DNS are set for NetworkStatic. Gateway may be
	// invalid (no default route).
	Address netip.Prefix
	Gateway netip.Addr
	DNS     []netip.Addr
}

// WiFi is network.wifi: a WPA2-PSK network for the Raspberry Pi's
// brcmfmac Wi-Fi.
type WiFi struct {
	// SSID is the network's name (spec.CheckSSID).
	SSID string
	// PSKFile is the absolute path of the file holding the passphrase
	// (8 to 63 printable ASCII characters; a trailing newline is
	// dropped); PSK reads it.
	PSKFile    string
	PSKFilePos Pos
	// FirmwareDeb is the absolute path of Debian's firmware-brcm80211
	// package (scripts/setup.sh downloads it), from which the image gets
	// the Pi boards' brcmfmac firmware.
	FirmwareDeb string
	// Pos is where network.wifi is.
	Pos Pos
}

// PSK reads and checks the passphrase of PSKFile. Errors name the file,
// never its content.
func (w *WiFi) PSK() (string, error) {
	b, err := os.ReadFile(w.PSKFile)
	if err != nil {
		return "", fmt.Errorf("%s: network.wifi.psk_file: %w", w.PSKFilePos, err)
	}
	psk := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if err := spec.CheckWiFiPassphrase(psk); err != nil {
		return "", fmt.Errorf("%s: network.wifi.psk_file: %s: %w", w.PSKFilePos, w.PSKFile, err)
	}
	return psk, nil
}

// Disk holds partition sizes of the image.
type Disk struct {
	BootBytes     int64
	RootSlotBytes int64
}

// Update configures A/B updates.
type Update struct {
	// HealthWindow is the longest a trial boot is watched before it is
	// decided (spec.Management.HealthWindowSeconds says the rule).
	HealthWindow time.Duration
	// Keys are the public key files a signed release must verify with
	// (update.keys; read and checked by Config.ReleaseKeys).
	Keys []KeyFile
	// From is the release tag (or digest) the appliance polls and
	// installs from (update.from: REGISTRY/REPO:TAG), empty when it pulls
	// only when asked (ingot update -from); only with Keys. FromPos is
	// where it is written.
	From    string
	FromPos Pos
	// Check is how often From is checked; 0 means spec's default
	// (spec.DefaultUpdateCheckSeconds).
	Check time.Duration
	// Insecure lets pulls reach a registry over plain HTTP.
	Insecure bool
}

// KeyFile is a file named in ingot.yaml, with where it is named.
type KeyFile struct {
	Path  string // absolute, or relative to the working directory
	Pos   Pos
	Field string // "update.keys[0]"
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
