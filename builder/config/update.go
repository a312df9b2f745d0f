package config

import (
	"fmt"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"go.yaml.in/yaml/v3"

	"github.com/ingotdev/ingot/packer/format/spec"
)

// updateFields are the fields of update:.
var updateFields = []string{"health_window", "keys", "from", "check", "insecure"}

// update reads update: {health_window, keys, from, check, insecure}.
func (d *decoder) update(n *yaml.Node, path, dir string, u *Update) {
	f, ok := d.mapping(n, path, updateFields...)
	if !ok {
		return
	}
	if v, ok := f.get("health_window"); ok {
		if dur, ok := d.duration(v, fieldPath(path, "health_window")); ok {
			u.HealthWindow = dur
		}
	}
	if v, ok := f.get("keys"); ok {
		u.Keys = d.keyFiles(v, fieldPath(path, "keys"), dir)
	}
	if v, ok := f.get("insecure"); ok {
		if b, ok := d.boolean(v, fieldPath(path, "insecure")); ok {
			u.Insecure = b
			if b && len(u.Keys) == 0 {
				d.fail(v, fieldPath(path, "insecure"), "needs update.keys: without keys the appliance pulls nothing")
			}
		}
	}
	fromNode, hasFrom := f.get("from")
	if hasFrom {
		fp := fieldPath(path, "from")
		if s, ok := d.nonEmpty(fromNode, fp); ok {
			if err := checkReleaseRef(s, u.Insecure); err != nil {
				d.fail(fromNode, fp, "%v", err)
			} else if len(u.Keys) == 0 {
				d.fail(fromNode, fp, "needs update.keys: pulled releases must be signed")
			} else {
				u.From = s
				u.FromPos = d.pos(deref(fromNode))
			}
		}
	}
	if v, ok := f.get("check"); ok {
		cp := fieldPath(path, "check")
		if dur, ok := d.duration(v, cp); ok {
			min, max := spec.MinUpdateCheckSeconds*time.Second, spec.MaxUpdateCheckSeconds*time.Second
			switch {
			case !hasFrom:
				d.fail(v, cp, "needs update.from: there is no release tag to check")
			case dur < min || dur > max:
				d.fail(v, cp, "%s is out of range %s..%s", dur, min, max)
			case dur%time.Second != 0:
				d.fail(v, cp, "%s is not a whole number of seconds", dur)
			default:
				u.Check = dur
			}
		}
	}
}

// checkReleaseRef checks update.from strictly, as an OCI reference with
// the registry, the repository and a tag or digest written out, and then
// with the rule ingot-init applies (spec.CheckUpdateFrom).
func checkReleaseRef(s string, insecure bool) error {
	opts := []name.Option{name.StrictValidation}
	if insecure {
		opts = append(opts, name.Insecure)
	}
	if _, err := name.ParseReference(s, opts...); err != nil {
		return fmt.Errorf("%q is not a release reference (REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:HEX): %v", s, err)
	}
	if err := spec.CheckUpdateFrom(s); err != nil {
		return err
	}
	return nil
}
