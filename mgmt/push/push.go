// Package push is the host side of an A/B update: it builds an appliance
// image for the architecture a running agent reports, cuts the root slot
// out of it, streams it to the agent with its SHA-256, commits it as the
// trial slot, reboots, and waits until the new build answers from the new
// slot with its trial confirmed. Each step is timed for the report.
package push

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ingotdev/ingot/builder/assemble"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/internal/progress"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/image"
	"github.com/ingotdev/ingot/packer/format/slot"
)

// Defaults of the wait for the new build.
const (
	defaultWaitTimeout  = 5 * time.Minute
	defaultPollInterval = 500 * time.Millisecond
	statusCallTimeout   = 5 * time.Second
)

// Step is one timed step of an update.
type Step struct {
	Name     string
	Duration time.Duration
}

// Report describes a finished update.
type Report struct {
	BuildID   string
	Slot      slot.Name // the slot the update went to
	RootBytes int64
	// BootFiles are the boot files sent because the new image changes
	// them (its kernel, initramfs or command line).
	BootFiles []string
	// PushDuration is the time the root upload took.
	PushDuration time.Duration
	Steps        []Step
	// Status is the agent's status after the update (zero with NoReboot).
	Status mgmt.Status
}

// PushMBps returns the upload throughput in MB/s (10^6 bytes).
func (r *Report) PushMBps() float64 {
	if r.PushDuration <= 0 {
		return 0
	}
	return float64(r.RootBytes) / 1e6 / r.PushDuration.Seconds()
}

// Option configures an Updater.
type Option func(*Updater)

// WithAssembleOptions passes options to assemble.Image.
func WithAssembleOptions(opts ...assemble.Option) Option {
	return func(u *Updater) { u.assemble = append(u.assemble, opts...) }
}

// WithLog sets where steps and upload progress are printed (default:
// nowhere).
func WithLog(w io.Writer) Option { return func(u *Updater) { u.log = w } }

// WithAllowDowngrade installs an image whose release is lower than the
// running one, which the agent otherwise refuses (mgmt.CheckRelease).
func WithAllowDowngrade() Option { return func(u *Updater) { u.allowDowngrade = true } }

// WithNoReboot stops after the commit: the update boots at the next reboot.
func WithNoReboot() Option { return func(u *Updater) { u.noReboot = true } }

// WithWaitTimeout bounds the wait for the rebooted appliance (default 5 min).
func WithWaitTimeout(d time.Duration) Option { return func(u *Updater) { u.waitTimeout = d } }

// WithPollInterval sets how often status is asked while waiting.
func WithPollInterval(d time.Duration) Option { return func(u *Updater) { u.pollInterval = d } }

// Updater runs updates and rollbacks on the appliance behind one client,
// timing each step as it goes. It is not safe for concurrent use.
type Updater struct {
	c        *mgmt.Client
	assemble []assemble.Option
	log      io.Writer
	noReboot bool
	// allowDowngrade lets a release lower than the running one through
	// mgmt.CheckRelease, here and in the agent.
	allowDowngrade bool
	waitTimeout    time.Duration
	pollInterval   time.Duration

	// steps are those of the running operation; start is when the
	// current one began.
	steps []Step
	start time.Time
}

// New returns an Updater for the appliance behind c.
func New(c *mgmt.Client, opts ...Option) *Updater {
	u := &Updater{c: c, log: io.Discard, waitTimeout: defaultWaitTimeout, pollInterval: defaultPollInterval}
	for _, opt := range opts {
		opt(u)
	}
	return u
}

// begin starts a timed step.
func (u *Updater) begin() { u.start = time.Now() }

// end records the step begun last and prints it.
func (u *Updater) end(name, detail string) time.Duration {
	d := time.Since(u.start)
	u.steps = append(u.steps, Step{Name: name, Duration: d})
	fmt.Fprintf(u.log, "%-8s %6.2fs  %s\n", name, d.Seconds(), detail)
	return d
}

