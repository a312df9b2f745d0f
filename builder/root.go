package builder

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/packer/format/releasekey"
	"github.com/ingotdev/ingot/packer/format/spec"
	"github.com/ingotdev/ingot/packer/rootfs"
	"github.com/ingotdev/ingot/packer/rpiboot"
)

// Paths in the root filesystem.
const (
	InitPath   = "/init"
	ServiceDir = "/usr/bin"
	// SystemDir holds the programs of system services, apart from the
	// user's services so their names cannot collide.
	SystemDir     = "/usr/lib/ingot"
	DHCPPath      = SystemDir + "/dhcp"
	WiFiPath      = SystemDir + "/wifi"
	BuildInfoPath = "/etc/ingot/build.json"
	// Stage0Path names ingot-stage0 in build.json and the SBOM: /init in
	// the initramfs, not a file of the root.
	Stage0Path = "initramfs:/init"
	// ResolvConfTarget is where /etc/resolv.conf points: the root is
	// read-only, so stage1 (or DHCP) writes the real file on the /run tmpfs.
	ResolvConfTarget = "/run/resolv.conf"
)

// applianceJSONMode is the mode of spec.AppliancePath: readable by root
// alone, since it holds the management token's hash.
const applianceJSONMode = 0o600

// buildIDFormat versions what goes into the build ID hash; change it when
// the root layout changes so old and new builds never share an ID.
const buildIDFormat = "ingot-build-id/3"

// buildIDHexDigits is the length of a build ID: 64 bits, plenty to tell
// builds of one appliance apart.
const buildIDHexDigits = 16

// BuildInfo is the content of BuildInfoPath: what went into the build,
// without any path or time of the build machine.
type BuildInfo struct {
	BuildID         string `json:"build_id"`
	Name            string `json:"name"`
	Target          string `json:"target"`
	Arch            string `json:"arch"`
	SourceDateEpoch int64  `json:"source_date_epoch"`
	GoVersion       string `json:"go_version,omitempty"`
	Kernel          Kernel `json:"kernel"`
	// EFILoader is the package the UEFI loader (systemd-boot) of a VM
	// image comes from.
	EFILoader *Kernel  `json:"efi_loader,omitempty"`
	Binaries  []Binary `json:"binaries"`
	// Images are the image services with their resolved digests.
	Images []ImageService `json:"images,omitempty"`
}

// Kernel describes the kernel in BuildInfo.
type Kernel struct {
	// Source is "debian:FILE.deb" (base name only) or "gomod:MODULE@VERSION".
	Source string `json:"source"`
	SHA256 string `json:"sha256,omitempty"`
}

// mountPoints are the directories stage0 and stage1 mount on; the root is
// read-only, so they must exist in the image.
var mountPoints = []struct {
	path string
	mode uint32
}{
	{"/dev", 0o755},
	{spec.ModulesDir, 0o755},
	{"/oci", 0o755},
	{"/perm", 0o755},
	{"/proc", 0o555},
	{"/run", 0o755},
	{"/sys", 0o555},
	{"/tmp", 0o1777},
}

// build is one target's build once everything is compiled and pulled:
// what the root filesystem and appliance.json are made of.
type build struct {
	cfg    *config.Config
	target config.Target
	// init is ingot-init's compile, stage0 ingot-stage0's; programs are
	// the others, each the package of one or more services or the DHCP
	// client.
	init     *job
	stage0   *job // nil for a Raspberry Pi
	programs []*job
	// images are the image services by name.
	images map[string]*ImageService
	// tokenHash is the SHA-256 of the management token; vsockKeyPEM is
	// the agent's vsock key derived from it (certpin.TokenKey), nil
	// without vsock; tls is the TCP listener's identity, nil without one.
	tokenHash string
	// metricsTokenHash is the SHA-256 of the metrics token
	// (certpin.MetricsToken), for spec.Metrics.TokenSHA256.
	metricsTokenHash string
	vsockKeyPEM      []byte
	tls              *tlsIdentity
	// logsCA is the syslog receiver's CA (PEM), nil without one.
	logsCA []byte
	// wifiPSK is network.wifi's passphrase, for a Pi image with Wi-Fi;
	// wifiDigest covers it and the firmware package, for the build ID.
	wifiPSK, wifiDigest string
	// releaseKeys are update.keys, checked: into spec.ReleaseKeysDir.
	releaseKeys []config.ReleaseKey
}

// program returns the compile of a service or system service, nil for
// an image service.
func (b *build) program(service string) *job {
	for _, j := range b.programs {
		if slices.Contains(j.services, service) {
			return j
		}
	}
	return nil
}

