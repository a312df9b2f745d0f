// Package pull is the appliance's side of fleet updates: it looks for
// signed releases (mgmt/release) in an OCI registry, on a schedule
// (update.from, update.check) or when asked (mgmt.PathUpdatePull), and
// installs a newer one into the inactive slot through the same A/B path as
// a pushed update (update.Manager): verify the signature over the index,
// the manifests and configs, then write the root chunk by chunk, each
// chunk verified by its digest before a byte of it reaches the slot, the
// chunks the running slot already holds copied from there, the rest
// downloaded; then the whole root checked against its digest, boot files
// staged, the slot committed as the trial and the appliance rebooted into
// it. A journal on perm lets an interrupted install resume, and the
// digests of releases whose trial failed are kept so that a scheduled
// check never installs them again.
package pull

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/ingotdev/ingot/appliance/update"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/slot"
)

// Slots is the A/B update path the puller writes through;
// *update.Manager implements it.
type Slots interface {
	// Booted is the slot this boot runs.
	Booted() slot.Name
	// OpenRunning opens the running slot for reading reusable chunks.
	OpenRunning(ctx context.Context) (update.Partition, error)
	// BeginRoot starts writing a root into the other slot.
	BeginRoot(ctx context.Context, rs update.RootSpec) (*update.RootWriter, error)
	// BootFiles reports the hashes of a slot's boot files.
	BootFiles(ctx context.Context, sl string) (mgmt.BootFiles, error)
	// SlotSpecificBootFile reports whether a release's copy of a boot file
	// (built for slot a) must not be installed into another slot.
	SlotSpecificBootFile(name string) bool
	// WriteBootFile stages a boot file for the root written last.
	WriteBootFile(ctx context.Context, name string, body io.Reader, sizeBytes int64, sha256Hex string) (mgmt.UpdateResult, error)
	// Commit makes the written slot the trial.
	Commit(ctx context.Context) (mgmt.SlotState, error)
	// LastUpdate is the record of the last committed update.
	LastUpdate(ctx context.Context) *mgmt.LastUpdate
}

