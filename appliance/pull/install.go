package pull

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/ingotdev/ingot/appliance/update"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/mgmt/release"
	"github.com/ingotdev/ingot/packer/format/cdc"
	"github.com/ingotdev/ingot/packer/format/squashfs"
)

// Bounds of an install.
const (
	// maxBufferedPiece is the largest piece read into memory, verified,
	// then written. A larger one (a release whose root is one layer) is
	// streamed into the slot and only known good at its end, like a
	// pushed root.
	maxBufferedPiece = cdc.MaxSize
	// journalEvery is how many bytes are written between two journal
	// saves (each preceded by a sync of the slot).
	journalEvery = 2 << 20
	// maxRetryWait caps the wait between two attempts of a download.
	maxRetryWait = 30 * time.Second
)

type installOptions struct {
	// scheduled: a check of update.from; it installs only a newer release
	// that did not fail here before.
	scheduled      bool
	allowDowngrade bool
	// retry installs a release that failed its trial here before.
	retry bool
}

// install verifies the release at ref and installs this appliance's target
// of it into the inactive slot, then commits it as the trial.
func (p *Puller) install(ctx context.Context, ref name.Reference, o installOptions) (mgmt.PullResult, error) {
	if !p.installing.TryLock() {
		return mgmt.PullResult{}, fmt.Errorf("%w: %w", ErrBusy, mgmt.ErrConflict)
	}
	defer p.installing.Unlock()
	defer p.setProgress(nil)
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithTransport(p.cfg.Transport), remote.WithAuthFromKeychain(keychain{p})}
	// One client for the whole install: it asks the registry how to
	// authenticate (GET /v2/, and a token from a token service) once per
	// repository, not again for every blob.
	client, err := remote.NewPuller(ropts...)
	if err != nil {
		return mgmt.PullResult{}, fmt.Errorf("pull: %w", err)
	}
	ropts = append(ropts, remote.Reuse(client))

	if o.scheduled {
		// A HEAD of the tag is all a check costs while nothing changed.
		desc, err := remote.Head(ref, ropts...)
		if err != nil {
			return mgmt.PullResult{}, fmt.Errorf("pull: %s: %w", ref, err)
		}
		if skip := p.skip(desc.Digest.String()); skip != "" {
			return mgmt.PullResult{}, fmt.Errorf("%s: %w", skip, errNothingNew)
		}
	}

	started := p.cfg.Now()
	p.setProgress(&mgmt.PullProgress{Release: mgmt.ReleaseInfo{Ref: ref.String()}, Phase: mgmt.PhaseVerify, Started: started})
	var r *release.Release
	err = p.retryIf(ctx, "release "+ref.String(), cutShort, func() (err error) {
		r, err = release.Verify(ctx, ref, release.Policy{Keys: p.cfg.Keys, RunningRelease: p.cfg.Release, AllowDowngrade: o.allowDowngrade}, ropts...)
		return err
	})
	if err != nil {
		return mgmt.PullResult{}, p.failed(mgmt.ReleaseInfo{Ref: ref.String()}, refusal(err))
	}
	info := mgmt.ReleaseInfo{Ref: ref.String(), Digest: r.Digest.String(), Release: r.Number}
	t, err := r.Target(p.cfg.Target)
	if err != nil {
		return mgmt.PullResult{}, p.failed(info, fmt.Errorf("%w: %w", err, mgmt.ErrRejected))
	}
	info.BuildID, info.Created = t.Config.BuildID, t.Config.Created
	if p.cfg.Name != "" && t.Config.Name != p.cfg.Name {
		return mgmt.PullResult{}, p.failed(info, fmt.Errorf("pull: release %d is of appliance %q, this is %q: %w", r.Number, t.Config.Name, p.cfg.Name, mgmt.ErrRejected))
	}
	if t.Config.Arch != p.cfg.Arch {
		return mgmt.PullResult{}, p.failed(info, fmt.Errorf("pull: release %d target %s is built for %s, this appliance runs %s: %w", r.Number, t.Name, t.Config.Arch, p.cfg.Arch, mgmt.ErrRejected))
	}
	if o.scheduled {
		p.mu.Lock()
		avail := info
		p.status.Available = &avail
		p.mu.Unlock()
		if r.Number <= p.cfg.Release {
			return mgmt.PullResult{}, fmt.Errorf("release %d at %s is not newer than the running release %d: %w", r.Number, ref, p.cfg.Release, errNothingNew)
		}
	}
	if t.Config.BuildID != "" && t.Config.BuildID == p.cfg.BuildID {
		return mgmt.PullResult{}, fmt.Errorf("pull: release %d (%s) is build %s, which this appliance runs already: %w", r.Number, r.Digest, t.Config.BuildID, mgmt.ErrConflict)
	}
	p.mu.Lock()
	f, failedBefore := p.state.failed(info.Digest)
	p.mu.Unlock()
	if failedBefore && !o.retry {
		err := fmt.Errorf("pull: release %d (%s) failed its trial here before (%s); it is not installed again unless asked to retry: %w", r.Number, r.Digest, f.Reason, mgmt.ErrRejected)
		if o.scheduled {
			return mgmt.PullResult{}, fmt.Errorf("%w: %w", err, errNothingNew)
		}
		return mgmt.PullResult{}, err
	}

	res, err := p.installTarget(ctx, r, t, info, started)
	if err != nil {
		return mgmt.PullResult{}, p.failed(info, err)
	}
	return res, nil
}