// assemble fills in r's binaries, build ID, appliance description and
// root filesystem.
func (b *build) assemble(r *Result) error {
	app := b.appliance()
	r.Binaries = append(r.Binaries, Binary{Package: InitPackage, Path: InitPath, SHA256: b.init.sum, Bytes: int64(len(b.init.data))})
	if b.stage0 != nil {
		r.Binaries = append(r.Binaries, Binary{Package: Stage0Package, Path: Stage0Path, SHA256: b.stage0.sum, Bytes: int64(len(b.stage0.data))})
		r.Stage0 = rootfs.Bytes(b.stage0.data)
	}
	for _, s := range b.cfg.Services {
		if j := b.program(s.Name); j != nil {
			r.Binaries = append(r.Binaries, Binary{Service: s.Name, Package: s.Go.String(), Path: servicePath(s.Name),
				SHA256: j.sum, Bytes: int64(len(j.data))})
		}
	}
	if j := b.program(spec.DHCPServiceName); j != nil && usesDHCP(b.cfg) {
		r.Binaries = append(r.Binaries, Binary{Service: spec.DHCPServiceName, Package: DHCPPackage, Path: DHCPPath,
			SHA256: j.sum, Bytes: int64(len(j.data))})
	}
	if j := b.program(spec.WiFiServiceName); j != nil && usesWiFi(b.cfg, b.target) {
		r.Binaries = append(r.Binaries, Binary{Service: spec.WiFiServiceName, Package: WiFiPackage, Path: WiFiPath,
			SHA256: j.sum, Bytes: int64(len(j.data))})
	}
	r.Init = rootfs.Bytes(b.init.data)
	r.GoVersion = b.init.goVersion

	id, err := buildID(r, b.cfg, app, b.wifiDigest)
	if err != nil {
		return err
	}
	r.BuildID = id
	app.BuildID = id
	if err := app.Validate(); err != nil {
		return fmt.Errorf("builder: appliance.json: %w", err)
	}
	r.Appliance = app
	appJSON, err := app.Marshal()
	if err != nil {
		return fmt.Errorf("builder: %w", err)
	}
	info := BuildInfo{BuildID: id, Name: b.cfg.Name, Target: string(b.target), Arch: r.Arch,
		SourceDateEpoch: r.ModTime, GoVersion: r.GoVersion, Kernel: kernelInfo(r), EFILoader: efiLoaderInfo(r),
		Binaries: r.Binaries, Images: r.Images}
	infoJSON, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return fmt.Errorf("builder: %w", err)
	}
	bins := map[string][]byte{InitPath: b.init.data}
	if b.stage0 != nil {
		bins[Stage0Path] = b.stage0.data
	}
	for _, j := range b.programs {
		for _, s := range j.services {
			p := servicePath(s)
			if s == spec.DHCPServiceName && usesDHCP(b.cfg) {
				p = DHCPPath
			}
			if s == spec.WiFiServiceName && usesWiFi(b.cfg, b.target) {
				p = WiFiPath
			}
			bins[p] = j.data
		}
	}
	sbomDoc, err := sbomJSON(r, bins, r.Images)
	if err != nil {
		return err
	}
	r.Root, err = b.rootTree(r, appJSON, append(infoJSON, '\n'), sbomDoc)
	return err
}

func servicePath(name string) string { return ServiceDir + "/" + name }

// appliance is the content of appliance.json, but for the build ID.
func (b *build) appliance() *spec.Appliance {
	cfg, target := b.cfg, b.target
	app := &spec.Appliance{
		Name:     cfg.Name,
		Release:  cfg.Release,
		Arch:     target.Arch(),
		Target:   string(target),
		Hostname: cfg.Hostname,
		Management: spec.Management{
			TokenSHA256: b.tokenHash,
			TCP:         cfg.ManagementTCP(target),
			// Rounded up: a sub-second window must not become "default".
			HealthWindowSeconds: int((cfg.Update.HealthWindow + time.Second - 1) / time.Second),
		},
	}
	if b.tls != nil {
		app.Management.TLSCertSHA256 = b.tls.pin
	}
	for _, k := range b.releaseKeys {
		app.ReleaseKeys = append(app.ReleaseKeys, spec.ReleaseKeyPath(k.Fingerprint))
	}
	app.UpdateFrom, app.UpdateInsecure = cfg.Update.From, cfg.Update.Insecure
	app.UpdateCheckSeconds = int(cfg.Update.Check / time.Second)
	if target.IsVM() {
		app.Management.VsockPort = cfg.Management.VsockPort
	}
	app.Clock = spec.Clock{NTP: slices.Clone(cfg.Clock.NTP), Defaulted: cfg.Clock.Defaulted}
	if cfg.Network.Mode == config.NetworkStatic {
		app.Network = spec.Network{Address: cfg.Network.Address, Gateway: cfg.Network.Gateway, DNS: cfg.Network.DNS}
	}
	app.Metrics, app.Logs = cfg.Metrics, cfg.Logs.Logs
	if app.Metrics.Listen != "" && app.Metrics.Auth != spec.MetricsAuthNone {
		app.Metrics.TokenSHA256 = b.metricsTokenHash
	}
	for _, s := range cfg.Services {
		app.Services = append(app.Services, b.service(s))
	}
	if usesDHCP(cfg) {
		app.Services = append(app.Services, dhcpService())
	}
	if usesWiFi(cfg, target) {
		app.Services = append(app.Services, wifiServices(cfg.Network.WiFi.SSID)...)
		app.Modules = slices.Clone(rpiboot.WiFiModules)
	}
	app.Debug = b.debugContainer()
	return app
}

