package config

import (
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ingotdev/ingot/packer/format/spec"
	"go.yaml.in/yaml/v3"
)

var serviceFields = []string{"name", "go", "image", "args", "entrypoint", "env", "restart",
	"after", "user", "volumes", "resources", "privileged", "needs_perm", "log_buffer", "grace", "health", "wait_for_clock"}

// serviceNodes remembers where a service's name and after: entries are, for
// the checks that need every service (duplicates, references, cycles).
type serviceNodes struct {
	name    *yaml.Node
	after   []*yaml.Node
	volumes []*yaml.Node // one for each of Service.Volumes
}

func (d *decoder) services(n *yaml.Node, p string) []Service {
	items, ok := d.sequence(n, p)
	if !ok {
		return nil
	}
	if len(items) == 0 {
		d.fail(n, p, "must list at least one service")
		return nil
	}
	out := make([]Service, 0, len(items))
	nodes := make([]serviceNodes, 0, len(items))
	for i, it := range items {
		s, sn := d.service(it, indexPath(p, i))
		out = append(out, s)
		nodes = append(nodes, sn)
	}
	d.checkNames(out, nodes, p)
	d.checkAfter(out, nodes, p)
	d.checkVolumeSources(out, nodes, p)
	return out
}

func (d *decoder) service(n *yaml.Node, p string) (Service, serviceNodes) {
	s := Service{Service: spec.Service{
		Restart:        spec.RestartAlways,
		LogBufferBytes: spec.DefaultLogBufferBytes,
		GraceSeconds:   spec.DefaultGraceSeconds,
	}, Pos: d.pos(n)}
	var sn serviceNodes
	f, ok := d.mapping(n, p, serviceFields...)
	if !ok {
		return s, sn
	}
	if v, ok := d.require(f, "name"); ok {
		fp := fieldPath(p, "name")
		if name, ok := d.nonEmpty(v, fp); ok {
			if err := spec.CheckServiceName(name); err != nil {
				d.fail(v, fp, "%v", err)
			} else {
				s.Name = name
				sn.name = v
			}
		}
	}

	goNode, hasGo := f.get("go")
	imgNode, hasImg := f.get("image")
	switch {
	case hasGo && hasImg:
		later := f.keys["image"]
		if later.Line < f.keys["go"].Line || (later.Line == f.keys["go"].Line && later.Column < f.keys["go"].Column) {
			later = f.keys["go"]
		}
		d.fail(later, p, "has both go: and image:; a service is exactly one of them")
	case !hasGo && !hasImg:
		d.fail(n, p, "has neither go: nor image:; a service needs exactly one of them")
	case hasGo:
		fp := fieldPath(p, "go")
		if v, ok := d.nonEmpty(goNode, fp); ok {
			g, err := parseGoPackage(v)
			if err != "" {
				d.fail(goNode, fp, "%q: %s", v, err)
			} else {
				s.Go = &g
			}
		}
	case hasImg:
		fp := fieldPath(p, "image")
		if v, ok := d.nonEmpty(imgNode, fp); ok {
			if strings.ContainsAny(v, " \t\n") {
				d.fail(imgNode, fp, "%q: an image reference has no spaces", v)
			} else {
				s.Image = v
			}
		}
	}
	isImage := hasImg && !hasGo

	if v, ok := f.get("args"); ok {
		s.Args, _ = d.strings(v, fieldPath(p, "args"), true)
	}
	if v, ok := f.get("entrypoint"); ok {
		fp := fieldPath(p, "entrypoint")
		if !isImage {
			d.fail(f.keys["entrypoint"], fp, "only an image service has an entrypoint; a Go service's program is its binary")
		} else if list, ok := d.strings(v, fp, true); ok {
			if len(list) == 0 {
				d.fail(v, fp, "must not be empty")
			}
			s.Entrypoint = list
		}
	}
	if v, ok := f.get("env"); ok {
		s.Env = d.env(v, fieldPath(p, "env"))
	}
	if v, ok := f.get("restart"); ok {
		fp := fieldPath(p, "restart")
		if r, ok := d.nonEmpty(v, fp); ok {
			if err := spec.Restart(r).Validate(); err != nil {
				d.fail(v, fp, "%v", err)
			} else {
				s.Restart = spec.Restart(r)
			}
		}
	}
	if v, ok := f.get("after"); ok {
		fp := fieldPath(p, "after")
		items, _ := d.sequence(v, fp)
		for i, it := range items {
			if name, ok := d.nonEmpty(it, indexPath(fp, i)); ok {
				if contains(s.After, name) {
					d.fail(it, indexPath(fp, i), "%q is listed twice", name)
					continue
				}
				s.After = append(s.After, name)
				sn.after = append(sn.after, it)
			}
		}
	}
	if v, ok := f.get("user"); ok {
		s.User = d.user(v, fieldPath(p, "user"), isImage)
	}
	if v, ok := f.get("volumes"); ok {
		fp := fieldPath(p, "volumes")
		if !isImage {
			d.fail(f.keys["volumes"], fp, "only an image service has volumes; a Go service reads and writes /perm/%s directly", s.Name)
		} else {
			s.Volumes, sn.volumes = d.volumes(v, fp)
		}
	}
	if v, ok := f.get("resources"); ok {
		s.Resources = d.resources(v, fieldPath(p, "resources"))
	}
	if v, ok := f.get("privileged"); ok {
		fp := fieldPath(p, "privileged")
		if b, ok := d.boolean(v, fp); ok {
			if b && !isImage {
				d.fail(f.keys["privileged"], fp, "only an image service can be privileged; a Go service asks for root with user: root")
			}
			s.Privileged = b
		}
	}
	if v, ok := f.get("needs_perm"); ok {
		fp := fieldPath(p, "needs_perm")
		s.NeedsPerm, _ = d.boolean(v, fp)
		if s.NeedsPerm {
			d.needsPerm = append(d.needsPerm, fieldRef{f.keys["needs_perm"], fp})
		}
	}
	if v, ok := f.get("wait_for_clock"); ok {
		fp := fieldPath(p, "wait_for_clock")
		s.WaitForClock, _ = d.boolean(v, fp)
		if s.WaitForClock {
			d.waitForClock = append(d.waitForClock, fieldRef{f.keys["wait_for_clock"], fp})
		}
	}
	if v, ok := f.get("log_buffer"); ok {
		fp := fieldPath(p, "log_buffer")
		if b, ok := d.positiveSize(v, fp); ok {
			if b > spec.MaxLogBufferBytes {
				d.fail(v, fp, "%s is more than the maximum, %s", FormatSize(b), FormatSize(spec.MaxLogBufferBytes))
			} else {
				s.LogBufferBytes = int(b)
			}
		}
	}
	if v, ok := f.get("grace"); ok {
		fp := fieldPath(p, "grace")
		if g, ok := d.duration(v, fp); ok {
			switch {
			case g > spec.MaxGraceSeconds*time.Second:
				d.fail(v, fp, "%v is longer than the maximum, %v", g, spec.MaxGraceSeconds*time.Second)
			case g%time.Second != 0:
				d.fail(v, fp, "%v is not a whole number of seconds", g)
			default:
				s.GraceSeconds = int(g / time.Second)
			}
		}
	}
	if v, ok := f.get("health"); ok {
		s.Health = d.health(v, fieldPath(p, "health"))
	}
	return s, sn
}

