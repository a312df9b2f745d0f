// Package spec defines the files that tell ingot-init what to do: the
// appliance description /etc/ingot/appliance.json in the root filesystem,
// which the builder writes and stage1 reads, and /etc/ingot/stage0.json in
// the initramfs, which stage0 reads. Builder and guest both use these types
// so the JSON cannot drift between them, and ingot.yaml's decoder checks a
// service with this package's rules (CheckServiceName, CheckHealthURL, ...),
// so a service's defaults, bounds and rules are written only here.
//
// Decoding is strict (unknown fields are errors) because builder and guest
// are always built from the same module: an unknown field is a bug, never a
// newer writer.
package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/ingotdev/ingot/internal/graph"
)

// Paths of the files this package describes.
const (
	AppliancePath = "/etc/ingot/appliance.json"
	Stage0Path    = "/etc/ingot/stage0.json"
)

// Defaults and bounds applied to a Service.
const (
	DefaultLogBufferBytes = 1 << 20
	MaxLogBufferBytes     = 64 << 20
	DefaultGraceSeconds   = 10
	MaxGraceSeconds       = 600
	MaxServiceNameBytes   = 32
)

// Environment variables ingot-init sets for every service; a service may not
// set them itself.
const (
	EnvBuildID = "INGOT_BUILD_ID"
	EnvService = "INGOT_SERVICE"
)

// ReservedServiceNames are used by ingot-init itself: "init" is its own
// log, "log" would collide with the log directory /perm/log.
var ReservedServiceNames = []string{"init", "log"}

// A service name is a file name (/usr/bin/NAME), a user name and a
// directory under /perm, so it follows the strictest of the three.
var serviceNameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)