// wifiServices are the Wi-Fi client on wlan0 and a second DHCP client
// there (gokrazy's serves one interface). The SSID is no secret; the
// passphrase stays in spec.WiFiPSKPath.
func wifiServices(ssid string) []spec.Service {
	return []spec.Service{{
		Name:    spec.WiFiServiceName,
		Path:    WiFiPath,
		Args:    []string{"-interface", spec.WiFiInterface, "-ssid", ssid, "-psk-file", spec.WiFiPSKPath},
		Restart: spec.RestartAlways,
		User:    "root",
	}, {
		Name:      spec.WiFiDHCPServiceName,
		Path:      DHCPPath,
		Args:      []string{"-interface", spec.WiFiInterface},
		Restart:   spec.RestartAlways,
		User:      "root",
		Condition: spec.ConditionNoStaticNetwork,
	}}
}

// service is the supervisor's view of s. A Go service runs its binary. An
// image service runs ingot-init re-executed as the container launcher, as
// root (it drops to the container's user itself after setting up
// namespaces); its args, env and user are in its container.
func (b *build) service(s config.Service) spec.Service {
	ss := s.Service
	is, ok := b.images[s.Name]
	if !ok {
		ss.Path = servicePath(s.Name)
		return ss
	}
	c := is.container
	ss.Path, ss.Args, ss.Env, ss.User = InitPath, []string{spec.ContainerSubcommand, s.Name}, nil, "root"
	ss.NeedsPerm = ss.NeedsPerm || len(c.Volumes) > 0
	ss.Container = &c
	return ss
}

// dhcpService runs gokrazy's DHCP client on eth0 (the first NIC: the kernel
// names NICs itself, there is no udev). It needs root for raw sockets and
// netlink, and stage1 skips it when a static address is configured. It
// writes /tmp/resolv.conf, where stage1 then points /run/resolv.conf.
func dhcpService() spec.Service {
	return spec.Service{
		Name:      spec.DHCPServiceName,
		Path:      DHCPPath,
		Args:      []string{"-interface", "eth0"},
		Restart:   spec.RestartAlways,
		User:      "root",
		Condition: spec.ConditionNoStaticNetwork,
	}
}

func kernelInfo(r *Result) Kernel {
	if r.Kernel.Kind == config.KernelDebian {
		return Kernel{Source: "debian:" + filepath.Base(r.Kernel.Path), SHA256: r.KernelSHA256}
	}
	return Kernel{Source: r.Kernel.String()}
}

// efiLoaderInfo describes the systemd-boot-efi package of a VM image, or
// nil.
func efiLoaderInfo(r *Result) *Kernel {
	if r.EFILoaderDeb == "" {
		return nil
	}
	return &Kernel{Source: "debian:" + filepath.Base(r.EFILoaderDeb), SHA256: r.EFILoaderSHA256}
}