// health reads a health check: http: URL or tcp: HOST:PORT, and
// interval, timeout, retries and restart.
func (d *decoder) health(n *yaml.Node, p string) *spec.Health {
	f, ok := d.mapping(n, p, "http", "tcp", "interval", "timeout", "retries", "restart")
	if !ok {
		return nil
	}
	h := &spec.Health{}
	for _, probe := range []struct {
		name  string
		dst   *string
		check func(string) error
	}{{"http", &h.HTTP, spec.CheckHealthURL}, {"tcp", &h.TCP, spec.CheckHealthAddress}} {
		if v, ok := f.get(probe.name); ok {
			fp := fieldPath(p, probe.name)
			if s, ok := d.str(v, fp); ok {
				if err := probe.check(s); err != nil {
					d.fail(v, fp, "%v", err)
				}
				*probe.dst = s
			}
		}
	}
	_, hasHTTP := f.get("http")
	_, hasTCP := f.get("tcp")
	switch {
	case !hasHTTP && !hasTCP:
		d.fail(n, p, "%v", spec.ErrHealthNoProbe)
	case hasHTTP && hasTCP:
		d.fail(f.keys["tcp"], fieldPath(p, "tcp"), "%v", spec.ErrHealthTwoProbes)
	}
	if v, ok := f.get("interval"); ok {
		fp := fieldPath(p, "interval")
		if iv, ok := d.duration(v, fp); ok {
			if err := spec.CheckHealthInterval(iv); err != nil {
				d.fail(v, fp, "%v", err)
			}
			h.IntervalMillis = iv.Milliseconds()
		}
	}
	if v, ok := f.get("timeout"); ok {
		fp := fieldPath(p, "timeout")
		if to, ok := d.duration(v, fp); ok {
			if err := spec.CheckHealthTimeout(to, h.Interval()); err != nil {
				d.fail(v, fp, "%v", err)
			}
			h.TimeoutMillis = to.Milliseconds()
		}
	}
	if v, ok := f.get("retries"); ok {
		r, _ := d.integer(v, fieldPath(p, "retries"), 1, spec.MaxHealthRetries)
		h.Retries = int(r)
	}
	if v, ok := f.get("restart"); ok {
		h.Restart, _ = d.boolean(v, fieldPath(p, "restart"))
	}
	return h
}