// CheckServiceName says what is wrong with a service name, if anything.
func CheckServiceName(name string) error {
	switch {
	case len(name) > MaxServiceNameBytes || !serviceNameRE.MatchString(name):
		return fmt.Errorf("%q must be 1 to %d lowercase letters, digits, '-' or '_', starting with a letter", name, MaxServiceNameBytes)
	case slices.Contains(ReservedServiceNames, name):
		return fmt.Errorf("%q is reserved for ingot-init (reserved: %s)", name, strings.Join(ReservedServiceNames, ", "))
	}
	return nil
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// CheckEnvName says what is wrong with the name of a service's environment
// variable, if anything.
func CheckEnvName(name string) error {
	switch {
	case !envNameRE.MatchString(name):
		return errors.New("not an environment variable name (letters, digits, _; not starting with a digit)")
	case name == EnvBuildID || name == EnvService:
		return errors.New("set by ingot for every service; choose another name")
	}
	return nil
}

// Appliance is the content of AppliancePath.
type Appliance struct {
	// Name is the appliance's name from ingot.yaml.
	Name string `json:"name"`
	// BuildID identifies the build; services see it as INGOT_BUILD_ID.
	BuildID string `json:"build_id"`
	// Release orders the builds of an appliance (ingot.yaml release:, 0
	// when unset): the agent refuses a root update whose release is lower
	// than this one unless the client allows the downgrade
	// (mgmt.CheckRelease). At most MaxRelease.
	Release uint64 `json:"release,omitempty"`
	// Arch is the GOARCH the image was built for.
	Arch string `json:"arch"`
	// Target is the ingot.yaml target the image was built for ("vm-arm64",
	// "rpi"); an update builds the same target again.
	Target string `json:"target,omitempty"`
	// Hostname defaults to Name.
	Hostname string `json:"hostname,omitempty"`
	// Services in the order they were declared.
	Services   []Service  `json:"services"`
	Management Management `json:"management"`
	Network    Network    `json:"network"`
	// Metrics is the Prometheus endpoint; Logs the remote syslog.
	Metrics Metrics `json:"metrics,omitzero"`
	Logs    Logs    `json:"logs,omitzero"`
	// Clock is how ingot-init sets the system clock.
	Clock Clock `json:"clock,omitzero"`
	// Modules are kernel modules stage1 loads, in order, before the
	// network: paths relative to ModulesDir/<kernel release> (a Pi's
	// Wi-Fi driver; VMs load theirs in stage0).
	Modules []string `json:"modules,omitempty"`

	// Debug is the debug container (ingot.yaml's debug:), started only by
	// `ingot shell`; nil without one (debug.go).
	Debug *Container `json:"debug,omitempty"`
	// ReleaseKeys are the paths in the root of the public keys a signed
	// release must verify with (ingot.yaml update: {keys: [...]}), each
	// ReleaseKeyPath of the key; empty when none are configured.
	ReleaseKeys []string `json:"release_keys,omitempty"`
	// UpdateFrom is the release the appliance polls (ingot.yaml
	// update.from): REGISTRY/REPO:TAG or @DIGEST (CheckUpdateFrom); only
	// with ReleaseKeys. Empty: it pulls only when asked (update.go).
	UpdateFrom string `json:"update_from,omitempty"`
	// UpdateCheckSeconds is how often UpdateFrom is checked; 0 means
	// DefaultUpdateCheckSeconds (UpdateCheckInterval).
	UpdateCheckSeconds int `json:"update_check_seconds,omitempty"`
	// UpdateInsecure lets pulls use a registry over plain HTTP.
	UpdateInsecure bool `json:"update_insecure,omitempty"`
}

// ReleaseKeysDir holds the release signing public keys of an image
// (packer/format/releasekey files), named by ReleaseKeyPath. Keys are
// public: the files are 0644, the directory 0755, owned by root.
const ReleaseKeysDir = "/etc/ingot/release-keys"

// MaxReleaseKeys bounds Appliance.ReleaseKeys.
const MaxReleaseKeys = 16

// ReleaseKeyPath is the path in the root of the public key with the given
// fingerprint (releasekey.Fingerprint: 64 lowercase hex digits).
func ReleaseKeyPath(fingerprint string) string {
	return ReleaseKeysDir + "/" + fingerprint + ".pub"
}

var releaseKeyPathRE = regexp.MustCompile(`^` + regexp.QuoteMeta(ReleaseKeysDir) + `/[0-9a-f]{64}\.pub$`)

// MaxRelease bounds Appliance.Release so that it survives JSON readers that
// hold numbers as float64 (2^53 - 1).
const MaxRelease = 1<<53 - 1

// Restart is a service's restart policy.
type Restart string

// Restart policies. The empty policy means RestartAlways.
const (
	RestartAlways    Restart = "always"
	RestartOnFailure Restart = "on-failure"
	RestartNever     Restart = "never"
)

// Validate checks that r is a restart policy or empty.
func (r Restart) Validate() error {
	switch r {
	case "", RestartAlways, RestartOnFailure, RestartNever:
		return nil
	}
	return fmt.Errorf("%q is not one of always, on-failure, never", r)
}

// Service is one supervised program.
type Service struct {
	// Name is unique among the services; it names the log, the working
	// directory /perm/<name> and the console prefix.
	Name string `json:"name"`
	// Path is the absolute path of the executable in the root filesystem.
	Path string `json:"path"`
	// Args are the arguments after argv[0] (which is Path).
	Args []string          `json:"args,omitempty"`
	Env  map[string]string `json:"env,omitempty"`
	// Restart is "always" (the default), "on-failure" or "never".
	Restart Restart `json:"restart,omitempty"`
	// After names services that must have started before this one starts.
	After []string `json:"after,omitempty"`
	// User is who the service runs as: "" (the default) or "nobody" for
	// uid/gid 65534, "root" for uid/gid 0 (ingot-init's own credentials),
	// "UID" or "UID:GID" with numbers. There is no /etc/passwd to resolve
	// other names.
	User string `json:"user,omitempty"`
	// NeedsPerm holds the service back when /perm is not mounted.
	NeedsPerm bool `json:"needs_perm,omitempty"`
	// LogBufferBytes bounds the in-memory log; 0 means DefaultLogBufferBytes.
	LogBufferBytes int `json:"log_buffer_bytes,omitempty"`
	// GraceSeconds is how long a stop waits after SIGTERM before SIGKILL;
	// 0 means DefaultGraceSeconds.
	GraceSeconds int `json:"grace_seconds,omitempty"`
	// Condition, when set, decides at boot whether stage1 runs the service
	// at all; the builder uses it for the system services it adds.
	Condition Condition `json:"condition,omitempty"`
	// Resources are the service's cgroup v2 limits.
	Resources Resources `json:"resources,omitzero"`
	// Container is set for an image service; Path is then "/init" and
	// Args is [ContainerSubcommand, Name].
	Container *Container `json:"container,omitempty"`
	// Health is the service's health check, if it has one.
	Health *Health `json:"health,omitempty"`
	// WaitForClock holds the service's first start until ingot-init's NTP
	// client has set the clock (Clock.NTP must name a server).
	WaitForClock bool `json:"wait_for_clock,omitempty"`
}

// Condition is a boot-time condition for running a service.
type Condition string

// Conditions.
const (
	// ConditionNoStaticNetwork runs the service only when no static
	// address is configured, neither by ingot.ip= on the kernel command
	// line nor by Network: the DHCP client must not fight a static address.
	ConditionNoStaticNetwork Condition = "no-static-network"
)

// DHCPServiceName is the name of the DHCP client the builder adds as a
// system service when the network is configured by DHCP.
const DHCPServiceName = "dhcp"

// Management configures the management agent.
type Management struct {
	// VsockPort is the AF_VSOCK port the agent listens on, serving TLS
	// with the key at VsockKeyPath; 0 disables vsock.
	VsockPort uint32 `json:"vsock_port,omitempty"`
	// TokenSHA256 is the lowercase hex SHA-256 of the bearer token.
	TokenSHA256 string `json:"token_sha256,omitempty"`
	// TCP is a listen address such as ":7443"; empty disables TCP. The
	// listener speaks TLS with the certificate at TLSCertPath.
	TCP string `json:"tcp,omitempty"`
	// TLSCertSHA256 is the pin of that certificate (lowercase hex SHA-256
	// of its DER encoding); set with TCP.
	TLSCertSHA256 string `json:"tls_cert_sha256,omitempty"`
	// HealthWindowSeconds is the longest a trial boot is watched: at its
	// end, every restart: always service must still be up (and healthy,
	// with a health check) for the trial to be confirmed; it is confirmed
	// earlier under TrialMinWindow and TrialPasses. 0 means
	// DefaultHealthWindowSeconds.
	HealthWindowSeconds int `json:"health_window_seconds,omitempty"`
}

// SBOMPath is the image's SPDX 2.3 JSON software bill of materials: the
// Go modules of every Go service and the digest of every OCI image.
const SBOMPath = "/etc/ingot/sbom.spdx.json"

// Where the builder puts the management agent's TLS certificate and key
// (PEM), and the key it serves TLS with on vsock (certpin.TokenKey, in
// every image with a vsock port). The directory is readable by root only.
const (
	TLSDir       = "/etc/ingot/tls"
	TLSCertPath  = TLSDir + "/cert.pem"
	TLSKeyPath   = TLSDir + "/key.pem"
	VsockKeyPath = TLSDir + "/vsock-key.pem"
)

// DefaultHealthWindowSeconds is the health window of a trial boot when
// appliance.json gives none.
const DefaultHealthWindowSeconds = 30

// A trial boot is confirmed before its health window ends once every
// restart: always service has stayed up for TrialMinWindow (the whole
// window, if that is shorter) and each of their health checks has passed
// TrialPasses probes in a row: at the default interval the third pass
// comes 11 s after the start, so the two rules end together. A crash
// loop restarts within the first seconds and a failing check turns
// unhealthy at once, so waiting out the rest of the window adds time
// more than proof.
const (
	TrialMinWindow = 10 * time.Second
	TrialPasses    = 3
)

// Network is a static network configuration. The zero value configures
// nothing (a DHCP service, or the ingot.ip kernel parameter, does it).
type Network struct {
	// Interface defaults to the first interface that is not loopback.
	Interface string `json:"interface,omitempty"`
	// Address is the interface address with its prefix, e.g. 10.0.2.15/24.
	Address netip.Prefix `json:"address,omitzero"`
	// Gateway is the default route's next hop; zero means no default route.
	Gateway netip.Addr   `json:"gateway,omitzero"`
	DNS     []netip.Addr `json:"dns,omitempty"`
}

// Configured reports whether n asks for a static address.
func (n Network) Configured() bool { return n.Address.IsValid() }

// UnmarshalJSON decodes the addresses itself so that a bad one is reported
// with its field name; encoding/json would only pass on netip's message.
func (n *Network) UnmarshalJSON(b []byte) error {
	var raw struct {
		Interface string   `json:"interface"`
		Address   string   `json:"address"`
		Gateway   string   `json:"gateway"`
		DNS       []string `json:"dns"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	out := Network{Interface: raw.Interface}
	var err error
	if raw.Address != "" {
		if out.Address, err = netip.ParsePrefix(raw.Address); err != nil {
			return fmt.Errorf("network: address: %w", err)
		}
	}
	if raw.Gateway != "" {
		if out.Gateway, err = netip.ParseAddr(raw.Gateway); err != nil {
			return fmt.Errorf("network: gateway: %w", err)
		}
	}
	for i, d := range raw.DNS {
		a, err := netip.ParseAddr(d)
		if err != nil {
			return fmt.Errorf("network: dns[%d]: %w", i, err)
		}
		out.DNS = append(out.DNS, a)
	}
	*n = out
	return nil
}

// Stage0 is the content of Stage0Path.
type Stage0 struct {
	// Modules are absolute paths of kernel modules, in load order.
	Modules []string `json:"modules"`
	// OnDemand maps those of Modules that only some machines need (the
	// drivers of other hypervisors and clouds) to the device alias
	// patterns (modinfo alias=, as modules.alias has them) that call for
	// them: stage0 loads such a module only while a device in
	// /sys/bus/*/devices has a matching modalias, or when the root disk
	// does not appear without it. The others load on every boot.
	OnDemand map[string][]string `json:"on_demand,omitempty"`
}

// Load reads and validates the appliance description at path.
func Load(path string) (*Appliance, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("spec: %w", err)
	}
	a, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("spec: %s: %w", path, err)
	}
	return a, nil
}

// Parse decodes and validates an appliance description.
func Parse(data []byte) (*Appliance, error) {
	var a Appliance
	if err := decodeStrict(data, &a); err != nil {
		return nil, err
	}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	return &a, nil
}

// Marshal encodes a as indented JSON with a trailing newline. The output is
// deterministic (encoding/json sorts map keys).
func (a *Appliance) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("spec: %w", err)
	}
	return append(b, '\n'), nil
}

// LoadStage0 reads and validates the stage0 configuration at path.
func LoadStage0(path string) (Stage0, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Stage0{}, fmt.Errorf("spec: %w", err)
	}
	var s Stage0
	if err := decodeStrict(b, &s); err != nil {
		return Stage0{}, fmt.Errorf("spec: %s: %w", path, err)
	}
	listed := map[string]bool{}
	for i, m := range s.Modules {
		if !isAbsClean(m) {
			return Stage0{}, fmt.Errorf("spec: %s: modules[%d]: %q is not a clean absolute path", path, i, m)
		}
		listed[m] = true
	}
	for m, patterns := range s.OnDemand {
		if !listed[m] {
			return Stage0{}, fmt.Errorf("spec: %s: on_demand: %q is not one of modules", path, m)
		}
		for i, p := range patterns {
			if p == "" {
				return Stage0{}, fmt.Errorf("spec: %s: on_demand[%q][%d]: empty pattern", path, m, i)
			}
		}
	}
	return s, nil
}

func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("offset %d: unexpected end of JSON", len(data))
		}
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return fmt.Errorf("offset %d: %w", se.Offset, err)
		case errors.As(err, &te):
			return fmt.Errorf("field %s: offset %d: %w", te.Field, te.Offset, err)
		}
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("offset %d: data after the JSON object", dec.InputOffset())
	}
	return nil
}

var (
	archRE      = regexp.MustCompile(`^[a-z0-9]+$`)
	hostLabelRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
	tokenHashRE = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// Validate checks every field; the error names the first bad one.
func (a *Appliance) Validate() error {
	if a.Name == "" || strings.ContainsAny(a.Name, "/\x00") || hasControl(a.Name) {
		return fmt.Errorf("name: %q is empty or has '/' or control characters", a.Name)
	}
	if a.BuildID == "" || hasControl(a.BuildID) {
		return fmt.Errorf("build_id: %q is empty or has control characters", a.BuildID)
	}
	if a.Release > MaxRelease {
		return fmt.Errorf("release: %d is above %d", a.Release, uint64(MaxRelease))
	}
	if !archRE.MatchString(a.Arch) {
		return fmt.Errorf("arch: %q is not a GOARCH", a.Arch)
	}
	if h := a.EffectiveHostname(); !validHostname(h) {
		field := "hostname"
		if a.Hostname == "" {
			field = "name (the default hostname)"
		}
		return fmt.Errorf("%s: %q is not a valid hostname", field, h)
	}
	if len(a.ReleaseKeys) > MaxReleaseKeys {
		return fmt.Errorf("release_keys: %d keys, at most %d", len(a.ReleaseKeys), MaxReleaseKeys)
	}
	for i, p := range a.ReleaseKeys {
		if !releaseKeyPathRE.MatchString(p) {
			return fmt.Errorf("release_keys[%d]: %q is not %s", i, p, ReleaseKeyPath("<64 hex digits>"))
		}
		if slices.Contains(a.ReleaseKeys[:i], p) {
			return fmt.Errorf("release_keys[%d]: %s is listed twice", i, p)
		}
	}
	if err := a.validateUpdate(); err != nil {
		return err
	}
	index := make(map[string]int, len(a.Services))
	for i, s := range a.Services {
		if err := s.Validate(); err != nil {
			return fmt.Errorf("services[%d] %q: %w", i, s.Name, err)
		}
		if j, dup := index[s.Name]; dup {
			return fmt.Errorf("services[%d] %q: name also used by services[%d]", i, s.Name, j)
		}
		index[s.Name] = i
	}
	names := make([]string, len(a.Services))
	for i, s := range a.Services {
		names[i] = s.Name
	}
	for i, s := range a.Services {
		for j := 0; s.Container != nil && j < len(s.Container.Volumes); j++ {
			if err := CheckVolumeSource(s.Name, names, s.Container.Volumes[j].Source); err != nil {
				return fmt.Errorf("services[%d] %q: container: volumes[%d]: %w", i, s.Name, j, err)
			}
		}
		for _, dep := range s.After {
			if _, ok := index[dep]; !ok {
				return fmt.Errorf("services[%d] %q: after: unknown service %q", i, s.Name, dep)
			}
		}
	}
	if cycle := AfterCycle(a.Services); cycle != nil {
		return fmt.Errorf("services: after: cycle %s", strings.Join(cycle, " -> "))
	}
	if err := a.validateDebug(); err != nil {
		return err
	}
	if err := a.Management.Validate(); err != nil {
		return fmt.Errorf("management: %w", err)
	}
	if err := a.Network.Validate(); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	if err := a.Metrics.Validate(); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	if err := a.Logs.Validate(); err != nil {
		return fmt.Errorf("logs: %w", err)
	}
	if err := a.Clock.Validate(); err != nil {
		return fmt.Errorf("clock: %w", err)
	}
	for i, m := range a.Modules {
		if err := checkModule(m); err != nil {
			return fmt.Errorf("modules[%d]: %w", i, err)
		}
	}
	for i, s := range a.Services {
		if s.WaitForClock && len(a.Clock.NTP) == 0 {
			return fmt.Errorf("services[%d] %q: wait_for_clock: clock.ntp names no server, so the clock is never synced and the service would never start", i, s.Name)
		}
	}
	return nil
}

// EffectiveHostname is Hostname, or Name when Hostname is empty.
func (a *Appliance) EffectiveHostname() string {
	if a.Hostname != "" {
		return a.Hostname
	}
	return a.Name
}

// Validate checks one service on its own (After names are checked by
// Appliance.Validate, which knows the other services).
func (s Service) Validate() error {
	if err := CheckServiceName(s.Name); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	if !isAbsClean(s.Path) {
		return fmt.Errorf("path: %q is not a clean absolute path", s.Path)
	}
	for i, arg := range s.Args {
		if strings.ContainsRune(arg, 0) {
			return fmt.Errorf("args[%d]: contains a NUL byte", i)
		}
	}
	for k, v := range s.Env {
		if err := CheckEnvName(k); err != nil {
			return fmt.Errorf("env: key %q: %w", k, err)
		}
		if strings.ContainsRune(v, 0) {
			return fmt.Errorf("env: %s: value contains a NUL byte", k)
		}
	}
	if err := s.Restart.Validate(); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	seen := make(map[string]bool, len(s.After))
	for _, dep := range s.After {
		if dep == s.Name {
			return fmt.Errorf("after: names the service itself")
		}
		if seen[dep] {
			return fmt.Errorf("after: %q listed twice", dep)
		}
		seen[dep] = true
	}
	if _, err := s.Credential(); err != nil {
		return err
	}
	if s.LogBufferBytes < 0 || s.LogBufferBytes > MaxLogBufferBytes {
		return fmt.Errorf("log_buffer_bytes: %d outside 0..%d", s.LogBufferBytes, MaxLogBufferBytes)
	}
	if s.GraceSeconds < 0 || s.GraceSeconds > MaxGraceSeconds {
		return fmt.Errorf("grace_seconds: %d outside 0..%d", s.GraceSeconds, MaxGraceSeconds)
	}
	switch s.Condition {
	case "", ConditionNoStaticNetwork:
	default:
		return fmt.Errorf("condition: %q: want %q or none", s.Condition, ConditionNoStaticNetwork)
	}
	if err := s.Resources.Validate(); err != nil {
		return err
	}
	if s.Health != nil {
		if err := s.Health.Validate(); err != nil {
			return err
		}
		if s.Container != nil && s.Container.NetworkNamespace {
			return fmt.Errorf("health: the container has its own network namespace, which init's probes cannot reach")
		}
	}
	if s.Container != nil {
		if err := s.Container.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// RestartPolicy returns Restart with the default applied.
func (s Service) RestartPolicy() Restart {
	if s.Restart == "" {
		return RestartAlways
	}
	return s.Restart
}

// LogBuffer returns the in-memory log size with the default applied.
func (s Service) LogBuffer() int {
	if s.LogBufferBytes == 0 {
		return DefaultLogBufferBytes
	}
	return s.LogBufferBytes
}

// Grace returns the stop grace period with the default applied.
func (s Service) Grace() time.Duration {
	if s.GraceSeconds == 0 {
		return DefaultGraceSeconds * time.Second
	}
	return time.Duration(s.GraceSeconds) * time.Second
}

// Validate checks the management settings.
func (m Management) Validate() error {
	if m.TokenSHA256 != "" && !tokenHashRE.MatchString(m.TokenSHA256) {
		return fmt.Errorf("token_sha256: want 64 lowercase hex digits")
	}
	if m.HealthWindowSeconds < 0 {
		return fmt.Errorf("health_window_seconds: %d is negative", m.HealthWindowSeconds)
	}
	if m.TCP != "" && !tokenHashRE.MatchString(m.TLSCertSHA256) {
		return fmt.Errorf("tls_cert_sha256: tcp is set, so want the certificate's 64 lowercase hex digit SHA-256")
	}
	return nil
}

// Validate checks the network settings.
func (n Network) Validate() error {
	if n.Interface != "" && (len(n.Interface) > 15 || strings.ContainsAny(n.Interface, "/ \x00")) {
		return fmt.Errorf("interface: %q is not an interface name", n.Interface)
	}
	if !n.Address.IsValid() {
		if n.Gateway.IsValid() || len(n.DNS) > 0 {
			return fmt.Errorf("gateway and dns need an address")
		}
		return nil
	}
	if n.Address.Addr().Zone() != "" {
		return fmt.Errorf("address: %s: zones are not supported", n.Address)
	}
	if n.Gateway.IsValid() && n.Gateway.Is4() != n.Address.Addr().Is4() {
		return fmt.Errorf("gateway: %s is not of the address family of %s", n.Gateway, n.Address)
	}
	for i, d := range n.DNS {
		if !d.IsValid() {
			return fmt.Errorf("dns[%d]: not an address", i)
		}
	}
	return nil
}

// AfterCycle returns the first cycle of after: among services, its names
// with the first repeated at the end, or nil. Every after: entry must name
// one of services.
func AfterCycle(services []Service) []string {
	after := make(map[string][]string, len(services))
	names := make([]string, len(services))
	for i, s := range services {
		names[i] = s.Name
		after[s.Name] = s.After
	}
	_, cycle, _ := graph.Order(names, func(n string) ([]string, error) { return after[n], nil })
	return cycle
}

func validHostname(h string) bool {
	if len(h) == 0 || len(h) > 64 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if !hostLabelRE.MatchString(label) {
			return false
		}
	}
	return true
}

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return true
		}
	}
	return false
}

func isAbsClean(p string) bool {
	return strings.HasPrefix(p, "/") && path.Clean(p) == p && !strings.ContainsRune(p, 0)
}
