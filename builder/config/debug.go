package config

import (
	"strings"

	"go.yaml.in/yaml/v3"
)

// Debug is ingot.yaml's debug: an image flattened into the root like an
// image service's, but never started as a service: `ingot shell` starts it
// on demand, as a container that sees the appliance's processes through a
// read-only /proc (package spec, DebugContainerDir).
type Debug struct {
	// Image is an OCI reference, as for an image service.
	Image string
	// Pos is where debug: is in the file.
	Pos Pos
}

// debug reads `debug: {image: REF}`.
func (d *decoder) debug(n *yaml.Node, p string) *Debug {
	f, ok := d.mapping(n, p, "image")
	if !ok {
		return nil
	}
	in, ok := d.require(f, "image")
	if !ok {
		return nil
	}
	fp := fieldPath(p, "image")
	v, ok := d.nonEmpty(in, fp)
	if !ok {
		return nil
	}
	if strings.ContainsAny(v, " \t\n") {
		d.fail(in, fp, "%q: an image reference has no spaces", v)
		return nil
	}
	return &Debug{Image: v, Pos: d.pos(deref(n))}
}