// parseGoPackage splits "path[@version]" and returns a reason when the
// string is not a buildable package reference.
func parseGoPackage(s string) (GoPackage, string) {
	if strings.ContainsAny(s, " \t\n\\") {
		return GoPackage{}, "a Go package path has no spaces or backslashes"
	}
	pkg, ver, hasVer := strings.Cut(s, "@")
	g := GoPackage{Path: pkg, Version: ver}
	switch {
	case strings.HasPrefix(pkg, "/"):
		return g, "write local packages relative to the config directory (./cmd/x), so the config builds on any machine"
	case g.Local() && hasVer:
		return g, "a local package has no version; use ./dir or module/path@version"
	case hasVer && ver == "":
		return g, "empty version after @ (use @latest or @vX.Y.Z)"
	case g.Local():
		trimmed := strings.TrimSuffix(pkg, "/")
		clean := path.Clean(trimmed)
		if trimmed != clean && trimmed != "./"+clean {
			return g, "not a clean path (no //, /./ or /../ inside)"
		}
	case strings.Contains(pkg, "..") || strings.HasPrefix(pkg, "."):
		return g, "not a package path (./dir or module/path[@version])"
	}
	return g, ""
}

func (d *decoder) env(n *yaml.Node, p string) map[string]string {
	v := deref(n)
	if v.Kind != yaml.MappingNode {
		d.fail(n, p, "expected a mapping of NAME: value, got %s", describe(n))
		return nil
	}
	out := map[string]string{}
	lines := map[string]int{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := deref(v.Content[i]), v.Content[i+1]
		fp := fieldPath(p, k.Value)
		if err := spec.CheckEnvName(k.Value); err != nil { // a key that is no scalar has no Value
			d.fail(k, fp, "%v", err)
			continue
		}
		if line, dup := lines[k.Value]; dup {
			d.fail(k, fp, "set twice (first at line %d)", line)
			continue
		}
		lines[k.Value] = k.Line
		if s, ok := d.literal(val, fp); ok {
			out[k.Value] = s
		}
	}
	return out
}

var userNameRE = regexp.MustCompile(`^[a-z_][a-z0-9_-]*$`)

// user reads "root", "nobody", "UID", "UID:GID", or for image services a
// user name to look up in the image, and returns it as Service.User says.
func (d *decoder) user(n *yaml.Node, p string, image bool) string {
	v := deref(n)
	if v.Kind != yaml.ScalarNode || (v.ShortTag() != "!!str" && v.ShortTag() != "!!int") {
		d.fail(n, p, "expected a user (root, nobody, UID or UID:GID), got %s", describe(n))
		return ""
	}
	s := v.Value
	c, err := spec.ParseUser(s)
	switch {
	case s == "":
		d.fail(n, p, "must not be empty")
	case err == nil && !image && (s == "root" || s == "nobody"):
		return s
	case err == nil:
		return strconv.FormatUint(uint64(c.UID), 10) + ":" + strconv.FormatUint(uint64(c.GID), 10)
	case image && userNameRE.MatchString(s):
		return s
	case image && strings.Trim(s, "0123456789:") != "":
		d.fail(n, p, "%q is not a user (root, nobody, a user name of the image, UID or UID:GID)", s)
	default:
		d.fail(n, p, "%v", err)
	}
	return ""
}

func (d *decoder) volumes(n *yaml.Node, p string) ([]spec.Volume, []*yaml.Node) {
	items, ok := d.sequence(n, p)
	if !ok {
		return nil, nil
	}
	var out []spec.Volume
	var nodes []*yaml.Node
	targets := map[string]bool{}
	for i, it := range items {
		fp := indexPath(p, i)
		s, ok := d.nonEmpty(it, fp)
		if !ok {
			continue
		}
		vol, err := parseVolume(s)
		if err != "" {
			d.fail(it, fp, "%q: %s", s, err)
			continue
		}
		if targets[vol.Target] {
			d.fail(it, fp, "%q: %s is mounted twice", s, vol.Target)
			continue
		}
		targets[vol.Target] = true
		out = append(out, vol)
		nodes = append(nodes, it)
	}
	return out, nodes
}

// checkVolumeSources applies spec's rule on volume sources, which needs
// every service's name, at each volume's position.
func (d *decoder) checkVolumeSources(svcs []Service, nodes []serviceNodes, p string) {
	names := make([]string, len(svcs))
	for i, s := range svcs {
		names[i] = s.Name
	}
	for i, s := range svcs {
		for k, v := range s.Volumes {
			if err := spec.CheckVolumeSource(s.Name, names, v.Source); err != nil {
				d.fail(nodes[i].volumes[k], indexPath(fieldPath(indexPath(p, i), "volumes"), k), "%v", err)
			}
		}
	}
}