// skip says why the release with index digest d is not looked at by a
// scheduled check, or "" when it is.
func (p *Puller) skip(d string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.state.Running != nil && p.state.Running.Digest == d:
		return "release " + d + " runs already"
	case p.state.Trial != nil && p.state.Trial.Info.Digest == d:
		return "release " + d + " is installed, its trial pending"
	}
	if f, ok := p.state.failed(d); ok {
		return fmt.Sprintf("release %s failed its trial here at %s (%s); not retried", d, f.At.UTC().Format(time.RFC3339), f.Reason)
	}
	return ""
}

// refusal marks a verification error as a refused release. An error of
// the registry or of the way to it (an HTTP status such as 401, a
// network or TLS error, a body cut short) says nothing about the release
// and is passed on as it is.
func refusal(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var registryErr *transport.Error
	var netErr net.Error
	if errors.As(err, &registryErr) || errors.As(err, &netErr) || cutShort(err) {
		return fmt.Errorf("pull: %w", err)
	}
	if errors.Is(err, mgmt.ErrRejected) {
		return fmt.Errorf("pull: refused: %w", err)
	}
	return fmt.Errorf("pull: refused: %w: %w", err, mgmt.ErrRejected)
}

// failed records err as the last failure of installing info and returns it.
func (p *Puller) failed(info mgmt.ReleaseInfo, err error) error {
	p.mu.Lock()
	p.status.LastFailure = &mgmt.PullFailure{Ref: info.Ref, Digest: info.Digest, Release: info.Release, At: p.cfg.Now(), Reason: err.Error()}
	p.mu.Unlock()
	p.cfg.Logf("%v", err)
	return err
}

func (p *Puller) setProgress(pr *mgmt.PullProgress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.status.Progress = pr
}

func (p *Puller) updateProgress(f func(*mgmt.PullProgress)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status.Progress != nil {
		f(p.status.Progress)
	}
}

