package main

import (
	"flag"
	"fmt"
	"strconv"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// releaseFlag is -release N of build and update: it overrides ingot.yaml's
// release:, so that a CI pipeline can stamp its build number without
// editing the file.
type releaseFlag struct {
	set   bool
	value uint64
}

func addReleaseFlag(fs *flag.FlagSet) *releaseFlag {
	r := &releaseFlag{}
	fs.Func("release", "release number of the build, 0.."+strconv.FormatUint(spec.MaxRelease, 10)+
		" (default: "+config.FileName+"'s release:); an update to a lower one is refused", func(s string) error {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil || v > spec.MaxRelease {
			return fmt.Errorf("%q is not a release number 0..%d", s, uint64(spec.MaxRelease))
		}
		r.set, r.value = true, v
		return nil
	})
	return r
}

// apply puts the flag's value into cfg when it was given.
func (r *releaseFlag) apply(cfg *config.Config) {
	if r.set {
		cfg.Release = r.value
	}
}