// parseVolume parses "/perm/SRC:/TARGET[:ro|:rw]".
func parseVolume(s string) (spec.Volume, string) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return spec.Volume{}, "expected /perm/SOURCE:/TARGET[:ro]"
	}
	v := spec.Volume{Source: parts[0], Target: parts[1]}
	if len(parts) == 3 {
		switch parts[2] {
		case "ro":
			v.ReadOnly = true
		case "rw":
		default:
			return spec.Volume{}, "the option after the second ':' must be ro or rw"
		}
	}
	if err := v.Validate(); err != nil {
		return spec.Volume{}, err.Error()
	}
	return v, ""
}

func (d *decoder) resources(n *yaml.Node, p string) spec.Resources {
	var r spec.Resources
	f, ok := d.mapping(n, p, "memory", "cpu", "pids")
	if !ok {
		return r
	}
	if v, ok := f.get("memory"); ok {
		r.MemoryBytes, _ = d.positiveSize(v, fieldPath(p, "memory"))
	}
	if v, ok := f.get("cpu"); ok {
		fp := fieldPath(p, "cpu")
		dv := deref(v)
		if dv.Kind != yaml.ScalarNode || (dv.ShortTag() != "!!str" && dv.ShortTag() != "!!int" && dv.ShortTag() != "!!float") {
			d.fail(v, fp, "expected a CPU quota (like 0.5, 2 or 500m), got %s", describe(v))
		} else if m, err := ParseCPU(dv.Value); err != nil {
			d.fail(v, fp, "%v", err)
		} else {
			r.CPUMillis = m
		}
	}
	if v, ok := f.get("pids"); ok {
		r.Pids, _ = d.integer(v, fieldPath(p, "pids"), 1, 1<<22)
	}
	return r
}

// checkNames reports a service name used twice, at the second use.
func (d *decoder) checkNames(svcs []Service, nodes []serviceNodes, p string) {
	first := map[string]*yaml.Node{}
	for i, s := range svcs {
		if s.Name == "" {
			continue
		}
		if f, dup := first[s.Name]; dup {
			d.fail(nodes[i].name, fieldPath(indexPath(p, i), "name"), "duplicate service %q (first at line %d)", s.Name, f.Line)
			continue
		}
		first[s.Name] = nodes[i].name
	}
}

// checkAfter reports after: entries naming unknown services or the service
// itself, then the first dependency cycle, if any.
func (d *decoder) checkAfter(svcs []Service, nodes []serviceNodes, p string) {
	index := map[string]int{}
	for i, s := range svcs {
		if s.Name != "" {
			if _, dup := index[s.Name]; !dup {
				index[s.Name] = i
			}
		}
	}
	names := make([]string, 0, len(svcs))
	for _, s := range svcs {
		if s.Name != "" {
			names = append(names, s.Name)
		}
	}
	bad := false
	for i, s := range svcs {
		for k, a := range s.After {
			fp := indexPath(fieldPath(indexPath(p, i), "after"), k)
			j, ok := index[a]
			switch {
			case !ok:
				d.fail(nodes[i].after[k], fp, "unknown service %q (services: %s)", a, strings.Join(names, ", "))
				bad = true
			case j == i:
				d.fail(nodes[i].after[k], fp, "a service cannot start after itself")
				bad = true
			}
		}
	}
	if bad || len(index) < len(names) { // a duplicate name is reported already
		return
	}
	specs := make([]spec.Service, len(svcs))
	for i, s := range svcs {
		specs[i] = s.Service
	}
	cycle := spec.AfterCycle(specs)
	if cycle == nil {
		return
	}
	// Report the cycle at the after: entry that closes it.
	i, closing := index[cycle[len(cycle)-2]], cycle[len(cycle)-1]
	k := slices.Index(svcs[i].After, closing)
	d.fail(nodes[i].after[k], indexPath(fieldPath(indexPath(p, i), "after"), k), "dependency cycle: %s", strings.Join(cycle, " -> "))
}

// StartOrder returns the services in an order where each comes after the
// services in its After list; services without constraints keep config
// order. The config must have been validated (no cycles).
func (c *Config) StartOrder() []*Service {
	done := map[string]bool{}
	out := make([]*Service, 0, len(c.Services))
	for len(out) < len(c.Services) {
		progress := false
		for i := range c.Services {
			s := &c.Services[i]
			if done[s.Name] {
				continue
			}
			ready := true
			for _, a := range s.After {
				ready = ready && done[a]
			}
			if ready {
				done[s.Name] = true
				out = append(out, s)
				progress = true
			}
		}
		if !progress {
			break // unreachable for a validated config
		}
	}
	return out
}