// installTarget writes t's root and boot files and commits the slot.
func (p *Puller) installTarget(ctx context.Context, r *release.Release, t *release.Target, info mgmt.ReleaseInfo, started time.Time) (mgmt.PullResult, error) {
	var plan *release.RootPlan
	err := p.retryIf(ctx, "chunk index of target "+t.Name, cutShort, func() (err error) {
		plan, err = r.RootPlan(t)
		return err
	})
	if err != nil {
		return mgmt.PullResult{}, fmt.Errorf("pull: %w: %w", err, mgmt.ErrRejected)
	}
	p.updateProgress(func(pr *mgmt.PullProgress) {
		pr.Release, pr.Phase, pr.BytesRoot = info, mgmt.PhaseIndex, plan.Size
	})
	res := mgmt.PullResult{Release: info, BytesRoot: plan.Size}
	run, err := p.localChunks(ctx)
	if err != nil {
		// Without the running slot's chunks everything is downloaded.
		p.cfg.Logf("pull: reusing chunks of the running slot: %v", err)
	} else {
		defer run.part.Close()
	}

	w, err := p.cfg.Slots.BeginRoot(ctx, update.RootSpec{Size: plan.Size, SHA256: plan.Digest.Hex, Arch: t.Config.Arch, Release: info.Release})
	if err != nil {
		return mgmt.PullResult{}, err
	}
	res.Slot = string(w.Slot())
	done := p.resumable(w, t, plan)
	p.updateProgress(func(pr *mgmt.PullProgress) { pr.Phase = mgmt.PhaseRoot })
	if err := p.writePieces(ctx, r, plan, w, run, done, t, &res); err != nil {
		w.Abort()
		return mgmt.PullResult{}, err
	}
	if _, err := w.Finish(ctx); err != nil {
		// What is in the slot does not add up: start over next time.
		if rerr := removeJournal(p.cfg.StateDir); rerr != nil {
			p.cfg.Logf("%v", rerr)
		}
		return mgmt.PullResult{}, err
	}
	if err := removeJournal(p.cfg.StateDir); err != nil {
		p.cfg.Logf("%v", err)
	}

	p.updateProgress(func(pr *mgmt.PullProgress) { pr.Phase = mgmt.PhaseBoot })
	if err := p.stageBootFiles(ctx, r, t, res.Slot); err != nil {
		return mgmt.PullResult{}, err
	}
	p.updateProgress(func(pr *mgmt.PullProgress) { pr.Phase = mgmt.PhaseCommit })
	// The trial is remembered before the commit: a power cut between the
	// two leaves a record that resolveTrial drops (no update record names
	// it), never a trial that is not remembered.
	p.mu.Lock()
	p.state.Trial = &trialRecord{Info: info, Slot: res.Slot, BuildID: t.Config.BuildID, Committed: p.cfg.Now()}
	p.saveStateLocked()
	p.mu.Unlock()
	if _, err := p.cfg.Slots.Commit(ctx); err != nil {
		p.mu.Lock()
		p.state.Trial = nil
		p.saveStateLocked()
		p.mu.Unlock()
		return mgmt.PullResult{}, err
	}
	p.cfg.Logf("pull: release %d (%s, build %s) committed as the trial of slot %s after %s",
		info.Release, info.Digest, info.BuildID, res.Slot, p.cfg.Now().Sub(started).Round(time.Millisecond))
	return res, nil
}

// localChunk is where a chunk lies in the running slot.
type localChunk struct{ off, size int64 }

// runningRoot is the root this boot runs: its partition (read only), the
// chunks it holds by digest, and the digest of the whole, which says
// whether a release's patches (made against a base root) apply.
type runningRoot struct {
	part   update.Partition
	chunks map[v1.Hash]localChunk
	digest v1.Hash
}

// localChunks splits the running slot's root as a publisher splits a root
// (cdc.Split), maps each chunk's digest to where it lies, and hashes the
// whole.
func (p *Puller) localChunks(ctx context.Context) (*runningRoot, error) {
	part, err := p.cfg.Slots.OpenRunning(ctx)
	if err != nil {
		return nil, err
	}
	root, err := squashfs.Section(part, part.SizeBytes())
	if err != nil {
		part.Close()
		return nil, fmt.Errorf("the running root: %w", err)
	}
	run := &runningRoot{part: part, chunks: map[v1.Hash]localChunk{}}
	whole := sha256.New()
	err = cdc.Split(ctx, root, func(off int64, data []byte) error {
		whole.Write(data)
		sum := sha256.Sum256(data)
		run.chunks[v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}] = localChunk{off: off, size: int64(len(data))}
		return nil
	})
	if err != nil {
		part.Close()
		return nil, fmt.Errorf("chunking the running root: %w", err)
	}
	run.digest = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(whole.Sum(nil))}
	return run, nil
}

// resumable returns the pieces of plan that an interrupted install of the
// same manifest into the same slot recorded as written. They are read
// back and verified before they count. The pieces within the slot's
// first 4 KiB never do: those were kept in memory.
func (p *Puller) resumable(w *update.RootWriter, t *release.Target, plan *release.RootPlan) map[int]bool {
	done := map[int]bool{}
	j, err := loadJournal(p.cfg.StateDir)
	if err != nil {
		p.cfg.Logf("pull: %v (not resuming)", err)
	}
	if j != nil && j.Manifest == t.Descriptor.Digest.String() && j.Root == plan.Digest.String() && j.Slot == string(w.Slot()) && !w.HadValidRoot {
		for _, i := range j.Done {
			if i >= 0 && i < len(plan.Pieces) && plan.Pieces[i].Offset >= 4096 {
				done[i] = true
			}
		}
	}
	nj := &journal{Manifest: t.Descriptor.Digest.String(), Root: plan.Digest.String(), Slot: string(w.Slot())}
	for i := range plan.Pieces {
		if done[i] {
			nj.Done = append(nj.Done, i)
		}
	}
	if err := nj.save(p.cfg.StateDir); err != nil {
		p.cfg.Logf("%v", err)
	}
	return done
}

