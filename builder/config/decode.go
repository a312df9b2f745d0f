package config

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// decoder walks a yaml.Node tree, collecting positioned errors instead of
// stopping at the first, so one run of `ingot build` shows every problem.
type decoder struct {
	file string
	// dir is the config's directory, for relative paths.
	dir  string
	errs ErrorList
	// needsPerm holds the needs_perm: true keys, checked against perm:
	// once the whole file is read.
	needsPerm []fieldRef
	// waitForClock holds the wait_for_clock: true keys, checked against
	// clock.ntp.
	waitForClock []fieldRef
}

// fieldRef is a node with its field path.
type fieldRef struct {
	node *yaml.Node
	path string
}

func (d *decoder) pos(n *yaml.Node) Pos {
	return Pos{File: d.file, Line: n.Line, Column: n.Column}
}

func (d *decoder) fail(n *yaml.Node, field, format string, args ...any) {
	if len(d.errs) >= maxErrors {
		return
	}
	d.errs = append(d.errs, &Error{Pos: d.pos(n), Field: field, Msg: fmt.Sprintf(format, args...)})
}

// sorted returns the errors in file order; checks that run after the
// walk (references, cycles) would otherwise come out of order.
func (d *decoder) sorted() ErrorList {
	sort.SliceStable(d.errs, func(i, j int) bool {
		a, b := d.errs[i], d.errs[j]
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
	return d.errs
}

// deref follows aliases (*anchor) to the node they stand for.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

// describe names what a node holds, for "expected X, got Y" messages.
func describe(n *yaml.Node) string {
	n = deref(n)
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "nothing (null)"
		case "!!int", "!!float":
			return "the number " + n.Value
		case "!!bool":
			return "the boolean " + n.Value
		case "!!str":
			return strconv.Quote(n.Value)
		}
		return fmt.Sprintf("a %s value", n.ShortTag())
	}
	return "an unsupported YAML node"
}

// fields is a mapping whose keys were checked against the known field names.
type fields struct {
	node *yaml.Node
	path string
	keys map[string]*yaml.Node
	vals map[string]*yaml.Node
}

func (f *fields) get(name string) (*yaml.Node, bool) {
	v, ok := f.vals[name]
	return v, ok
}

// mapping checks that n is a mapping with string keys from known, each at
// most once. Unknown fields are errors: a typo must not silently become a
// default.
func (d *decoder) mapping(n *yaml.Node, path string, known ...string) (*fields, bool) {
	v := deref(n)
	if v.Kind != yaml.MappingNode {
		d.fail(n, path, "expected a mapping, got %s", describe(n))
		return nil, false
	}
	f := &fields{node: n, path: path, keys: map[string]*yaml.Node{}, vals: map[string]*yaml.Node{}}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := deref(v.Content[i]), v.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.ShortTag() == "!!merge" {
			d.fail(v.Content[i], path, "unsupported key %s (merge keys and complex keys are not allowed)", describe(k))
			continue
		}
		name := k.Value
		if !contains(known, name) {
			d.fail(k, fieldPath(path, name), "unknown field (known: %s)", strings.Join(known, ", "))
			continue
		}
		if first, dup := f.keys[name]; dup {
			d.fail(k, fieldPath(path, name), "set twice (first at line %d)", first.Line)
			continue
		}
		f.keys[name] = k
		f.vals[name] = val
	}
	return f, true
}

// require reports a missing required field at the position of its mapping.
func (d *decoder) require(f *fields, name string) (*yaml.Node, bool) {
	v, ok := f.vals[name]
	if !ok {
		d.fail(f.node, fieldPath(f.path, name), "required field missing")
	}
	return v, ok
}

func contains[T comparable](list []T, x T) bool {
	for _, y := range list {
		if y == x {
			return true
		}
	}
	return false
}

// str reads a string. Numbers and booleans are rejected: a field that
// takes text should be written as text.
func (d *decoder) str(n *yaml.Node, path string) (string, bool) {
	v := deref(n)
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!str" {
		d.fail(n, path, "expected a string, got %s", describe(n))
		return "", false
	}
	return v.Value, true
}

