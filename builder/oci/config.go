package oci

import (
	"sort"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// RunConfig is what an image config says about running it.
type RunConfig struct {
	Entrypoint []string
	Cmd        []string
	// Env is KEY=VALUE, in the image's order.
	Env        []string
	WorkingDir string
	// User is as written in the image: "", "name", "uid", "name:group",
	// "uid:gid"; ResolveUser turns it into numbers.
	User string
	// ExposedPorts are sorted, "8080/tcp".
	ExposedPorts []string
}

// RunConfigOf extracts the run settings of an image config.
func RunConfigOf(cf *v1.ConfigFile) RunConfig {
	c := cf.Config
	rc := RunConfig{
		Entrypoint: append([]string(nil), c.Entrypoint...),
		Cmd:        append([]string(nil), c.Cmd...),
		Env:        append([]string(nil), c.Env...),
		WorkingDir: c.WorkingDir,
		User:       c.User,
	}
	for p := range c.ExposedPorts {
		rc.ExposedPorts = append(rc.ExposedPorts, p)
	}
	sort.Strings(rc.ExposedPorts)
	return rc
}
