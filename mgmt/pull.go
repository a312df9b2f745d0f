package mgmt

import (
	"fmt"
	"strings"
	"time"

	"github.com/ingotdev/ingot/packer/format/spec"
)

// Routes and feature of pulled updates: the appliance fetches a signed
// release from an OCI registry itself (appliance/pull) instead of being
// sent a root.
const (
	// PathUpdatePull (POST, body PullRequest) makes the appliance pull,
	// verify and install the release named by the request now. It answers
	// PullResult once the release is committed as the trial slot (the
	// appliance then reboots into it by itself), or an error saying why
	// nothing was installed.
	PathUpdatePull = APIPrefix + "/update/pull"
	// PathRegistryAuth (PUT, body RegistryAuth) stores the credentials of
	// one registry on the perm partition, where pulls read them.
	PathRegistryAuth = APIPrefix + "/update/registry-auth"

	// FeatureUpdatePull: the agent serves PathUpdatePull and
	// PathRegistryAuth (the image has release keys).
	FeatureUpdatePull = "update-pull"
	// FeatureSignedOnly: the image has release keys, so the agent refuses
	// a root sent with PathUpdateRoot; only signed releases install.
	FeatureSignedOnly = "signed-only"
)

// PullRequest asks the appliance to install one release.
type PullRequest struct {
	// Ref is the release: REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:….
	Ref string `json:"ref"`
	// AllowDowngrade accepts a release number lower than the running one.
	AllowDowngrade bool `json:"allow_downgrade,omitempty"`
	// Retry installs a release even when its digest failed a trial here
	// before (pulls on the schedule never do).
	Retry bool `json:"retry,omitempty"`
}

// PullResult describes a release that was installed into the inactive
// slot and committed as its trial.
type PullResult struct {
	Release ReleaseInfo `json:"release"`
	Slot    string      `json:"slot"`
	// BytesFetched were downloaded from the registry for the root (chunk
	// blobs and patches, compressed); BytesReused of the root came from
	// the running slot (chunks it already held), BytesResumed were
	// already written and verified by an interrupted earlier attempt.
	BytesFetched int64 `json:"bytes_fetched"`
	BytesReused  int64 `json:"bytes_reused"`
	BytesResumed int64 `json:"bytes_resumed"`
	// BytesPatched of the root were rebuilt from patches against the
	// running root (their downloaded size is in BytesFetched).
	BytesPatched int64 `json:"bytes_patched,omitempty"`
	// BytesRoot is the size of the root filesystem.
	BytesRoot int64 `json:"bytes_root"`
}

// ReleaseInfo names one verified release for one target.
type ReleaseInfo struct {
	// Ref is where it was found (the tag or digest reference).
	Ref string `json:"ref"`
	// Digest is the release's index digest, the one its signature names.
	Digest  string    `json:"digest"`
	Release uint64    `json:"release"`
	BuildID string    `json:"build_id,omitempty"`
	Created time.Time `json:"created,omitzero"`
}

// PullStatus is the state of the appliance's puller: its schedule, what
// it found, what it is installing and why the last attempt failed.
type PullStatus struct {
	// From is the configured release tag (update.from), empty when the
	// appliance pulls only when asked (PathUpdatePull).
	From string `json:"from,omitempty"`
	// CheckSeconds is the configured interval between checks of From.
	CheckSeconds float64 `json:"check_s,omitempty"`
	// LastCheck is when From was last looked at, NextCheck when it will
	// be next; LastCheckError says why the last check failed.
	LastCheck      time.Time `json:"last_check,omitzero"`
	NextCheck      time.Time `json:"next_check,omitzero"`
	LastCheckError string    `json:"last_check_error,omitempty"`
	// Available is the newest verified release seen at From; nil before
	// the first successful check.
	Available *ReleaseInfo `json:"available,omitempty"`
	// Running is the release this boot runs when a pull installed it.
	Running *ReleaseInfo `json:"running,omitempty"`
	// Progress is the install in progress; nil when none is.
	Progress *PullProgress `json:"progress,omitempty"`
	// LastFailure is the last install that did not complete or whose
	// trial failed.
	LastFailure *PullFailure `json:"last_failure,omitempty"`
	// FailedDigests are releases whose trial failed here; a scheduled
	// check never installs them again.
	FailedDigests []string `json:"failed_digests,omitempty"`
}

