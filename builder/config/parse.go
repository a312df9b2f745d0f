package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/ingotdev/ingot/packer/format/spec"
	"go.yaml.in/yaml/v3"
)

// Load reads and parses the config file at path. Error messages name the
// file as path is written.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse parses data, the contents of the config file name, fills in the
// defaults and validates the result. An invalid config yields an ErrorList.
func Parse(name string, data []byte) (*Config, error) {
	d := &decoder{file: name}
	dir, err := filepath.Abs(filepath.Dir(name))
	if err != nil {
		return nil, fmt.Errorf("config: %s: %w", name, err)
	}
	d.dir = dir
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, ErrorList{{Pos: Pos{File: name, Line: 1, Column: 1}, Field: "name", Msg: "required field missing (the file is empty)"}}
		}
		return nil, ErrorList{syntaxError(name, err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, ErrorList{{Pos: Pos{File: name, Line: extra.Line, Column: extra.Column}, Msg: "a second YAML document; the config is one document"}}
	} else if !errors.Is(err, io.EOF) {
		return nil, ErrorList{syntaxError(name, err)}
	}
	if len(doc.Content) == 0 {
		return nil, ErrorList{{Pos: Pos{File: name, Line: 1, Column: 1}, Field: "name", Msg: "required field missing (the file is empty)"}}
	}
	c := d.config(doc.Content[0], dir)
	if len(d.errs) > 0 {
		return nil, d.sorted()
	}
	return c, nil
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError turns a YAML parser error ("yaml: line 3: ...") into an
// Error with the file name and line.
func syntaxError(name string, err error) *Error {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{Pos: Pos{File: name, Line: line}, Msg: "YAML syntax: " + m[2]}
	}
	return &Error{Pos: Pos{File: name}, Msg: "YAML syntax: " + strings.TrimPrefix(msg, "yaml: ")}
}

// topFields are the fields of the config's top-level mapping.
var topFields = []string{"name", "hostname", "targets", "kernel", "token_file",
	"services", "management", "network", "perm", "disk", "update", "release", "metrics", "logs", "clock", "debug"}

func (d *decoder) config(root *yaml.Node, dir string) *Config {
	c := &Config{
		File:    d.file,
		Dir:     dir,
		Targets: []Target{DefaultTarget},
		Kernels: map[Target]KernelSource{},
		Management: Management{VsockPort: DefaultVsockPort,
			TLSCertFile: filepath.Join(dir, filepath.FromSlash(DefaultTLSCertFile)),
			TLSKeyFile:  filepath.Join(dir, filepath.FromSlash(DefaultTLSKeyFile))},
		Network:   Network{Mode: NetworkDHCP},
		PermBytes: DefaultPermBytes,
		Disk:      Disk{BootBytes: DefaultBootBytes, RootSlotBytes: DefaultRootSlotBytes},
		TokenFile: filepath.Join(dir, filepath.FromSlash(DefaultTokenFile)),
		Update:    Update{HealthWindow: DefaultHealthWindow},
		Clock:     spec.Clock{NTP: slices.Clone(spec.DefaultNTPServers), Defaulted: true},
	}
	f, ok := d.mapping(root, "", topFields...)
	if !ok {
		return c
	}

	nameOK := false
	if n, ok := d.require(f, "name"); ok {
		if s, ok := d.nonEmpty(n, "name"); ok {
			c.Name = s
			if err := checkHostnameLabel(s); err != nil {
				d.fail(n, "name", "%v (the name is the default hostname and seeds partition GUIDs)", err)
			} else {
				nameOK = true
			}
		}
	}
	c.Hostname = c.Name
	if n, ok := f.get("hostname"); ok {
		if s, ok := d.nonEmpty(n, "hostname"); ok {
			c.Hostname = s
			if err := checkHostname(s); err != nil {
				d.fail(n, "hostname", "%v", err)
			}
		}
	} else if !nameOK {
		c.Hostname = ""
	}
	if n, ok := f.get("targets"); ok {
		c.Targets = d.targets(n, "targets")
	}
	if n, ok := f.get("kernel"); ok {
		c.Kernels = d.kernels(n, "kernel", dir)
	}
	if n, ok := f.get("token_file"); ok {
		if s, ok := d.nonEmpty(n, "token_file"); ok {
			c.TokenFile = resolvePath(dir, s)
			c.TokenFilePos = d.pos(deref(n))
		}
	}
	if n, ok := d.require(f, "services"); ok {
		c.Services = d.services(n, "services")
	}
	if n, ok := f.get("management"); ok {
		d.management(n, "management", dir, &c.Management)
	}
	if n, ok := f.get("network"); ok {
		d.network(n, "network", &c.Network)
	}
	if n, ok := f.get("perm"); ok {
		c.PermBytes = d.perm(n, "perm")
	}
	if c.PermBytes == 0 {
		for _, r := range d.needsPerm {
			d.fail(r.node, r.path, "the service needs perm, but perm: is off, so it would never start")
		}
	}
	if n, ok := f.get("disk"); ok {
		d.disk(n, "disk", &c.Disk)
	}
	if n, ok := f.get("release"); ok {
		if r, ok := d.integer(n, "release", 0, spec.MaxRelease); ok {
			c.Release = uint64(r)
		}
	}
	if n, ok := f.get("metrics"); ok {
		c.Metrics = d.metrics(n, "metrics")
	}
	if n, ok := f.get("logs"); ok {
		c.Logs = d.logs(n, "logs", dir)
	}
	if n, ok := f.get("clock"); ok {
		d.clock(n, "clock", &c.Clock)
	}
	if len(c.Clock.NTP) == 0 {
		for _, r := range d.waitForClock {
			d.fail(r.node, r.path, "clock.ntp names no server, so the clock is never synced and the service would never start")
		}
	}
	if n, ok := f.get("update"); ok {
		d.update(n, "update", dir, &c.Update)
	}
	if n, ok := f.get("debug"); ok {
		c.Debug = d.debug(n, "debug")
	}
	return c
}