// status asks the agent for its status, starting a new operation.
func (u *Updater) status(ctx context.Context) (mgmt.Status, error) {
	u.steps = nil
	st, err := callStatus(ctx, u.c)
	if err != nil {
		return mgmt.Status{}, fmt.Errorf("push: status of %s: %w", u.c.Target(), err)
	}
	return st, nil
}

// Update builds cfg for the agent's architecture and installs it (see the
// package documentation).
func (u *Updater) Update(ctx context.Context, cfg *config.Config) (*Report, error) {
	u.begin()
	before, err := u.status(ctx)
	if err != nil {
		return nil, err
	}
	if err := u.checkPushable(before); err != nil {
		return nil, err
	}
	target, err := targetFor(cfg, before.Target, before.Arch)
	if err != nil {
		return nil, err
	}
	u.end("status", fmt.Sprintf("%s build %s on slot %s (%s)", before.Name, before.BuildID, before.Slot, before.Arch))
	// Refused before anything is built; install checks the built image
	// again, and the agent has the last word.
	if err := mgmt.CheckRelease(before.Release, cfg.Release, u.allowDowngrade); err != nil {
		return nil, fmt.Errorf("push: %s: %w", cfg.File, err)
	}

	u.begin()
	tmp, err := os.MkdirTemp("", "ingot-update-")
	if err != nil {
		return nil, fmt.Errorf("push: %w", err)
	}
	defer os.RemoveAll(tmp)
	img := filepath.Join(tmp, cfg.Name+"-"+string(target)+".img")
	rep, err := assemble.Image(ctx, cfg, target, img, u.assemble...)
	if err != nil {
		return nil, fmt.Errorf("push: build: %w", err)
	}
	u.end("build", fmt.Sprintf("build %s for %s", rep.BuildID, target))
	return u.install(ctx, before, img, target.Arch(), rep.BuildID)
}

// PushImage installs an already built image file for GOARCH arch: upload,
// commit, and (unless WithNoReboot) reboot and wait for buildID.
func (u *Updater) PushImage(ctx context.Context, image, arch, buildID string) (*Report, error) {
	before, err := u.status(ctx)
	if err != nil {
		return nil, err
	}
	if err := u.checkPushable(before); err != nil {
		return nil, err
	}
	return u.install(ctx, before, image, arch, buildID)
}

// checkPushable says why the agent that answered st takes no pushed root:
// it installs only signed releases, or offers no root updates at all.
func (u *Updater) checkPushable(st mgmt.Status) error {
	if st.HasFeature(mgmt.FeatureSignedOnly) {
		return fmt.Errorf("push: %s: %w", u.c.Target(), mgmt.ErrSignedOnly)
	}
	if !st.HasFeature(mgmt.FeatureUpdateRoot) {
		return fmt.Errorf("push: the agent at %s does not offer root updates (%s)", u.c.Target(), st.SlotError)
	}
	return nil
}

