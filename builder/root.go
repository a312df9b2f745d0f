package builder

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/packer/format/spec"
	"github.com/ingotdev/ingot/packer/rootfs"
)

// Paths in the root filesystem.
const (
	InitPath   = "/init"
	ServiceDir = "/usr/bin"
	// SystemDir holds the programs of system services, apart from the
	// user's services so their names cannot collide.
	SystemDir     = "/usr/lib/ingot"
	DHCPPath      = SystemDir + "/dhcp"
	BuildInfoPath = "/etc/ingot/build.json"
	// ResolvConfTarget is where /etc/resolv.conf points: the root is
	// read-only, so stage1 (or DHCP) writes the real file on the /run tmpfs.
	ResolvConfTarget = "/run/resolv.conf"
)

// buildIDFormat versions what goes into the build ID hash; change it when
// the root layout changes so old and new builds never share an ID.
const buildIDFormat = "ingot-build-id/1"

// buildIDHexDigits is the length of a build ID: 64 bits, plenty to tell
// builds of one appliance apart.
const buildIDHexDigits = 16

// BuildInfo is the content of BuildInfoPath: what went into the build,
// without any path or time of the build machine.
type BuildInfo struct {
	BuildID         string   `json:"build_id"`
	Name            string   `json:"name"`
	Target          string   `json:"target"`
	Arch            string   `json:"arch"`
	SourceDateEpoch int64    `json:"source_date_epoch"`
	GoVersion       string   `json:"go_version,omitempty"`
	Kernel          Kernel   `json:"kernel"`
	Binaries        []Binary `json:"binaries"`
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
	{"/lib/modules", 0o755},
	{"/oci", 0o755},
	{"/perm", 0o755},
	{"/proc", 0o555},
	{"/run", 0o755},
	{"/sys", 0o555},
	{"/tmp", 0o1777},
}

func assemble(r *Result, cfg *config.Config, target config.Target, jobs []*job, images map[string]*ImageService, tokenHash string, tlsID *tlsIdentity) error {
	initJob := jobs[0]
	bySvc := map[string]*job{}
	for _, j := range jobs[1:] {
		for _, s := range j.services {
			bySvc[s] = j
		}
	}
	app := applianceSpec(cfg, target, tokenHash, images)
	if tlsID != nil {
		app.Management.TLSCertSHA256 = tlsID.pin
	}
	r.Binaries = append(r.Binaries, Binary{Package: InitPackage, Path: InitPath, SHA256: initJob.sum, Bytes: int64(len(initJob.data))})
	for _, s := range cfg.Services {
		j := bySvc[s.Name]
		if j == nil {
			continue // an image service
		}
		r.Binaries = append(r.Binaries, Binary{Service: s.Name, Package: s.Go.String(), Path: servicePath(s.Name),
			SHA256: j.sum, Bytes: int64(len(j.data))})
	}
	if j, ok := bySvc[spec.DHCPServiceName]; ok && usesDHCP(cfg) {
		r.Binaries = append(r.Binaries, Binary{Service: spec.DHCPServiceName, Package: DHCPPackage, Path: DHCPPath,
			SHA256: j.sum, Bytes: int64(len(j.data))})
	}
	r.Init = rootfs.Bytes(initJob.data)
	r.GoVersion = initJob.goVersion

	id, err := buildID(r, cfg, app)
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
	info := BuildInfo{BuildID: id, Name: cfg.Name, Target: string(target), Arch: r.Arch,
		SourceDateEpoch: r.ModTime, GoVersion: r.GoVersion, Kernel: kernelInfo(r), Binaries: r.Binaries, Images: r.Images}
	infoJSON, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return fmt.Errorf("builder: %w", err)
	}
	bins := map[string][]byte{InitPath: initJob.data}
	for _, j := range jobs[1:] {
		for _, s := range j.services {
			p := servicePath(s)
			if s == spec.DHCPServiceName && usesDHCP(cfg) {
				p = DHCPPath
			}
			bins[p] = j.data
		}
	}
	sbomDoc, err := sbomJSON(r, bins, r.Images)
	if err != nil {
		return err
	}
	r.Root, err = rootTree(r, cfg, bySvc, images, appJSON, append(infoJSON, '\n'), sbomDoc, tlsID)
	return err
}

func servicePath(name string) string { return ServiceDir + "/" + name }