// buildID hashes every input of the image: the appliance description (all
// of the config that reaches the guest), the binaries, the kernel, the
// UEFI loader, the disk sizes and the epoch.
func buildID(r *Result, cfg *config.Config, app *spec.Appliance, wifiDigest string) (string, error) {
	appJSON, err := json.Marshal(app)
	if err != nil {
		return "", fmt.Errorf("builder: build id: %w", err)
	}
	in := struct {
		Format       string
		Target       config.Target
		Epoch        int64
		Appliance    json.RawMessage
		Binaries     []Binary
		Kernel       Kernel
		EFILoader    *Kernel
		Disk         [3]int64
		HealthWindow int64
		// WiFi covers what a Pi's Wi-Fi adds beyond appliance.json: the
		// passphrase and the firmware package (their SHA-256).
		WiFi string `json:",omitempty"`
	}{buildIDFormat, r.Target, r.ModTime, appJSON, r.Binaries, kernelInfo(r), efiLoaderInfo(r),
		[3]int64{r.BootBytes, r.RootSlotBytes, r.PermBytes}, int64(cfg.Update.HealthWindow), wifiDigest}
	b, err := json.Marshal(in)
	if err != nil {
		return "", fmt.Errorf("builder: build id: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:buildIDHexDigits], nil
}

// rootTree lays out the root filesystem with the given appliance.json,
// build.json and SBOM.
func (b *build) rootTree(r *Result, appJSON, infoJSON, sbomJSON []byte) (*rootfs.Tree, error) {
	cfg := b.cfg
	t := rootfs.New(r.ModTime)
	var firstErr error
	dir := func(p string, mode uint32) {
		if firstErr == nil {
			firstErr = t.MkdirAll(p, mode, r.ModTime)
		}
	}
	add := func(p string, e rootfs.Entry) {
		if firstErr == nil {
			e.ModTime = r.ModTime
			firstErr = t.Add(p, e)
		}
	}
	file := func(p string, mode uint32, data []byte) {
		add(p, rootfs.Entry{Kind: rootfs.KindFile, Mode: mode, Size: int64(len(data)), Content: rootfs.Bytes(data)})
	}
	for _, m := range mountPoints {
		dir(m.path, m.mode)
	}
	dir("/etc/ingot", 0o755)
	dir(ServiceDir, 0o755)
	if j := b.program(spec.DHCPServiceName); j != nil && usesDHCP(cfg) {
		dir(SystemDir, 0o755)
		file(DHCPPath, 0o755, j.data)
	}
	if j := b.program(spec.WiFiServiceName); j != nil && usesWiFi(cfg, b.target) {
		dir(SystemDir, 0o755)
		file(WiFiPath, 0o755, j.data)
		// Root's alone: the Wi-Fi client runs as root, no service else
		// may read the passphrase.
		file(spec.WiFiPSKPath, 0o600, []byte(b.wifiPSK+"\n"))
	}

	file(InitPath, 0o755, r.Init)
	// Services built from one package share one file.
	first := map[*job]string{}
	for _, s := range cfg.Services {
		j, p := b.program(s.Name), servicePath(s.Name)
		if j == nil {
			continue // an image service
		}
		if other, ok := first[j]; ok {
			add(p, rootfs.Entry{Kind: rootfs.KindHardlink, Target: other})
			continue
		}
		first[j] = p
		file(p, 0o755, j.data)
	}

	// Its readers are stage1 and the container launcher, both root.
	file(spec.AppliancePath, applianceJSONMode, appJSON)
	if b.tls != nil || b.vsockKeyPEM != nil {
		// Root only: the keys are the appliance's identity.
		dir(spec.TLSDir, 0o700)
	}
	if b.tls != nil {
		file(spec.TLSCertPath, 0o644, b.tls.certPEM)
		file(spec.TLSKeyPath, 0o600, b.tls.keyPEM)
	}
	if b.vsockKeyPEM != nil {
		file(spec.VsockKeyPath, 0o600, b.vsockKeyPEM)
	}
	if b.logsCA != nil {
		file(spec.LogsCAPath, 0o644, b.logsCA)
	}
	if len(b.releaseKeys) > 0 {
		dir(spec.ReleaseKeysDir, 0o755)
	}
	for _, k := range b.releaseKeys {
		// Written again from the key: the image holds one canonical
		// file per key, whatever the source file looked like.
		data, err := releasekey.Marshal(k.Key)
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("builder: %s: %w", k.File.Path, err)
		}
		file(spec.ReleaseKeyPath(k.Fingerprint), 0o644, data)
	}
	file(BuildInfoPath, 0o644, infoJSON)
	file(spec.SBOMPath, 0o644, sbomJSON)
	if firstErr == nil {
		firstErr = addImages(t, cfg, b.images, r.ModTime)
	}
	add("/etc/resolv.conf", rootfs.Entry{Kind: rootfs.KindSymlink, Mode: 0o777, Target: ResolvConfTarget})
	file("/etc/hostname", 0o644, []byte(cfg.Hostname+"\n"))
	file("/etc/hosts", 0o644, []byte(hosts(cfg.Hostname)))
	file("/etc/passwd", 0o644, []byte(
		"root:x:0:0:root:/root:/usr/sbin/nologin\n"+
			"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"))
	file("/etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
	if firstErr != nil {
		return nil, fmt.Errorf("builder: root filesystem: %w", firstErr)
	}
	return t, nil
}

func hosts(hostname string) string {
	names := hostname
	if short, _, ok := strings.Cut(hostname, "."); ok {
		names += " " + short
	}
	return "127.0.0.1\tlocalhost\n" +
		"::1\tlocalhost ip6-localhost ip6-loopback\n" +
		"127.0.1.1\t" + names + "\n"
}