// install uploads the root and boot files of the image file at path,
// commits them, and unless WithNoReboot reboots into them and waits.
func (u *Updater) install(ctx context.Context, before mgmt.Status, path, arch, buildID string) (*Report, error) {
	im, err := image.Open(path)
	if err != nil {
		return nil, fmt.Errorf("push: %w", err)
	}
	defer im.Close()
	info, err := im.Info()
	if err != nil {
		return nil, fmt.Errorf("push: %w", err)
	}
	if err := mgmt.CheckRelease(before.Release, info.Release, u.allowDowngrade); err != nil {
		return nil, fmt.Errorf("push: %s: %w", path, err)
	}
	u.begin()
	root, err := im.RootSquashfs(slot.A)
	if err != nil {
		return nil, err
	}
	sum, err := hashReader(root)
	if err != nil {
		return nil, fmt.Errorf("push: %s: hash root: %w", path, err)
	}
	size := root.Size()
	pr := progress.New(u.log, "push", size)
	res, err := u.c.UpdateRoot(ctx, io.NewSectionReader(root, 0, size), size, sum,
		mgmt.Root{Arch: arch, Release: info.Release, AllowDowngrade: u.allowDowngrade}, pr.Set)
	pr.Finish()
	if err != nil {
		return nil, fmt.Errorf("push: upload root: %w", err)
	}
	if res.SHA256 != sum || res.Bytes != size {
		return nil, fmt.Errorf("push: the agent wrote %d bytes with sha256 %s, sent %d bytes with sha256 %s", res.Bytes, res.SHA256, size, sum)
	}
	d := u.end("push", fmt.Sprintf("%s to slot %s, %.1f MB/s", config.FormatSize(size), res.Slot, float64(size)/1e6/time.Since(u.start).Seconds()))
	r := &Report{BuildID: buildID, Slot: slot.Name(res.Slot), RootBytes: size, PushDuration: d}

	u.begin()
	if r.BootFiles, err = u.pushBootFiles(ctx, im, r.Slot); err != nil {
		return nil, err
	}
	detail := "kernel, initramfs and command line unchanged"
	if len(r.BootFiles) > 0 {
		detail = "sent " + strings.Join(r.BootFiles, ", ") + " for slot " + res.Slot
	}
	u.end("boot", detail)

	u.begin()
	st, err := u.c.Commit(ctx)
	if err != nil {
		return nil, fmt.Errorf("push: commit: %w", err)
	}
	u.end("commit", fmt.Sprintf("slot.json: active %s, trial %s", st.Active, st.Trial))

	if u.noReboot {
		r.Steps = u.steps
		fmt.Fprintf(u.log, "staged slot %s; it boots on trial at the next reboot\n", r.Slot)
		return r, nil
	}
	u.begin()
	if err := u.c.Reboot(ctx); err != nil {
		return nil, fmt.Errorf("push: reboot: %w", err)
	}
	if r.Status, err = u.WaitConfirmed(ctx, before, r.Slot, r.BuildID); err != nil {
		return nil, err
	}
	u.end("reboot", fmt.Sprintf("build %s answers on slot %s, trial confirmed", r.Status.BuildID, r.Status.Slot))
	r.Steps = u.steps
	return r, nil
}

// Rollback switches the appliance back to its other slot: it cancels a
// pending trial or puts the other slot on trial, then (unless
// WithNoReboot) reboots and waits until that slot runs confirmed.
func (u *Updater) Rollback(ctx context.Context) (mgmt.Status, error) {
	u.begin()
	before, err := u.status(ctx)
	if err != nil {
		return mgmt.Status{}, err
	}
	st, err := u.c.Rollback(ctx)
	if err != nil {
		return mgmt.Status{}, fmt.Errorf("push: rollback: %w", err)
	}
	want := slot.Name(st.Active)
	if st.Trial != "" {
		want = slot.Name(st.Trial)
	}
	u.end("rollback", fmt.Sprintf("slot.json: active %s, trial %s; slot %s boots next", st.Active, st.Trial, want))
	if u.noReboot {
		return before, nil
	}
	u.begin()
	if err := u.c.Reboot(ctx); err != nil {
		return mgmt.Status{}, fmt.Errorf("push: reboot: %w", err)
	}
	after, err := u.WaitConfirmed(ctx, before, want, "")
	if err != nil {
		return mgmt.Status{}, err
	}
	u.end("reboot", fmt.Sprintf("build %s answers on slot %s", after.BuildID, after.Slot))
	return after, nil
}