// nonEmpty reads a string that must not be empty.
func (d *decoder) nonEmpty(n *yaml.Node, path string) (string, bool) {
	s, ok := d.str(n, path)
	if ok && strings.TrimSpace(s) == "" {
		d.fail(n, path, "must not be empty")
		return "", false
	}
	return s, ok
}

// literal reads any non-null scalar as the text written, for values that
// end up as strings anyway (args, env values): `PORT: 8080` means "8080".
func (d *decoder) literal(n *yaml.Node, path string) (string, bool) {
	v := deref(n)
	if v.Kind != yaml.ScalarNode || v.ShortTag() == "!!null" {
		d.fail(n, path, "expected a string, got %s", describe(n))
		return "", false
	}
	if strings.ContainsRune(v.Value, 0) {
		d.fail(n, path, "contains a NUL byte")
		return "", false
	}
	return v.Value, true
}

func (d *decoder) boolean(n *yaml.Node, path string) (bool, bool) {
	v := deref(n)
	if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!bool" {
		b, err := strconv.ParseBool(strings.ToLower(v.Value))
		if err == nil {
			return b, true
		}
	}
	d.fail(n, path, "expected true or false, got %s", describe(n))
	return false, false
}

// sequence returns the items of a list.
func (d *decoder) sequence(n *yaml.Node, path string) ([]*yaml.Node, bool) {
	v := deref(n)
	if v.Kind != yaml.SequenceNode {
		d.fail(n, path, "expected a list, got %s", describe(n))
		return nil, false
	}
	return v.Content, true
}

// strings reads a list of strings; with lit, any scalar is taken as written.
func (d *decoder) strings(n *yaml.Node, path string, lit bool) ([]string, bool) {
	items, ok := d.sequence(n, path)
	if !ok {
		return nil, false
	}
	out := make([]string, 0, len(items))
	ok = true
	for i, it := range items {
		read := d.str
		if lit {
			read = d.literal
		}
		s, good := read(it, indexPath(path, i))
		ok = ok && good
		out = append(out, s)
	}
	return out, ok
}

// size reads a byte count written as an integer or a string with a unit.
func (d *decoder) size(n *yaml.Node, path string) (int64, bool) {
	v := deref(n)
	if v.Kind != yaml.ScalarNode || (v.ShortTag() != "!!str" && v.ShortTag() != "!!int") {
		d.fail(n, path, "expected a size (like 64Mi), got %s", describe(n))
		return 0, false
	}
	b, err := ParseSize(v.Value)
	if err != nil {
		d.fail(n, path, "%v", err)
		return 0, false
	}
	return b, true
}

// positiveSize reads a size that must be above zero.
func (d *decoder) positiveSize(n *yaml.Node, path string) (int64, bool) {
	b, ok := d.size(n, path)
	if ok && b <= 0 {
		d.fail(n, path, "must be larger than 0")
		return 0, false
	}
	return b, ok
}

// duration reads a Go duration ("10s", "1m30s") that must be positive.
func (d *decoder) duration(n *yaml.Node, path string) (time.Duration, bool) {
	v := deref(n)
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!str" {
		d.fail(n, path, "expected a duration (like 10s or 1m30s), got %s", describe(n))
		return 0, false
	}
	dur, err := time.ParseDuration(v.Value)
	if err != nil {
		d.fail(n, path, "%q is not a duration (like 10s or 1m30s)", v.Value)
		return 0, false
	}
	if dur <= 0 {
		d.fail(n, path, "must be longer than 0")
		return 0, false
	}
	return dur, true
}

// integer reads an integer in [lo, hi].
func (d *decoder) integer(n *yaml.Node, path string, lo, hi int64) (int64, bool) {
	v := deref(n)
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" {
		d.fail(n, path, "expected an integer, got %s", describe(n))
		return 0, false
	}
	i, err := strconv.ParseInt(strings.ReplaceAll(v.Value, "_", ""), 0, 64)
	if err != nil || i < lo || i > hi {
		d.fail(n, path, "%s is out of range %d..%d", v.Value, lo, hi)
		return 0, false
	}
	return i, true
}