// writePieces writes every piece of plan into w: a piece recorded as done
// that reads back right is kept, one the running slot holds is copied
// from there, the rest are downloaded. Each piece is verified before it is
// written (except a streamed one, see maxBufferedPiece).
func (p *Puller) writePieces(ctx context.Context, r *release.Release, plan *release.RootPlan, w *update.RootWriter,
	run *runningRoot, done map[int]bool, t *release.Target, res *mgmt.PullResult) error {
	j := &journal{Manifest: t.Descriptor.Digest.String(), Root: plan.Digest.String(), Slot: string(w.Slot())}
	var sinceSave int64
	save := func() error {
		if err := w.Sync(); err != nil {
			return err
		}
		slices.Sort(j.Done)
		if err := j.save(p.cfg.StateDir); err != nil {
			p.cfg.Logf("%v", err)
		}
		sinceSave = 0
		return nil
	}
	var buf bytes.Buffer
	for i, pc := range plan.Pieces {
		if err := ctx.Err(); err != nil {
			return errors.Join(err, save())
		}
		switch {
		case done[i] && p.readBack(w, pc, &buf):
			res.BytesResumed += pc.Size
		case run != nil && p.copyLocal(run, pc, &buf):
			if _, err := w.WriteAt(buf.Bytes(), pc.Offset); err != nil {
				return err
			}
			res.BytesReused += pc.Size
		case !pc.Compressed() && pc.Size > maxBufferedPiece:
			if err := p.stream(ctx, r, pc, w); err != nil {
				return err
			}
			res.BytesFetched += pc.Blob.Size
		default:
			wire, patched, err := p.download(ctx, r, plan, pc, run, &buf)
			if err != nil {
				// What was written so far is kept for the next attempt.
				return errors.Join(err, save())
			}
			if _, err := w.WriteAt(buf.Bytes(), pc.Offset); err != nil {
				return err
			}
			res.BytesFetched += wire
			if patched {
				res.BytesPatched += pc.Size
			}
		}
		j.Done = append(j.Done, i)
		sinceSave += pc.Size
		p.updateProgress(func(pr *mgmt.PullProgress) {
			pr.BytesDone += pc.Size
			pr.BytesFetched, pr.BytesReused, pr.BytesResumed = res.BytesFetched, res.BytesReused, res.BytesResumed
		})
		if sinceSave >= journalEvery {
			if err := save(); err != nil {
				return err
			}
		}
	}
	return save()
}

// readBack reads piece pc from the slot being written into buf and
// reports whether it has the piece's digest.
func (p *Puller) readBack(w *update.RootWriter, pc release.Piece, buf *bytes.Buffer) bool {
	return readVerified(w, pc.Offset, pc.Size, pc.Digest, buf) == nil
}

// copyLocal reads the chunk with pc's digest from the running slot into
// buf and reports whether it is there and reads back with that digest.
func (p *Puller) copyLocal(run *runningRoot, pc release.Piece, buf *bytes.Buffer) bool {
	lc, ok := run.chunks[pc.Digest]
	if !ok || lc.size != pc.Size {
		return false
	}
	return readVerified(run.part, lc.off, lc.size, pc.Digest, buf) == nil
}

// download puts piece pc into buf from the registry: from its patch when
// the running root is the release's base, else (or when the patch fails)
// from its chunk blob. It returns the bytes downloaded and whether the
// patch made it. Either way the piece is checked against its digest.
func (p *Puller) download(ctx context.Context, r *release.Release, plan *release.RootPlan, pc release.Piece, run *runningRoot, buf *bytes.Buffer) (int64, bool, error) {
	var wire int64
	if pc.Patch != nil && plan.Base != nil && run != nil && run.digest == plan.Base.Digest {
		// One attempt: a patch that fails costs its bytes, then the
		// chunk is fetched with retries.
		dict := make([]byte, pc.Patch.DictSize)
		_, err := run.part.ReadAt(dict, pc.Patch.DictOffset)
		var out []byte
		if err == nil {
			out, err = r.ReadPatch(pc, dict)
		}
		wire += pc.Patch.Blob.Size
		if err == nil {
			buf.Reset()
			buf.Write(out)
			return wire, true, nil
		}
		p.cfg.Logf("pull: patch of the chunk at %d: %v; fetching the chunk", pc.Offset, err)
	}
	if !pc.Compressed() {
		if err := p.fetch(ctx, r, pc.Blob, buf); err != nil {
			return wire, false, err
		}
		return wire + pc.Blob.Size, false, nil
	}
	err := p.retry(ctx, pc.Blob, func() error {
		out, err := r.ReadPiece(pc)
		if err == nil {
			buf.Reset()
			buf.Write(out)
		}
		return err
	})
	return wire + pc.Blob.Size, false, err
}