// clock reads clock: {ntp: [host[:port], ...]}; an empty list turns the
// NTP client off. Servers named here, or none, replace the default
// servers and any from DHCP (c.Defaulted is cleared).
func (d *decoder) clock(n *yaml.Node, path string, c *spec.Clock) {
	f, ok := d.mapping(n, path, "ntp")
	if !ok {
		return
	}
	v, ok := f.get("ntp")
	if !ok {
		return
	}
	fp := path + ".ntp"
	c.Defaulted = false
	servers, ok := d.strings(v, fp, false)
	if !ok {
		return
	}
	items := deref(v).Content
	if len(servers) > spec.MaxNTPServers {
		d.fail(v, fp, "%d servers, at most %d", len(servers), spec.MaxNTPServers)
	}
	for i, s := range servers {
		if _, err := spec.NTPServerAddr(s); err != nil {
			d.fail(items[i], indexPath(fp, i), "%v", err)
		}
	}
	c.NTP = servers
}

func resolvePath(dir, p string) string {
	p = filepath.FromSlash(p)
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(dir, p)
}

var hostnameLabelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

func checkHostnameLabel(s string) error {
	if len(s) > maxHostnameLabelBytes || !hostnameLabelRE.MatchString(s) {
		return fmt.Errorf("%q must be 1 to %d lowercase letters, digits and inner hyphens", s, maxHostnameLabelBytes)
	}
	return nil
}

func checkHostname(s string) error {
	if len(s) > maxHostnameBytes {
		return fmt.Errorf("%q is longer than %d bytes", s, maxHostnameBytes)
	}
	for _, label := range strings.Split(s, ".") {
		if err := checkHostnameLabel(label); err != nil {
			return fmt.Errorf("%q is not a hostname: label %v", s, err)
		}
	}
	return nil
}

// ValidName reports whether name can be an appliance name (a hostname
// label: lowercase letters, digits, inner hyphens). `ingot new` checks the
// name before calling Scaffold.
func ValidName(name string) error {
	return checkHostnameLabel(name)
}

func (d *decoder) targets(n *yaml.Node, path string) []Target {
	items, ok := d.sequence(n, path)
	if !ok {
		return nil
	}
	if len(items) == 0 {
		d.fail(n, path, "must list at least one target (%s)", targetList())
		return nil
	}
	var out []Target
	for i, it := range items {
		p := indexPath(path, i)
		s, ok := d.str(it, p)
		if !ok {
			continue
		}
		t, err := ParseTarget(s)
		if err != nil {
			d.fail(it, p, "%v", err)
			continue
		}
		if contains(out, t) {
			d.fail(it, p, "target %s is listed twice", t)
			continue
		}
		out = append(out, t)
	}
	return out
}