// Config is what a Puller needs.
type Config struct {
	// From is the release tag to check on a schedule (update.from);
	// empty: only PullNow installs.
	From string
	// Insecure allows plain HTTP to the registry (update.insecure).
	Insecure bool
	// Check is the interval between checks of From (update.check).
	Check time.Duration
	// Keys are the release signing keys built into the image.
	Keys []*ecdsa.PublicKey
	// Name, Target and Arch are the running image's appliance name
	// (ingot.yaml name:, which also fixes its partitions' GUIDs), ingot
	// target and GOARCH; a release of another name is refused.
	Name, Target, Arch string
	// Release and BuildID are what this boot runs.
	Release uint64
	BuildID string
	// Trial reports that this boot is an unconfirmed trial: nothing is
	// installed until it is confirmed.
	Trial func() bool
	// StateDir is a directory on perm for the puller's state, journal and
	// registry credentials; empty keeps no state (no resume, failed
	// releases remembered for this boot only).
	StateDir string
	Slots    Slots
	// Reboot reboots into the committed trial.
	Reboot func(ctx context.Context) error
	// Logf reports what the puller does.
	Logf func(format string, args ...any)
	// Transport reaches the registry (default: a clone of
	// http.DefaultTransport trusting Mozilla's CA roots, see
	// bundleTransport).
	Transport http.RoundTripper
	// RebootDelay is how long PullNow's caller has to receive its answer
	// before the appliance reboots (default 1 s).
	RebootDelay time.Duration
	// Retries is how many times one download is retried after a network
	// or server error before the install gives up (default 6), waiting
	// RetryWait, doubling, in between (default 500 ms).
	Retries   int
	RetryWait time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Puller checks for and installs signed releases. Its methods are safe
// for concurrent use; one install runs at a time.
type Puller struct {
	cfg Config

	// installing is held for the whole of an install.
	installing sync.Mutex

	mu     sync.Mutex
	status mgmt.PullStatus
	state  persistent
}

// Errors of PullNow and the scheduled check.
var (
	// ErrBusy: another install is in progress.
	ErrBusy = errors.New("pull: another install is in progress")
)

// New returns a Puller. It reads the state kept in cfg.StateDir and
// decides what became of the release it last committed: running now,
// failed its trial (remembered, never installed again by a check), or
// still on trial.
func New(cfg Config) (*Puller, error) {
	if len(cfg.Keys) == 0 {
		return nil, errors.New("pull: no release keys: the image must carry update.keys to verify releases")
	}
	if cfg.Slots == nil {
		return nil, errors.New("pull: no update path (the boot partition is not mounted)")
	}
	if cfg.From != "" {
		if _, err := parseRef(cfg.From, cfg.Insecure); err != nil {
			return nil, fmt.Errorf("pull: update.from: %w", err)
		}
		if cfg.Check <= 0 {
			return nil, fmt.Errorf("pull: update.check %v: must be positive", cfg.Check)
		}
	}
	if cfg.Transport == nil {
		cfg.Transport = &bundleTransport{}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.Trial == nil {
		cfg.Trial = func() bool { return false }
	}
	if cfg.RebootDelay <= 0 {
		cfg.RebootDelay = time.Second
	}
	if cfg.Retries <= 0 {
		cfg.Retries = 6
	}
	if cfg.RetryWait <= 0 {
		cfg.RetryWait = 500 * time.Millisecond
	}
	p := &Puller{cfg: cfg}
	p.status.From = cfg.From
	p.status.CheckSeconds = cfg.Check.Seconds()
	st, err := loadState(cfg.StateDir)
	if err != nil {
		// The state is a cache of decisions; a damaged file must not stop
		// updates, but it is said.
		cfg.Logf("pull: %v (starting with no remembered state)", err)
	}
	p.state = st
	p.resolveTrial(context.Background())
	return p, nil
}

// parseRef parses a release reference.
func parseRef(ref string, insecure bool) (name.Reference, error) {
	opts := []name.Option{name.StrictValidation}
	if insecure {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil {
		return nil, fmt.Errorf("release reference %q: %w: %w", ref, err, mgmt.ErrInvalid)
	}
	return r, nil
}

// Status returns the puller's state.
func (p *Puller) Status() mgmt.PullStatus {
	p.resolveTrial(context.Background())
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.status
	s.Running = p.state.Running
	s.FailedDigests = nil
	for _, f := range p.state.Failed {
		s.FailedDigests = append(s.FailedDigests, f.Digest)
	}
	if s.LastFailure == nil && len(p.state.Failed) > 0 {
		f := p.state.Failed[len(p.state.Failed)-1]
		s.LastFailure = &f
	}
	if s.Progress != nil {
		pr := *s.Progress
		s.Progress = &pr
	}
	return s
}

// resolveTrial decides what became of the release committed last (the
// record of the last update says) and remembers a failed one.
func (p *Puller) resolveTrial(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.state.Trial
	if t == nil {
		return
	}
	rec := p.cfg.Slots.LastUpdate(ctx)
	if rec == nil || rec.Slot != t.Slot || (t.BuildID != "" && rec.BuildID != "" && rec.BuildID != t.BuildID) {
		// The commit of this release never made it into the record (a
		// power cut between the two) or another update replaced it.
		if rec != nil && !rec.Started.Before(t.Committed) {
			p.state.Trial = nil
			p.saveStateLocked()
		}
		return
	}
	switch rec.Outcome {
	case mgmt.OutcomeConfirmed:
		info := t.Info
		p.state.Running = &info
		p.state.Trial = nil
		p.cfg.Logf("pull: release %d (%s) is confirmed and running", t.Info.Release, t.Info.Digest)
	case mgmt.OutcomeFailed, mgmt.OutcomeRolledBack, mgmt.OutcomeCancelled:
		f := mgmt.PullFailure{Ref: t.Info.Ref, Digest: t.Info.Digest, Release: t.Info.Release, At: rec.Finished, Reason: "trial " + rec.Outcome + ": " + rec.Reason}
		if rec.Outcome == mgmt.OutcomeFailed {
			p.state.addFailed(f)
		}
		p.status.LastFailure = &f
		p.state.Trial = nil
		p.cfg.Logf("pull: release %d (%s): %s", t.Info.Release, t.Info.Digest, f.Reason)
	default:
		return
	}
	p.saveStateLocked()
}

func (p *Puller) saveStateLocked() {
	if err := p.state.save(p.cfg.StateDir); err != nil {
		p.cfg.Logf("pull: %v", err)
	}
}

// Run checks cfg.From every cfg.Check (±10 %, the first check after a
// random part of one interval, so that a fleet started together spreads
// out) and installs a newer signed release, until ctx ends. Without From
// it only waits for ctx.
func (p *Puller) Run(ctx context.Context) {
	if p.cfg.From == "" {
		<-ctx.Done()
		return
	}
	wait := time.Duration(rand.Int64N(int64(min(p.cfg.Check, time.Minute)) + 1))
	for {
		p.mu.Lock()
		p.status.NextCheck = p.cfg.Now().Add(wait)
		p.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		rebooting := p.CheckNow(ctx)
		if rebooting {
			return
		}
		wait = jitter(p.cfg.Check)
	}
}

// jitter returns d ± 10 %.
func jitter(d time.Duration) time.Duration {
	spread := int64(d) / 5
	if spread <= 0 {
		return d
	}
	return d - time.Duration(spread/2) + time.Duration(rand.Int64N(spread+1))
}

// CheckNow looks at cfg.From once and installs what it finds when it is a
// newer release that did not fail here before. It reports whether the
// appliance is rebooting into an installed release.
func (p *Puller) CheckNow(ctx context.Context) bool {
	p.resolveTrial(ctx)
	now := p.cfg.Now()
	p.mu.Lock()
	p.status.LastCheck = now
	p.mu.Unlock()
	err := p.check(ctx)
	p.mu.Lock()
	if err != nil && !errors.Is(err, errRebooting) {
		p.status.LastCheckError = err.Error()
	} else {
		p.status.LastCheckError = ""
	}
	p.mu.Unlock()
	if err != nil && !errors.Is(err, errRebooting) && !errors.Is(err, errNothingNew) {
		p.cfg.Logf("pull: check of %s: %v", p.cfg.From, err)
	}
	return errors.Is(err, errRebooting)
}

var (
	errRebooting  = errors.New("rebooting into the installed release")
	errNothingNew = errors.New("nothing new")
)

func (p *Puller) check(ctx context.Context) error {
	if p.cfg.Trial() {
		return errors.New("this boot is an unconfirmed trial: no update is installed until it is confirmed")
	}
	ref, err := parseRef(p.cfg.From, p.cfg.Insecure)
	if err != nil {
		return err
	}
	res, err := p.install(ctx, ref, installOptions{scheduled: true})
	if err != nil {
		return err
	}
	p.cfg.Logf("pull: installed release %d (%s) into slot %s: %d bytes fetched, %d reused, %d resumed; rebooting",
		res.Release.Release, res.Release.Digest, res.Slot, res.BytesFetched, res.BytesReused, res.BytesResumed)
	if err := p.cfg.Reboot(ctx); err != nil {
		return fmt.Errorf("reboot into the installed release: %w", err)
	}
	return errRebooting
}

// PullNow installs the release req names (mgmt.PathUpdatePull) and, once
// it is committed as the trial, reboots into it after cfg.RebootDelay.
func (p *Puller) PullNow(ctx context.Context, req mgmt.PullRequest) (mgmt.PullResult, error) {
	if p.cfg.Trial() {
		return mgmt.PullResult{}, fmt.Errorf("pull: this boot is an unconfirmed trial: wait until it is confirmed, or roll back: %w", mgmt.ErrConflict)
	}
	ref, err := parseRef(req.Ref, p.cfg.Insecure)
	if err != nil {
		return mgmt.PullResult{}, fmt.Errorf("pull: %w", err)
	}
	res, err := p.install(ctx, ref, installOptions{allowDowngrade: req.AllowDowngrade, retry: req.Retry})
	if err != nil {
		return mgmt.PullResult{}, err
	}
	go func() {
		time.Sleep(p.cfg.RebootDelay)
		if err := p.cfg.Reboot(context.Background()); err != nil {
			p.cfg.Logf("pull: reboot into release %d: %v", res.Release.Release, err)
		}
	}()
	return res, nil
}
