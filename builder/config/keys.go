package config

import (
	"crypto/ecdsa"
	"errors"
	"fmt"
	"io"
	"os"

	"go.yaml.in/yaml/v3"

	"github.com/ingotdev/ingot/packer/format/releasekey"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// keyFiles reads update.keys: a list of file names relative to dir, at
// most spec.MaxReleaseKeys.
func (d *decoder) keyFiles(n *yaml.Node, path, dir string) []KeyFile {
	items, ok := d.sequence(n, path)
	if !ok {
		return nil
	}
	if len(items) > spec.MaxReleaseKeys {
		d.fail(n, path, "%d keys, at most %d", len(items), spec.MaxReleaseKeys)
		return nil
	}
	var out []KeyFile
	for i, it := range items {
		p := indexPath(path, i)
		if s, ok := d.nonEmpty(it, p); ok {
			out = append(out, KeyFile{Path: resolvePath(dir, s), Pos: d.pos(deref(it)), Field: p})
		}
	}
	return out
}

// ReleaseKey is a checked public key of update.keys.
type ReleaseKey struct {
	File KeyFile
	Key  *ecdsa.PublicKey
	// Fingerprint names the key's file in the image (spec.ReleaseKeyPath).
	Fingerprint string
}

// ReleaseKeys reads and checks the files of update.keys
// (releasekey.Parse). An error names the file and its place in
// ingot.yaml; a key listed twice is refused.
func (c *Config) ReleaseKeys() ([]ReleaseKey, error) {
	var out []ReleaseKey
	for _, kf := range c.Update.Keys {
		fail := func(msg string) error { return &Error{Pos: kf.Pos, Field: kf.Field, Msg: msg} }
		f, err := os.Open(kf.Path)
		if errors.Is(err, os.ErrNotExist) {
			return nil, fail(fmt.Sprintf("public key %s does not exist (ingot key new writes one)", kf.Path))
		}
		if err != nil {
			return nil, fail(err.Error())
		}
		data, err := io.ReadAll(io.LimitReader(f, releasekey.MaxFileBytes+1))
		f.Close()
		if err != nil {
			return nil, fail(err.Error())
		}
		k, err := releasekey.Parse(data, kf.Path)
		if err != nil {
			return nil, fail(err.Error())
		}
		fp, err := releasekey.Fingerprint(k)
		if err != nil {
			return nil, fail(err.Error())
		}
		for _, o := range out {
			if o.Fingerprint == fp {
				return nil, fail(fmt.Sprintf("public key %s is the key of %s (%s) again", kf.Path, o.File.Field, o.File.Path))
			}
		}
		out = append(out, ReleaseKey{File: kf, Key: k, Fingerprint: fp})
	}
	return out, nil
}
