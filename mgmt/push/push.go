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
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ingotdev/ingot/builder/assemble"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/fat"
	"github.com/ingotdev/ingot/packer/format/gpt"
	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/format/piboot"
	"github.com/ingotdev/ingot/packer/format/squashfs"
)

// Defaults of the wait for the new build.
const (
	defaultWaitTimeout  = 5 * time.Minute
	defaultPollInterval = 500 * time.Millisecond
	statusCallTimeout   = 5 * time.Second
	progressEvery       = 500 * time.Millisecond
)

// Step is one timed step of an update.
type Step struct {
	Name     string
	Duration time.Duration
}

// Report describes a finished update.
type Report struct {
	BuildID   string
	Slot      string // the slot the update went to
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

// Option configures Update and Rollback.
type Option func(*options)

type options struct {
	assemble     []assemble.Option
	log          io.Writer
	noReboot     bool
	waitTimeout  time.Duration
	pollInterval time.Duration
}

// WithAssembleOptions passes options to assemble.Image.
func WithAssembleOptions(opts ...assemble.Option) Option {
	return func(o *options) { o.assemble = append(o.assemble, opts...) }
}

// WithLog sets where steps and upload progress are printed (default:
// nowhere).
func WithLog(w io.Writer) Option { return func(o *options) { o.log = w } }

// WithNoReboot stops after the commit: the update boots at the next reboot.
func WithNoReboot() Option { return func(o *options) { o.noReboot = true } }

// WithWaitTimeout bounds the wait for the rebooted appliance (default 5 min).
func WithWaitTimeout(d time.Duration) Option { return func(o *options) { o.waitTimeout = d } }

// WithPollInterval sets how often status is asked while waiting.
func WithPollInterval(d time.Duration) Option { return func(o *options) { o.pollInterval = d } }

func newOptions(opts []Option) options {
	o := options{log: io.Discard, waitTimeout: defaultWaitTimeout, pollInterval: defaultPollInterval}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// timer records steps and prints them as they end.
type timer struct {
	log   io.Writer
	steps []Step
	start time.Time
}

func (t *timer) begin() { t.start = time.Now() }

func (t *timer) end(name, detail string) time.Duration {
	d := time.Since(t.start)
	t.steps = append(t.steps, Step{Name: name, Duration: d})
	fmt.Fprintf(t.log, "%-8s %6.2fs  %s\n", name, d.Seconds(), detail)
	return d
}

// Update builds cfg for the agent's architecture and installs it on the
// appliance behind c (see the package documentation).
func Update(ctx context.Context, c *mgmt.Client, cfg *config.Config, opts ...Option) (*Report, error) {
	o := newOptions(opts)
	tm := &timer{log: o.log}

	tm.begin()
	before, err := callStatus(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("push: status of %s: %w", c.Target(), err)
	}
	if !before.HasFeature(mgmt.FeatureUpdateRoot) {
		return nil, fmt.Errorf("push: the agent at %s does not offer root updates (%s)", c.Target(), before.SlotError)
	}
	target, err := targetFor(cfg, before.Target, before.Arch)
	if err != nil {
		return nil, err
	}
	tm.end("status", fmt.Sprintf("%s build %s on slot %s (%s)", before.Name, before.BuildID, before.Slot, before.Arch))

	tm.begin()
	tmp, err := os.MkdirTemp("", "ingot-update-")
	if err != nil {
		return nil, fmt.Errorf("push: %w", err)
	}
	defer os.RemoveAll(tmp)
	img := filepath.Join(tmp, cfg.Name+"-"+string(target)+".img")
	rep, err := assemble.Image(ctx, cfg, target, img, o.assemble...)
	if err != nil {
		return nil, fmt.Errorf("push: build: %w", err)
	}
	tm.end("build", fmt.Sprintf("build %s for %s", rep.BuildID, target))

	r, err := pushRoot(ctx, c, img, target.Arch(), tm, o)
	if err != nil {
		return nil, err
	}
	r.BuildID = rep.BuildID
	return finish(ctx, c, before, r, tm, o)
}

// PushImage installs an already built image file for GOARCH arch: upload,
// commit, and (unless WithNoReboot) reboot and wait for buildID.
func PushImage(ctx context.Context, c *mgmt.Client, image, arch, buildID string, opts ...Option) (*Report, error) {
	o := newOptions(opts)
	tm := &timer{log: o.log}
	before, err := callStatus(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("push: status of %s: %w", c.Target(), err)
	}
	r, err := pushRoot(ctx, c, image, arch, tm, o)
	if err != nil {
		return nil, err
	}
	r.BuildID = buildID
	return finish(ctx, c, before, r, tm, o)
}

func pushRoot(ctx context.Context, c *mgmt.Client, image, arch string, tm *timer, o options) (*Report, error) {
	tm.begin()
	root, closeRoot, err := RootImage(image)
	if err != nil {
		return nil, err
	}
	defer closeRoot()
	sum, err := hashReader(root)
	if err != nil {
		return nil, fmt.Errorf("push: %s: hash root: %w", image, err)
	}
	size := root.Size()
	pr := newProgress(o.log, size)
	res, err := c.UpdateRoot(ctx, io.NewSectionReader(root, 0, size), size, sum, arch, pr.update)
	pr.done()
	if err != nil {
		return nil, fmt.Errorf("push: upload root: %w", err)
	}
	if res.SHA256 != sum || res.Bytes != size {
		return nil, fmt.Errorf("push: the agent wrote %d bytes with sha256 %s, sent %d bytes with sha256 %s", res.Bytes, res.SHA256, size, sum)
	}
	d := tm.end("push", fmt.Sprintf("%s to slot %s, %.1f MB/s", config.FormatSize(size), res.Slot, float64(size)/1e6/time.Since(tm.start).Seconds()))
	r := &Report{Slot: res.Slot, RootBytes: size, PushDuration: d}

	tm.begin()
	sent, err := pushBootFiles(ctx, c, image, res.Slot)
	if err != nil {
		return nil, err
	}
	r.BootFiles = sent
	detail := "kernel, initramfs and command line unchanged"
	if len(sent) > 0 {
		detail = "sent " + strings.Join(sent, ", ") + " for slot " + res.Slot
	}
	tm.end("boot", detail)

	tm.begin()
	st, err := c.Commit(ctx)
	if err != nil {
		return nil, fmt.Errorf("push: commit: %w", err)
	}
	tm.end("commit", fmt.Sprintf("slot.json: active %s, trial %s", st.Active, st.Trial))
	return r, nil
}

func finish(ctx context.Context, c *mgmt.Client, before mgmt.Status, r *Report, tm *timer, o options) (*Report, error) {
	if o.noReboot {
		r.Steps = tm.steps
		fmt.Fprintf(o.log, "staged slot %s; it boots on trial at the next reboot\n", r.Slot)
		return r, nil
	}
	tm.begin()
	if err := c.Reboot(ctx); err != nil {
		return nil, fmt.Errorf("push: reboot: %w", err)
	}
	st, err := WaitConfirmed(ctx, c, before, r.Slot, r.BuildID, o)
	if err != nil {
		return nil, err
	}
	tm.end("reboot", fmt.Sprintf("build %s answers on slot %s, trial confirmed", st.BuildID, st.Slot))
	r.Status = st
	r.Steps = tm.steps
	return r, nil
}

// Rollback switches the appliance back to its other slot: it cancels a
// pending trial or puts the other slot on trial, then (unless
// WithNoReboot) reboots and waits until that slot runs confirmed.
func Rollback(ctx context.Context, c *mgmt.Client, opts ...Option) (mgmt.Status, error) {
	o := newOptions(opts)
	tm := &timer{log: o.log}
	tm.begin()
	before, err := callStatus(ctx, c)
	if err != nil {
		return mgmt.Status{}, fmt.Errorf("push: status of %s: %w", c.Target(), err)
	}
	st, err := c.Rollback(ctx)
	if err != nil {
		return mgmt.Status{}, fmt.Errorf("push: rollback: %w", err)
	}
	want := st.Active
	if st.Trial != "" {
		want = st.Trial
	}
	tm.end("rollback", fmt.Sprintf("slot.json: active %s, trial %s; slot %s boots next", st.Active, st.Trial, want))
	if o.noReboot {
		return before, nil
	}
	tm.begin()
	if err := c.Reboot(ctx); err != nil {
		return mgmt.Status{}, fmt.Errorf("push: reboot: %w", err)
	}
	after, err := WaitConfirmed(ctx, c, before, want, "", o)
	if err != nil {
		return mgmt.Status{}, err
	}
	tm.end("reboot", fmt.Sprintf("build %s answers on slot %s", after.BuildID, after.Slot))
	return after, nil
}

// WaitConfirmed polls the agent until a boot newer than before answers
// from slot (with build buildID unless empty) and slot.json has it active
// with no trial pending. A new boot from the other slot means the trial
// failed: the error carries slot.json's reason.
func WaitConfirmed(ctx context.Context, c *mgmt.Client, before mgmt.Status, slot, buildID string, o options) (mgmt.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, o.waitTimeout)
	defer cancel()
	var last mgmt.Status
	var lastErr error
	for {
		st, err := callStatus(ctx, c)
		switch {
		case err != nil:
			lastErr = err
		case st.StartedAt.Equal(before.StartedAt) && st.UptimeSeconds >= before.UptimeSeconds:
			// Still the boot that took the update; it is going down.
		case st.Slot != slot:
			reason := "unknown"
			if st.SlotState != nil && st.SlotState.LastFailed != nil {
				reason = st.SlotState.LastFailed.Reason
			}
			return st, fmt.Errorf("push: the appliance came back on slot %s, not %s: the trial failed: %s", st.Slot, slot, reason)
		case buildID != "" && st.BuildID != buildID:
			return st, fmt.Errorf("push: slot %s runs build %s, want %s", st.Slot, st.BuildID, buildID)
		// Status.Trial says how this boot started; slot.json says whether
		// the trial was confirmed since.
		case st.SlotState != nil && st.SlotState.Active == slot && st.SlotState.Trial == "":
			return st, nil
		default:
			last = st
		}
		select {
		case <-ctx.Done():
			if last.Slot != "" {
				return last, fmt.Errorf("push: slot %s did not confirm its trial within %s (last status: slot %s, trial %v)", slot, o.waitTimeout, last.Slot, last.Trial)
			}
			return last, fmt.Errorf("push: no new boot answered within %s (last error: %v)", o.waitTimeout, lastErr)
		case <-time.After(o.pollInterval):
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

// RootImage opens an image file and returns its root-a squashfs: the
// partition's bytes up to the filesystem's end, rounded up to the 4 KiB
// the writer pads to.
func RootImage(image string) (*io.SectionReader, func() error, error) {
	f, err := os.Open(image)
	if err != nil {
		return nil, nil, fmt.Errorf("push: %w", err)
	}
	sr, err := rootSection(f, image)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return sr, f.Close, nil
}

// imagePartition finds the GPT partition called name in the image file f.
func imagePartition(f *os.File, image, name string) (gpt.Partition, error) {
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return gpt.Partition{}, fmt.Errorf("push: %s: %w", image, err)
	}
	t, err := gpt.Read(f, size)
	if err != nil {
		return gpt.Partition{}, fmt.Errorf("push: %s: %w", image, err)
	}
	for _, p := range t.Partitions {
		if p.Name == name {
			return p, nil
		}
	}
	return gpt.Partition{}, fmt.Errorf("push: %s: no %q partition", image, name)
}

func rootSection(f *os.File, image string) (*io.SectionReader, error) {
	p, err := imagePartition(f, image, layout.RootAPartition)
	if err != nil {
		return nil, err
	}
	part := &p
	b := make([]byte, squashfs.SuperblockBytes)
	if _, err := f.ReadAt(b, part.OffsetBytes()); err != nil {
		return nil, fmt.Errorf("push: %s: partition %s: superblock: %w", image, part.Name, err)
	}
	sb, err := squashfs.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("push: %s: partition %s: %w", image, part.Name, err)
	}
	if sb.PaddedBytes() > uint64(part.SizeBytes()) {
		return nil, fmt.Errorf("push: %s: partition %s: squashfs bytes_used %d does not fit the partition's %d bytes", image, part.Name, sb.BytesUsed, part.SizeBytes())
	}
	return io.NewSectionReader(f, part.OffsetBytes(), int64(sb.PaddedBytes())), nil
}

func hashReader(r *io.SectionReader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(r, 0, r.Size())); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// progress prints an upload progress line at most every progressEvery.
type progress struct {
	w     io.Writer
	total int64
	start time.Time
	last  time.Time
	n     int64
}

func newProgress(w io.Writer, total int64) *progress {
	return &progress{w: w, total: total, start: time.Now()}
}

func (p *progress) update(n int64) {
	p.n = n
	if time.Since(p.last) < progressEvery {
		return
	}
	p.last = time.Now()
	p.print()
}

func (p *progress) print() {
	pct := 100.0
	if p.total > 0 {
		pct = 100 * float64(p.n) / float64(p.total)
	}
	rate := float64(p.n) / 1e6 / max(time.Since(p.start).Seconds(), 1e-9)
	fmt.Fprintf(p.w, "push: %s / %s (%3.0f%%) %.1f MB/s\n", config.FormatSize(p.n), config.FormatSize(p.total), pct, rate)
}

func (p *progress) done() { p.print() }

// pushBootFiles sends the boot files of image for slot sl (ImageBootFiles)
// where they differ from what the agent says sl boots with now, and
// returns the names sent. An agent that cannot say gets them all.
func pushBootFiles(ctx context.Context, c *mgmt.Client, image, sl string) ([]string, error) {
	files, err := ImageBootFiles(image, sl)
	if err != nil {
		return nil, err
	}
	have := map[string]string{}
	if bf, err := c.BootFiles(ctx, sl); err == nil {
		have = bf.Slots[sl]
	} else if !errors.Is(err, mgmt.ErrNotFound) {
		return nil, fmt.Errorf("push: boot files of slot %s: %w", sl, err)
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
	if _, err := c.UpdateBoot(ctx, send, nil); err != nil {
		return nil, fmt.Errorf("push: boot files for slot %s: %w", sl, err)
	}
	return names, nil
}

// ImageBootFiles reads the kernel, initramfs (none on a Raspberry Pi),
// command line and, on a Raspberry Pi, device trees and overlays (names
// relative to the slot's directory) that a fresh image boots slot sl with
// from its boot partition.
func ImageBootFiles(image, sl string) (map[string][]byte, error) {
	f, err := os.Open(image)
	if err != nil {
		return nil, fmt.Errorf("push: %w", err)
	}
	defer f.Close()
	part, err := imagePartition(f, image, layout.BootPartition)
	if err != nil {
		return nil, err
	}
	section := fat.NewSection(f, part.OffsetBytes(), part.SizeBytes())
	bootFS, err := fat.Open(section, section.Size())
	if err != nil {
		return nil, fmt.Errorf("push: %s: boot partition: %w", image, err)
	}
	out := map[string][]byte{}
	if _, err := fs.Stat(bootFS, piboot.ConfigFile); err == nil {
		// A Raspberry Pi image: the slot's directory with its kernel,
		// command line and device trees; no initramfs.
		prefix := piboot.PrefixDir(sl)
		for _, name := range []string{layout.KernelFile, layout.CmdlineFile} {
			data, err := fs.ReadFile(bootFS, prefix+name)
			if err != nil {
				return nil, fmt.Errorf("push: %s: boot partition: %w", image, err)
			}
			out[name] = data
		}
		trees, err := layout.DeviceTreeFiles(bootFS, prefix)
		if err != nil {
			return nil, fmt.Errorf("push: %s: boot partition: %w", image, err)
		}
		for _, name := range trees {
			if out[name], err = fs.ReadFile(bootFS, prefix+name); err != nil {
				return nil, fmt.Errorf("push: %s: boot partition: %w", image, err)
			}
		}
		return out, nil
	}
	for _, name := range []string{layout.KernelFile, layout.InitrdFile, layout.CmdlineFile} {
		data, err := fs.ReadFile(bootFS, layout.SlotBootFile(name, sl))
		if errors.Is(err, fs.ErrNotExist) {
			data, err = fs.ReadFile(bootFS, name)
		}
		if err != nil {
			return nil, fmt.Errorf("push: %s: boot partition: %w", image, err)
		}
		out[name] = data
	}
	return out, nil
}
