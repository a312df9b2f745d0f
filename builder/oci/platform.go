package oci

import (
	"fmt"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// PlatformForArch returns the OCI platform of a target userland given as
// a GOARCH: amd64, arm64, or arm (32-bit ARMv7, as on rpi-armv7).
func PlatformForArch(goarch string) (v1.Platform, error) {
	switch goarch {
	case "amd64", "arm64":
		return v1.Platform{OS: "linux", Architecture: goarch}, nil
	case "arm":
		return v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, nil
	}
	return v1.Platform{}, fmt.Errorf("oci: no image platform for GOARCH %q", goarch)
}

// platformMatch reports whether an image for have runs on want, and
// whether the match is exact. arm64 images are "v8" or unmarked; an arm
// image without a variant is taken as v7, docker's default.
func platformMatch(have *v1.Platform, want v1.Platform) (ok, exact bool) {
	if have == nil || have.OS != want.OS || have.Architecture != want.Architecture {
		return false, false
	}
	switch {
	case have.Variant == want.Variant:
		return true, true
	case want.Variant == "":
		return true, false
	case want.Architecture == "arm" && want.Variant == "v7" && have.Variant == "":
		return true, false
	case want.Architecture == "arm64" && want.Variant == "v8" && have.Variant == "":
		return true, false
	}
	return false, false
}

// selectChild picks the manifest of an index that matches want, an exact
// match before a loose one, index order breaking ties.
func selectChild(idx *v1.IndexManifest, want v1.Platform) (v1.Descriptor, bool) {
	var loose *v1.Descriptor
	for i, d := range idx.Manifests {
		ok, exact := platformMatch(d.Platform, want)
		if !ok {
			continue
		}
		if exact {
			return d, true
		}
		if loose == nil {
			loose = &idx.Manifests[i]
		}
	}
	if loose != nil {
		return *loose, true
	}
	return v1.Descriptor{}, false
}

// platformList names the platforms an index offers, for errors.
func platformList(idx *v1.IndexManifest) string {
	seen := map[string]bool{}
	var out []string
	for _, d := range idx.Manifests {
		if d.Platform == nil || d.Platform.OS == "unknown" {
			continue // attestations and the like
		}
		s := d.Platform.String()
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return "none"
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}