func applianceSpec(cfg *config.Config, target config.Target, tokenHash string, images map[string]*ImageService) *spec.Appliance {
	app := &spec.Appliance{
		Name:     cfg.Name,
		Arch:     target.Arch(),
		Target:   string(target),
		Hostname: cfg.Hostname,
		Management: spec.Management{
			TokenSHA256: tokenHash,
			TCP:         cfg.ManagementTCP(target),
			// Rounded up: a sub-second window must not become "default".
			HealthWindowSeconds: int((cfg.Update.HealthWindow + time.Second - 1) / time.Second),
		},
	}
	if target.IsVM() {
		app.Management.VsockPort = cfg.Management.VsockPort
	}
	if cfg.Network.Mode == config.NetworkStatic {
		app.Network = spec.Network{Address: cfg.Network.Address, Gateway: cfg.Network.Gateway, DNS: cfg.Network.DNS}
	}
	for _, s := range cfg.Services {
		if is, ok := images[s.Name]; ok {
			app.Services = append(app.Services, imageServiceSpec(s, is))
			continue
		}
		ss := spec.Service{
			Name:           s.Name,
			Path:           servicePath(s.Name),
			Args:           s.Args,
			Env:            s.Env,
			Restart:        spec.Restart(s.Restart),
			After:          s.After,
			NeedsPerm:      s.NeedsPerm,
			LogBufferBytes: int(s.LogBufferBytes),
			GraceSeconds:   int(s.Grace.Seconds()),
			Resources:      specResources(s.Resources),
			Health:         specHealth(s.Health),
		}
		if s.User != nil {
			ss.User = specUser(*s.User)
		}
		app.Services = append(app.Services, ss)
	}
	if usesDHCP(cfg) {
		app.Services = append(app.Services, dhcpService())
	}
	return app
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

func specUser(u config.User) string {
	switch {
	case u.Name == "root" || u.Name == "nobody":
		return u.Name
	case u.ByName:
		return u.Name // image users are resolved by builder/oci
	}
	return strconv.FormatUint(uint64(u.UID), 10) + ":" + strconv.FormatUint(uint64(u.GID), 10)
}

func kernelInfo(r *Result) Kernel {
	if r.Kernel.Kind == config.KernelDebian {
		return Kernel{Source: "debian:" + filepath.Base(r.Kernel.Path), SHA256: r.KernelSHA256}
	}
	return Kernel{Source: r.Kernel.String()}
}

// buildID hashes every input of the image: the appliance description (all
// of the config that reaches the guest), the binaries, the kernel, the
// disk sizes and the epoch.
func buildID(r *Result, cfg *config.Config, app *spec.Appliance) (string, error) {
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
		Disk         [3]int64
		HealthWindow int64
	}{buildIDFormat, r.Target, r.ModTime, appJSON, r.Binaries, kernelInfo(r),
		[3]int64{r.BootBytes, r.RootSlotBytes, r.PermBytes}, int64(cfg.Update.HealthWindow)}
	b, err := json.Marshal(in)
	if err != nil {
		return "", fmt.Errorf("builder: build id: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:buildIDHexDigits], nil
}

// rootTree lays out the root filesystem.
func rootTree(r *Result, cfg *config.Config, bySvc map[string]*job, images map[string]*ImageService, appJSON, infoJSON, sbomJSON []byte, tlsID *tlsIdentity) (*rootfs.Tree, error) {
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
	if j, ok := bySvc[spec.DHCPServiceName]; ok && usesDHCP(cfg) {
		dir(SystemDir, 0o755)
		file(DHCPPath, 0o755, j.data)
	}

	file(InitPath, 0o755, r.Init)
	// Services built from one package share one file.
	first := map[*job]string{}
	for _, s := range cfg.Services {
		j, p := bySvc[s.Name], servicePath(s.Name)
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

	file(spec.AppliancePath, 0o644, appJSON)
	if tlsID != nil {
		// Root only: the key is the appliance's identity on the network.
		dir(spec.TLSDir, 0o700)
		file(spec.TLSCertPath, 0o644, tlsID.certPEM)
		file(spec.TLSKeyPath, 0o600, tlsID.keyPEM)
	}
	file(BuildInfoPath, 0o644, infoJSON)
	file(spec.SBOMPath, 0o644, sbomJSON)
	if firstErr == nil {
		firstErr = addImages(t, cfg, images, r.ModTime)
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