// PullProgress is an install in progress.
type PullProgress struct {
	Release ReleaseInfo `json:"release"`
	// Phase is one of the Phase* constants.
	Phase   string    `json:"phase"`
	Started time.Time `json:"started"`
	// BytesRoot is the root's size, BytesDone how much of it is written
	// and verified, split into fetched, reused and resumed bytes.
	BytesRoot    int64 `json:"bytes_root"`
	BytesDone    int64 `json:"bytes_done"`
	BytesFetched int64 `json:"bytes_fetched"`
	BytesReused  int64 `json:"bytes_reused"`
	BytesResumed int64 `json:"bytes_resumed"`
}

// Phases of PullProgress.
const (
	PhaseVerify = "verify" // signature, manifests, configs, chunk index
	PhaseIndex  = "index"  // chunking the running slot to find reusable chunks
	PhaseRoot   = "root"   // writing the root into the inactive slot
	PhaseBoot   = "boot"   // staging boot files
	PhaseCommit = "commit" // making the slot the trial
)

// PullFailure is why an install failed.
type PullFailure struct {
	Ref     string    `json:"ref,omitempty"`
	Digest  string    `json:"digest,omitempty"`
	Release uint64    `json:"release,omitempty"`
	At      time.Time `json:"at"`
	Reason  string    `json:"reason"`
}

// RegistryAuth is the credentials of one registry (host[:port]) for
// pulls: basic authentication, or the token flow with these credentials.
// An empty Username and Password removes the registry's entry.
type RegistryAuth struct {
	Registry string `json:"registry"`
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
}

// MaxPullBodyBytes bounds the body of PathUpdatePull and PathRegistryAuth
// (a reference and flags, or one registry's credentials: registries'
// access tokens run to a few KiB).
const MaxPullBodyBytes = 64 << 10

// ErrSignedOnly is the agent's answer to a root, boot file or commit sent
// to an appliance with release keys (FeatureSignedOnly), and the CLI's
// before it builds anything: a token alone no longer installs a root.
var ErrSignedOnly = fmt.Errorf("this appliance installs only signed releases (update.keys): "+
	"publish with `ingot publish -key` and install with `ingot update -from REF`: %w", ErrRejected)

// Validate checks the request's shape (spec.CheckUpdateFrom); the puller
// decides the rest.
func (r PullRequest) Validate() error {
	if err := spec.CheckUpdateFrom(r.Ref); err != nil {
		return fmt.Errorf("pull: ref: %w: %w", err, ErrInvalid)
	}
	return nil
}

// Validate checks the credentials' shape: a registry host[:port], and a
// username with a password or neither (which removes the entry).
func (a RegistryAuth) Validate() error {
	switch {
	case a.Registry == "" || len(a.Registry) > 255 || strings.ContainsAny(a.Registry, "/@ ") || hasControl(a.Registry):
		return fmt.Errorf("registry auth: registry %q: want HOST or HOST:PORT: %w", a.Registry, ErrInvalid)
	case len(a.Username) > MaxCredentialBytes || len(a.Password) > MaxCredentialBytes:
		return fmt.Errorf("registry auth: a username or password longer than %d bytes: %w", MaxCredentialBytes, ErrInvalid)
	case strings.Contains(a.Username, ":") || hasControl(a.Username):
		return fmt.Errorf("registry auth: the username holds a ':' or a control character: %w", ErrInvalid)
	case hasControl(a.Password):
		return fmt.Errorf("registry auth: the password holds a control character: %w", ErrInvalid)
	case (a.Username == "") != (a.Password == ""):
		return fmt.Errorf("registry auth: give a username and a password, or neither to remove the registry's entry: %w", ErrInvalid)
	}
	return nil
}

// MaxCredentialBytes bounds a registry's username and password.
const MaxCredentialBytes = 4096

// Remove reports whether the credentials remove the registry's entry.
func (a RegistryAuth) Remove() bool { return a.Username == "" && a.Password == "" }

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f })
}