// WaitConfirmed polls the agent until a boot newer than before answers
// from slot n (with build buildID unless empty) and slot.json has it
// active with no trial pending. A new boot from the other slot means the
// trial failed: the error carries slot.json's reason.
func (u *Updater) WaitConfirmed(ctx context.Context, before mgmt.Status, n slot.Name, buildID string) (mgmt.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, u.waitTimeout)
	defer cancel()
	var last mgmt.Status
	var lastErr error
	for {
		st, err := callStatus(ctx, u.c)
		switch {
		case err != nil:
			lastErr = err
		case st.StartedAt.Equal(before.StartedAt) && st.UptimeSeconds >= before.UptimeSeconds:
			// Still the boot that took the update; it is going down.
		case slot.Name(st.Slot) != n:
			reason := "unknown"
			if st.SlotState != nil && st.SlotState.LastFailed != nil {
				reason = st.SlotState.LastFailed.Reason
			}
			return st, fmt.Errorf("push: the appliance came back on slot %s, not %s: the trial failed: %s", st.Slot, n, reason)
		case buildID != "" && st.BuildID != buildID:
			return st, fmt.Errorf("push: slot %s runs build %s, want %s", st.Slot, st.BuildID, buildID)
		// Status.Trial says how this boot started; slot.json says whether
		// the trial was confirmed since.
		case st.SlotState != nil && slot.Name(st.SlotState.Active) == n && st.SlotState.Trial == "":
			return st, nil
		default:
			last = st
		}
		select {
		case <-ctx.Done():
			if last.Slot != "" {
				return last, fmt.Errorf("push: slot %s did not confirm its trial within %s (last status: slot %s, trial %v)", n, u.waitTimeout, last.Slot, last.Trial)
			}
			return last, fmt.Errorf("push: no new boot answered within %s (last error: %v)", u.waitTimeout, lastErr)
		case <-time.After(u.pollInterval):
		}
	}
}

func callStatus(ctx context.Context, c *mgmt.Client) (mgmt.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, statusCallTimeout)
	defer cancel()
	return c.Status(ctx)
}

// targetFor picks the VM target of cfg for GOARCH arch.
func targetFor(cfg *config.Config, running, arch string) (config.Target, error) {
	if running != "" {
		// The agent says what it runs: build that again (a Pi and an
		// arm64 VM share an architecture, not an image).
		t, err := config.ParseTarget(running)
		if err != nil {
			return "", fmt.Errorf("push: the appliance runs target %q: %w", running, err)
		}
		if !cfg.HasTarget(t) {
			return "", fmt.Errorf("push: the appliance runs target %s, which %s does not list (targets %v)", t, cfg.File, cfg.Targets)
		}
		if t.Arch() != arch {
			return "", fmt.Errorf("push: the appliance reports target %s but architecture %s", t, arch)
		}
		return t, nil
	}
	// Agents of images without a target in appliance.json: go by arch.
	for _, t := range cfg.Targets {
		if t.IsVM() && t.Arch() == arch {
			return t, nil
		}
	}
	for _, t := range cfg.Targets {
		if t.Arch() == arch {
			return t, nil
		}
	}
	return "", fmt.Errorf("push: %s lists no target for the appliance's architecture %q (targets %v)", cfg.File, arch, cfg.Targets)
}

func hashReader(r *io.SectionReader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(r, 0, r.Size())); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// pushBootFiles sends the boot files the image boots slot n with
// (image.BootFiles) where they differ from what the agent says n boots
// with now, and returns the names sent. An agent that cannot say gets them
// all.
func (u *Updater) pushBootFiles(ctx context.Context, im *image.Image, n slot.Name) ([]string, error) {
	files, err := im.BootFiles(n)
	if err != nil {
		return nil, fmt.Errorf("push: %w", err)
	}
	have := map[string]string{}
	if bf, err := u.c.BootFiles(ctx, string(n)); err == nil {
		have = bf.Slots[string(n)]
	} else if !errors.Is(err, mgmt.ErrNotFound) {
		return nil, fmt.Errorf("push: boot files of slot %s: %w", n, err)
	}
	var send []mgmt.BootFile
	var names []string
	for _, name := range slices.Sorted(maps.Keys(files)) {
		data := files[name]
		sum := sha256.Sum256(data)
		hexSum := hex.EncodeToString(sum[:])
		if have[name] == hexSum {
			continue
		}
		send = append(send, mgmt.BootFile{Name: name, Body: bytes.NewReader(data), Size: int64(len(data)), SHA256: hexSum})
		names = append(names, name)
	}
	if len(send) == 0 {
		return nil, nil
	}
	if _, err := u.c.UpdateBoot(ctx, send, nil); err != nil {
		return nil, fmt.Errorf("push: boot files for slot %s: %w", n, err)
	}
	return names, nil
}