func (d *decoder) kernels(n *yaml.Node, path, dir string) map[Target]KernelSource {
	out := map[Target]KernelSource{}
	v := deref(n)
	if v.Kind != yaml.MappingNode {
		d.fail(n, path, "expected a mapping of target to kernel (vm-amd64: debian:PATH.deb), got %s", describe(n))
		return out
	}
	seen := map[Target]int{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := deref(v.Content[i]), v.Content[i+1]
		t, err := ParseTarget(k.Value)
		if k.Kind != yaml.ScalarNode || err != nil {
			d.fail(k, fieldPath(path, k.Value), "unknown target (known: %s)", targetList())
			continue
		}
		p := fieldPath(path, k.Value)
		if line, dup := seen[t]; dup {
			d.fail(k, p, "set twice (first at line %d)", line)
			continue
		}
		seen[t] = k.Line
		s, ok := d.nonEmpty(val, p)
		if !ok {
			continue
		}
		ks, err := parseKernel(s, dir)
		if err != nil {
			d.fail(val, p, "%v", err)
			continue
		}
		ks.Pos = d.pos(deref(val))
		out[t] = ks
	}
	return out
}

// parseKernel parses "debian:PATH.deb" or "gomod:MODULE[@VERSION]".
func parseKernel(s, dir string) (KernelSource, error) {
	kind, rest, ok := strings.Cut(s, ":")
	switch {
	case ok && kind == string(KernelDebian):
		if rest == "" {
			return KernelSource{}, fmt.Errorf("%q: debian: needs the path of a linux-image .deb", s)
		}
		return KernelSource{Kind: KernelDebian, Path: resolvePath(dir, rest)}, nil
	case ok && kind == string(KernelGoModule):
		mod, ver, _ := strings.Cut(rest, "@")
		if mod == "" || strings.ContainsAny(rest, " \t") {
			return KernelSource{}, fmt.Errorf("%q: gomod: needs a module path, e.g. gomod:github.com/gokrazy/kernel.rpi@VERSION", s)
		}
		return KernelSource{Kind: KernelGoModule, Module: mod, Version: ver}, nil
	}
	return KernelSource{}, fmt.Errorf("%q is not a kernel source (debian:PATH.deb or gomod:MODULE@VERSION)", s)
}

func (d *decoder) management(n *yaml.Node, path, dir string, m *Management) {
	f, ok := d.mapping(n, path, "vsock_port", "tcp", "tls_cert", "tls_key")
	if !ok {
		return
	}
	for _, k := range []struct {
		name string
		dst  *string
	}{{"tls_cert", &m.TLSCertFile}, {"tls_key", &m.TLSKeyFile}} {
		if v, ok := f.get(k.name); ok {
			if s, ok := d.nonEmpty(v, fieldPath(path, k.name)); ok {
				*k.dst = resolvePath(dir, s)
			}
		}
	}
	if v, ok := f.get("vsock_port"); ok {
		// 0xFFFFFFFF is VMADDR_PORT_ANY.
		if p, ok := d.integer(v, fieldPath(path, "vsock_port"), 1, 0xFFFFFFFE); ok {
			m.VsockPort = uint32(p)
		}
	}
	if v, ok := f.get("tcp"); ok {
		p := fieldPath(path, "tcp")
		if s, ok := d.nonEmpty(v, p); ok {
			if err := checkListenAddr(s); err != nil {
				d.fail(v, p, "%v", err)
			} else {
				m.TCP = s
			}
		}
	}
}

func checkListenAddr(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not a listen address (like :7443 or 0.0.0.0:7443)", s)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("%q: host must be an IP address or empty", s)
		}
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q: port must be 1..65535", s)
	}
	return nil
}

