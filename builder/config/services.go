package config

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

var serviceFields = []string{"name", "go", "image", "args", "entrypoint", "env", "restart",
	"after", "user", "volumes", "resources", "privileged", "needs_perm", "log_buffer", "grace", "health"}

// reservedServiceNames are used by ingot-init itself: "init" is its own
// log, "log" would collide with the log directory /perm/log.
var reservedServiceNames = []string{"init", "log"}

// serviceNodes remembers where a service's name and after: entries are, for
// the checks that need every service (duplicates, references, cycles).
type serviceNodes struct {
	name  *yaml.Node
	after []*yaml.Node
}

// A service name is a file name (/usr/bin/NAME), a user name and a
// directory under /perm, so it follows the strictest of the three.
var serviceNameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)

// Environment variables ingot sets for every service.
var reservedEnv = []string{"INGOT_BUILD_ID", "INGOT_SERVICE"}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

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
	return out
}

func (d *decoder) service(n *yaml.Node, p string) (Service, serviceNodes) {
	s := Service{
		Restart:        DefaultRestart,
		LogBufferBytes: DefaultLogBufferBytes,
		Grace:          DefaultGrace,
		Pos:            d.pos(n),
	}
	var sn serviceNodes
	f, ok := d.mapping(n, p, serviceFields...)
	if !ok {
		return s, sn
	}
	if v, ok := d.require(f, "name"); ok {
		fp := fieldPath(p, "name")
		if name, ok := d.nonEmpty(v, fp); ok {
			switch {
			case len(name) > maxServiceNameBytes || !serviceNameRE.MatchString(name):
				d.fail(v, fp, "%q must be 1 to %d lowercase letters, digits, '-' or '_', starting with a letter", name, maxServiceNameBytes)
			case contains(reservedServiceNames, name):
				d.fail(v, fp, "%q is reserved for ingot-init (reserved: %s)", name, strings.Join(reservedServiceNames, ", "))
			default:
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
		if r, ok := d.str(v, fp); ok {
			if !contains(restartPolicies, RestartPolicy(r)) {
				d.fail(v, fp, "%q is not one of always, on-failure, never", r)
			} else {
				s.Restart = RestartPolicy(r)
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
			s.Volumes = d.volumes(v, fp)
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
	if v, ok := f.get("log_buffer"); ok {
		fp := fieldPath(p, "log_buffer")
		if b, ok := d.positiveSize(v, fp); ok {
			if b > MaxLogBufferBytes {
				d.fail(v, fp, "%s is more than the maximum, %s", FormatSize(b), FormatSize(MaxLogBufferBytes))
			} else {
				s.LogBufferBytes = b
			}
		}
	}
	if v, ok := f.get("grace"); ok {
		fp := fieldPath(p, "grace")
		if g, ok := d.duration(v, fp); ok {
			switch {
			case g > MaxGrace:
				d.fail(v, fp, "%v is longer than the maximum, %v", g, MaxGrace)
			case g%time.Second != 0:
				d.fail(v, fp, "%v is not a whole number of seconds", g)
			default:
				s.Grace = g
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
func (d *decoder) health(n *yaml.Node, p string) *Health {
	f, ok := d.mapping(n, p, "http", "tcp", "interval", "timeout", "retries", "restart")
	if !ok {
		return nil
	}
	h := &Health{}
	if v, ok := f.get("http"); ok {
		fp := fieldPath(p, "http")
		if u, ok := d.str(v, fp); ok {
			if reason := checkHealthURL(u); reason != "" {
				d.fail(v, fp, "%s", reason)
			}
			h.HTTP = u
		}
	}
	if v, ok := f.get("tcp"); ok {
		fp := fieldPath(p, "tcp")
		if a, ok := d.str(v, fp); ok {
			if reason := checkHealthAddress(a); reason != "" {
				d.fail(v, fp, "%s", reason)
			}
			h.TCP = a
		}
	}
	_, hasHTTP := f.get("http")
	_, hasTCP := f.get("tcp")
	switch {
	case !hasHTTP && !hasTCP:
		d.fail(n, p, "set http: (a URL to GET) or tcp: (HOST:PORT to connect to)")
	case hasHTTP && hasTCP:
		d.fail(f.keys["tcp"], fieldPath(p, "tcp"), "set http: or tcp:, not both")
	}
	if v, ok := f.get("interval"); ok {
		fp := fieldPath(p, "interval")
		if iv, ok := d.duration(v, fp); ok {
			if iv < MinHealthInterval || iv > MaxHealthInterval || iv%time.Millisecond != 0 {
				d.fail(v, fp, "%v is outside %v..%v (whole milliseconds)", iv, MinHealthInterval, MaxHealthInterval)
			}
			h.Interval = iv
		}
	}
	if v, ok := f.get("timeout"); ok {
		fp := fieldPath(p, "timeout")
		if to, ok := d.duration(v, fp); ok {
			iv := h.Interval
			if iv == 0 {
				iv = DefaultHealthInterval
			}
			if to < MinHealthTimeout || to > iv || to%time.Millisecond != 0 {
				d.fail(v, fp, "%v is outside %v..the interval, %v (whole milliseconds)", to, MinHealthTimeout, iv)
			}
			h.Timeout = to
		}
	}
	if v, ok := f.get("retries"); ok {
		r, _ := d.integer(v, fieldPath(p, "retries"), 1, MaxHealthRetries)
		h.Retries = int(r)
	}
	if v, ok := f.get("restart"); ok {
		h.Restart, _ = d.boolean(v, fieldPath(p, "restart"))
	}
	return h
}

// checkHealthURL says what is wrong with an http health check URL.
func checkHealthURL(s string) string {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Sprintf("%q is not a URL: %v", s, err)
	case u.Scheme != "http":
		return fmt.Sprintf("%q: want an http:// URL (the probe runs inside the appliance, e.g. http://127.0.0.1:8080/healthz)", s)
	case u.Hostname() == "":
		return fmt.Sprintf("%q has no host", s)
	case u.User != nil:
		return fmt.Sprintf("%q: no user info in a health check URL", s)
	case u.Fragment != "":
		return fmt.Sprintf("%q: a fragment is never sent", s)
	}
	return ""
}

// checkHealthAddress says what is wrong with a tcp health check address.
func checkHealthAddress(s string) string {
	host, port, err := net.SplitHostPort(s)
	switch {
	case err != nil:
		return fmt.Sprintf("%q: want HOST:PORT (127.0.0.1:5432): %v", s, err)
	case host == "":
		return fmt.Sprintf("%q has no host (127.0.0.1:PORT for the appliance itself)", s)
	case port == "" || port == "0":
		return fmt.Sprintf("%q has no port", s)
	}
	return ""
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
		switch {
		case k.Kind != yaml.ScalarNode || !envNameRE.MatchString(k.Value):
			d.fail(k, fp, "not an environment variable name (letters, digits, _; not starting with a digit)")
			continue
		case contains(reservedEnv, k.Value):
			d.fail(k, fp, "set by ingot for every service; choose another name")
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

// Well-known users every image has (see builder's /etc/passwd).
const (
	rootUID   = 0
	nobodyUID = 65534
)

var userNameRE = regexp.MustCompile(`^[a-z_][a-z0-9_-]*$`)

// user reads "root", "nobody", "UID", "UID:GID", or for image services a
// user name to look up in the image.
func (d *decoder) user(n *yaml.Node, p string, image bool) *User {
	v := deref(n)
	if v.Kind != yaml.ScalarNode || (v.ShortTag() != "!!str" && v.ShortTag() != "!!int") {
		d.fail(n, p, "expected a user (root, nobody, UID or UID:GID), got %s", describe(n))
		return nil
	}
	s := v.Value
	switch s {
	case "root":
		return &User{Name: "root", UID: rootUID, GID: rootUID}
	case "nobody":
		return &User{Name: "nobody", UID: nobodyUID, GID: nobodyUID}
	}
	uidStr, gidStr, hasGID := strings.Cut(s, ":")
	// (uid_t)-1 means "unchanged" to setresuid, so it is no id.
	const maxID = 1<<32 - 2
	if uid, err := strconv.ParseUint(uidStr, 10, 32); err == nil {
		gid := uid
		if hasGID {
			gid, err = strconv.ParseUint(gidStr, 10, 32)
			if err != nil {
				d.fail(n, p, "%q: group %q is not a number", s, gidStr)
				return nil
			}
		}
		if uid > maxID || gid > maxID {
			d.fail(n, p, "%q: ids go up to %d", s, maxID)
			return nil
		}
		return &User{UID: uint32(uid), GID: uint32(gid)}
	}
	if image && userNameRE.MatchString(s) {
		return &User{Name: s, ByName: true}
	}
	if image {
		d.fail(n, p, "%q is not a user (root, nobody, a user name of the image, UID or UID:GID)", s)
	} else {
		d.fail(n, p, "%q is not a user (root, nobody, UID or UID:GID)", s)
	}
	return nil
}

func (d *decoder) volumes(n *yaml.Node, p string) []Volume {
	items, ok := d.sequence(n, p)
	if !ok {
		return nil
	}
	var out []Volume
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
	}
	return out
}

// parseVolume parses "/perm/SRC:/TARGET[:ro|:rw]".
func parseVolume(s string) (Volume, string) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return Volume{}, "expected /perm/SOURCE:/TARGET[:ro]"
	}
	v := Volume{Source: parts[0], Target: parts[1]}
	if len(parts) == 3 {
		switch parts[2] {
		case "ro":
			v.ReadOnly = true
		case "rw":
		default:
			return Volume{}, "the option after the second ':' must be ro or rw"
		}
	}
	if !strings.HasPrefix(v.Source, "/perm/") || path.Clean(v.Source) != v.Source || strings.Contains(v.Source, "/../") {
		return Volume{}, "the source must be a clean path under /perm/"
	}
	if !strings.HasPrefix(v.Target, "/") || path.Clean(v.Target) != v.Target || v.Target == "/" {
		return Volume{}, "the target must be a clean absolute path other than /"
	}
	return v, ""
}

func (d *decoder) resources(n *yaml.Node, p string) Resources {
	var r Resources
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
	edges := make([][]int, len(svcs)) // edges[i][k] is the service at After[k], or -1
	bad := false
	for i, s := range svcs {
		for k, a := range s.After {
			fp := indexPath(fieldPath(indexPath(p, i), "after"), k)
			j, ok := index[a]
			switch {
			case !ok:
				d.fail(nodes[i].after[k], fp, "unknown service %q (services: %s)", a, strings.Join(names, ", "))
				bad = true
				j = -1
			case j == i:
				d.fail(nodes[i].after[k], fp, "a service cannot start after itself")
				bad = true
				j = -1
			}
			edges[i] = append(edges[i], j)
		}
	}
	if bad {
		return
	}
	// Depth-first search with colours; a grey successor closes a cycle.
	const (
		white = iota
		grey
		black
	)
	colour := make([]int, len(svcs))
	var stack []int
	var visit func(i int) bool
	visit = func(i int) bool {
		colour[i] = grey
		stack = append(stack, i)
		for k, j := range edges[i] {
			switch colour[j] {
			case grey:
				start := 0
				for stack[start] != j {
					start++
				}
				cycle := make([]string, 0, len(stack)-start+1)
				for _, x := range stack[start:] {
					cycle = append(cycle, svcs[x].Name)
				}
				cycle = append(cycle, svcs[j].Name)
				fp := indexPath(fieldPath(indexPath(p, i), "after"), k)
				d.fail(nodes[i].after[k], fp, "dependency cycle: %s", strings.Join(cycle, " -> "))
				return true
			case white:
				if visit(j) {
					return true
				}
			}
		}
		stack = stack[:len(stack)-1]
		colour[i] = black
		return false
	}
	for i := range svcs {
		if colour[i] == white && visit(i) {
			return
		}
	}
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