func readVerified(r io.ReaderAt, off, size int64, want v1.Hash, buf *bytes.Buffer) error {
	if size > maxBufferedPiece {
		return fmt.Errorf("piece of %d bytes is too large to buffer", size)
	}
	buf.Reset()
	buf.Grow(int(size))
	b := buf.AvailableBuffer()[:size]
	if _, err := r.ReadAt(b, off); err != nil {
		return err
	}
	sum := sha256.Sum256(b)
	if hex.EncodeToString(sum[:]) != want.Hex {
		return errors.New("digest mismatch")
	}
	buf.Write(b)
	return nil
}

// fetch downloads blob desc into buf through the digest check, retrying
// network and server errors and bad content up to cfg.Retries times.
func (p *Puller) fetch(ctx context.Context, r *release.Release, desc v1.Descriptor, buf *bytes.Buffer) error {
	return p.retry(ctx, desc, func() error {
		buf.Reset()
		rc, err := r.Open(desc)
		if err != nil {
			return err
		}
		defer rc.Close()
		_, err = buf.ReadFrom(rc)
		return err
	})
}

// stream downloads a piece larger than maxBufferedPiece straight into the
// slot; its digest is known only at its end (and Finish checks the whole
// root again).
func (p *Puller) stream(ctx context.Context, r *release.Release, pc release.Piece, w *update.RootWriter) error {
	return p.retry(ctx, pc.Blob, func() error {
		rc, err := r.Open(pc.Blob)
		if err != nil {
			return err
		}
		defer rc.Close()
		_, err = io.CopyBuffer(io.NewOffsetWriter(w, pc.Offset), rc, make([]byte, 1<<20))
		return err
	})
}

// retry runs attempt until it succeeds, ctx ends or cfg.Retries more
// attempts failed, waiting longer each time.
func (p *Puller) retry(ctx context.Context, desc v1.Descriptor, attempt func() error) error {
	return p.retryIf(ctx, "blob "+desc.Digest.String(), func(error) bool { return true }, attempt)
}

// cutShort reports an error of a body that ended before its length. The
// registry client retries requests that fail, not a body cut off in the
// middle, so the puller retries the reads of verification (small blobs:
// signature payloads, configs, the chunk index) that end so; any other
// error of theirs ends the install at once.
func cutShort(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) }

// retryIf is retry for the errors again accepts; any other error of
// attempt is returned as it is.
func (p *Puller) retryIf(ctx context.Context, what string, again func(error) bool, attempt func() error) error {
	wait := p.cfg.RetryWait
	for n := 0; ; n++ {
		err := attempt()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !again(err) {
			return err
		}
		if n >= p.cfg.Retries {
			return fmt.Errorf("pull: %s: %d attempts failed, the last: %w", what, n+1, err)
		}
		p.cfg.Logf("pull: %s: attempt %d: %v; retrying in %s", what, n+1, err, wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, maxRetryWait)
	}
}

// stageBootFiles stages the boot files of t that differ from what slot sl
// boots with now.
func (p *Puller) stageBootFiles(ctx context.Context, r *release.Release, t *release.Target, sl string) error {
	have, err := p.cfg.Slots.BootFiles(ctx, sl)
	if err != nil {
		return err
	}
	for _, d := range t.BootFiles {
		name := d.Annotations[release.TitleAnnotation]
		if p.cfg.Slots.SlotSpecificBootFile(name) {
			continue
		}
		if have.Slots[sl][name] == d.Digest.Hex {
			continue
		}
		err := p.retry(ctx, d, func() error {
			rc, err := r.Open(d)
			if err != nil {
				return err
			}
			defer rc.Close()
			_, err = p.cfg.Slots.WriteBootFile(ctx, name, rc, d.Size, d.Digest.Hex)
			return err
		})
		if err != nil {
			return fmt.Errorf("pull: boot file %s: %w", name, err)
		}
	}
	return nil
}