func (d *decoder) network(n *yaml.Node, path string, nw *Network) {
	v := deref(n)
	if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!str" {
		switch NetworkMode(v.Value) {
		case NetworkDHCP, NetworkNone:
			nw.Mode = NetworkMode(v.Value)
		default:
			d.fail(n, path, "%q is not one of dhcp, none, or a mapping with static:", v.Value)
		}
		return
	}
	f, ok := d.mapping(n, path, "static", "wifi")
	if !ok {
		return
	}
	if wn, ok := f.get("wifi"); ok {
		if _, static := f.get("static"); static {
			d.fail(f.keys["wifi"], fieldPath(path, "wifi"), "wifi: and static: do not mix: on Wi-Fi the address comes by DHCP")
			return
		}
		nw.Mode = NetworkDHCP
		nw.WiFi = d.wifi(wn, fieldPath(path, "wifi"))
		return
	}
	sn, ok := d.require(f, "static")
	if !ok {
		return
	}
	sp := fieldPath(path, "static")
	sf, ok := d.mapping(sn, sp, "address", "gateway", "dns")
	if !ok {
		return
	}
	nw.Mode = NetworkStatic
	if an, ok := d.require(sf, "address"); ok {
		p := fieldPath(sp, "address")
		if s, ok := d.nonEmpty(an, p); ok {
			pfx, err := netip.ParsePrefix(s)
			if err != nil {
				d.fail(an, p, "%q is not an address with prefix length (like 192.168.1.10/24)", s)
			} else {
				nw.Address = pfx
			}
		}
	}
	if gn, ok := sf.get("gateway"); ok {
		p := fieldPath(sp, "gateway")
		if s, ok := d.nonEmpty(gn, p); ok {
			gw, err := netip.ParseAddr(s)
			switch {
			case err != nil:
				d.fail(gn, p, "%q is not an IP address", s)
			case nw.Address.IsValid() && !nw.Address.Masked().Contains(gw):
				d.fail(gn, p, "%s is outside the network %s", gw, nw.Address.Masked())
			default:
				nw.Gateway = gw
			}
		}
	}
	if dn, ok := sf.get("dns"); ok {
		p := fieldPath(sp, "dns")
		list, _ := d.strings(dn, p, false)
		items, _ := d.sequence(dn, p)
		for i, s := range list {
			a, err := netip.ParseAddr(s)
			if err != nil {
				d.fail(items[i], indexPath(p, i), "%q is not an IP address", s)
				continue
			}
			nw.DNS = append(nw.DNS, a)
		}
	}
}

// wifi reads network.wifi: {ssid: NAME, psk_file: FILE, firmware_deb:
// FILE}; the passphrase itself is read at build time (WiFi.PSK).
func (d *decoder) wifi(n *yaml.Node, path string) *WiFi {
	f, ok := d.mapping(n, path, "ssid", "psk_file", "firmware_deb")
	if !ok {
		return nil
	}
	w := &WiFi{Pos: d.pos(deref(n))}
	if v, ok := d.require(f, "ssid"); ok {
		p := fieldPath(path, "ssid")
		if s, ok := d.str(v, p); ok {
			if err := spec.CheckSSID(s); err != nil {
				d.fail(v, p, "%v", err)
			}
			w.SSID = s
		}
	}
	if v, ok := d.require(f, "psk_file"); ok {
		if s, ok := d.nonEmpty(v, fieldPath(path, "psk_file")); ok {
			w.PSKFile = resolvePath(d.dir, s)
			w.PSKFilePos = d.pos(deref(v))
		}
	}
	if v, ok := d.require(f, "firmware_deb"); ok {
		if s, ok := d.nonEmpty(v, fieldPath(path, "firmware_deb")); ok {
			w.FirmwareDeb = resolvePath(d.dir, s)
		}
	}
	return w
}

// perm reads `perm: SIZE`, `perm: false` (no perm partition) or
// `perm: true` (the default size).
func (d *decoder) perm(n *yaml.Node, path string) int64 {
	v := deref(n)
	if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!bool" {
		b, _ := d.boolean(n, path)
		if b {
			return DefaultPermBytes
		}
		return 0
	}
	b, ok := d.size(n, path)
	if !ok {
		return DefaultPermBytes
	}
	if b%partitionAlignBytes != 0 {
		d.fail(n, path, "%s is not a whole number of MiB", FormatSize(b))
	}
	return b
}

func (d *decoder) disk(n *yaml.Node, path string, dk *Disk) {
	f, ok := d.mapping(n, path, "boot_size", "root_size")
	if !ok {
		return
	}
	read := func(name string, dst *int64) {
		v, ok := f.get(name)
		if !ok {
			return
		}
		p := fieldPath(path, name)
		b, ok := d.positiveSize(v, p)
		if !ok {
			return
		}
		if b%partitionAlignBytes != 0 {
			d.fail(v, p, "%s is not a whole number of MiB", FormatSize(b))
			return
		}
		*dst = b
	}
	read("boot_size", &dk.BootBytes)
	read("root_size", &dk.RootSlotBytes)
}
