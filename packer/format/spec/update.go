package spec

import (
	"fmt"
	"strings"
	"time"
)

// Pulled updates (ingot.yaml update: {from, check, insecure}): the
// appliance polls a release tag in an OCI registry and installs newer
// signed releases itself (appliance/pull).
const (
	// DefaultUpdateCheckSeconds is how often UpdateFrom is checked when
	// appliance.json gives no interval.
	DefaultUpdateCheckSeconds = 3600
	// MinUpdateCheckSeconds bounds the interval from below, so that a
	// fleet cannot be told to hammer its registry.
	MinUpdateCheckSeconds = 10
	// MaxUpdateCheckSeconds bounds it from above (a week).
	MaxUpdateCheckSeconds = 7 * 24 * 3600
	// MaxUpdateFromBytes bounds UpdateFrom (a registry name, a repository
	// of at most 255 bytes and a tag or digest fit easily).
	MaxUpdateFromBytes = 512
)

// UpdateCheckInterval is how often the puller checks UpdateFrom.
func (a *Appliance) UpdateCheckInterval() time.Duration {
	if a.UpdateCheckSeconds == 0 {
		return DefaultUpdateCheckSeconds * time.Second
	}
	return time.Duration(a.UpdateCheckSeconds) * time.Second
}

// CheckUpdateFrom checks the shape of a release reference loosely:
// REGISTRY/REPO:TAG or REGISTRY/REPO@ALGO:HEX, printable, without spaces,
// the registry written out (a dot, a port or localhost). ingot.yaml's
// decoder checks it strictly with an OCI reference parser first; this is
// the rule ingot-init can apply with the standard library alone.
func CheckUpdateFrom(ref string) error {
	if ref == "" {
		return fmt.Errorf("is empty")
	}
	if len(ref) > MaxUpdateFromBytes {
		return fmt.Errorf("%d bytes, at most %d", len(ref), MaxUpdateFromBytes)
	}
	for i, c := range ref {
		if c <= ' ' || c >= 0x7f {
			return fmt.Errorf("%q: byte %d is a space, a control character or not ASCII", ref, i)
		}
	}
	registry, rest, ok := strings.Cut(ref, "/")
	if !ok || rest == "" {
		return fmt.Errorf("%q: want REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@DIGEST", ref)
	}
	if !strings.ContainsAny(registry, ".:") && registry != "localhost" {
		return fmt.Errorf("%q: %q is not a registry (a host with a dot or a port, or localhost): write the registry out", ref, registry)
	}
	repo, digest, hasDigest := strings.Cut(rest, "@")
	if hasDigest {
		algo, hex, ok := strings.Cut(digest, ":")
		if !ok || algo == "" || hex == "" {
			return fmt.Errorf("%q: digest %q is not ALGORITHM:HEX", ref, digest)
		}
		return nil
	}
	last := repo[strings.LastIndex(repo, "/")+1:]
	if name, tag, ok := strings.Cut(last, ":"); !ok || name == "" || tag == "" {
		return fmt.Errorf("%q: no tag or digest (REPOSITORY:TAG or REPOSITORY@DIGEST)", ref)
	}
	return nil
}

// validateUpdate checks the pull settings: a reference and an interval
// only with keys to verify what is pulled.
func (a *Appliance) validateUpdate() error {
	if a.UpdateFrom != "" {
		if err := CheckUpdateFrom(a.UpdateFrom); err != nil {
			return fmt.Errorf("update_from: %w", err)
		}
		if len(a.ReleaseKeys) == 0 {
			return fmt.Errorf("update_from: no release_keys: pulled releases must be signed")
		}
	}
	if a.UpdateCheckSeconds != 0 {
		if a.UpdateFrom == "" {
			return fmt.Errorf("update_check_seconds: set without update_from")
		}
		if a.UpdateCheckSeconds < MinUpdateCheckSeconds || a.UpdateCheckSeconds > MaxUpdateCheckSeconds {
			return fmt.Errorf("update_check_seconds: %d is out of range %d..%d", a.UpdateCheckSeconds, MinUpdateCheckSeconds, MaxUpdateCheckSeconds)
		}
	}
	if a.UpdateInsecure && len(a.ReleaseKeys) == 0 {
		return fmt.Errorf("update_insecure: no release_keys, so nothing is pulled")
	}
	return nil
}

// PermPullDir is where ingot-init's release puller keeps its state on
// perm: what runs, what failed its trial, the journal of an install in
// progress and registry credentials (mode 0700, a dot name no service's
// /perm/<name> can be, and no container volume may name: CheckVolumeSource).
const PermPullDir = "/perm/.ingot-pull"
