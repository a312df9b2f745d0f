package update

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/format/slot"
	"github.com/ingotdev/ingot/packer/format/squashfs"
)

// RootSpec describes a root that is written into the inactive slot piece
// by piece (Manager.BeginRoot), as a pulled release is: chunks arrive out
// of order, from the registry or from the running slot, each verified
// before it is written.
type RootSpec struct {
	// Size is the root's size in bytes; SHA256 the hex SHA-256 of all of
	// it, which Finish checks by reading the slot back.
	Size   int64
	SHA256 string
	// Arch is the GOARCH the root was built for; Release its release
	// number, for the update's record.
	Arch    string
	Release uint64
}

// RootWriter writes one root into the slot this boot does not run. It
// holds the Manager's update lock from BeginRoot until Finish or Abort.
// The slot's first 4 KiB (the squashfs superblock) are kept in memory and
// written by Finish only, after the whole root read back from the slot
// has the declared SHA-256: until then nothing can mount or boot the
// slot, whatever was written.
type RootWriter struct {
	m    *Manager
	p    Partition
	slot slot.Name
	spec RootSpec
	// head holds the root's first bytes up to headBytes; headFilled
	// counts the bytes of it written so far (pieces do not overlap).
	head       []byte
	headFilled int
	// HadValidRoot reports that the slot held a complete root when the
	// write began, so nothing in it is left from an interrupted write of
	// this root.
	HadValidRoot bool
	ended        bool
}

// BeginRoot starts writing a root described by rs into the slot this boot
// does not run. It checks the size against the partition and the
// architecture, cancels a pending trial of that slot, discards staged
// boot files and zeroes the slot's first 4 KiB; the rest of the slot is
// left as it is, so that an interrupted write of the same root can be
// resumed (the caller re-reads and re-verifies what it keeps). Until
// Finish or Abort, other update operations fail with mgmt.ErrConflict.
func (m *Manager) BeginRoot(ctx context.Context, rs RootSpec) (*RootWriter, error) {
	if err := m.lock(); err != nil {
		return nil, err
	}
	w, err := m.beginRoot(ctx, rs)
	if err != nil {
		m.mu.Unlock()
		return nil, err
	}
	return w, nil
}

func (m *Manager) beginRoot(ctx context.Context, rs RootSpec) (*RootWriter, error) {
	m.staged = ""
	if _, err := ParseSHA256(rs.SHA256); err != nil {
		return nil, fmt.Errorf("update: root: %w", err)
	}
	t, s, err := m.target()
	if err != nil {
		return nil, err
	}
	m.stagedDigests = nil
	if err := DiscardBootFiles(m.bootDir); err != nil {
		return nil, err
	}
	p, err := m.open(ctx, t)
	if err != nil {
		return nil, fmt.Errorf("update: slot %s: %w", t, err)
	}
	fail := func(err error) (*RootWriter, error) {
		p.Close()
		return nil, fmt.Errorf("update: slot %s: root: %w", t, err)
	}
	switch {
	case rs.Size < squashfs.SuperblockBytes:
		return fail(fmt.Errorf("a root of %d bytes is too small to be a squashfs: %w", rs.Size, mgmt.ErrRejected))
	case rs.Size > p.SizeBytes():
		return fail(fmt.Errorf("a root of %d bytes does not fit the %d-byte partition: %w", rs.Size, p.SizeBytes(), mgmt.ErrTooLarge))
	case rs.Arch != m.o.arch:
		return fail(fmt.Errorf("the root is for %q, this appliance runs %s: %w", rs.Arch, m.o.arch, mgmt.ErrRejected))
	}
	hadValid := ValidRoot(p, p.SizeBytes()) == nil
	if s.Trial == t {
		if err := m.cancelTrial(s, t); err != nil {
			return fail(err)
		}
	}
	if err := Invalidate(p); err != nil {
		return fail(err)
	}
	return &RootWriter{m: m, p: p, slot: t, spec: rs, head: make([]byte, min(int64(headBytes), rs.Size)), HadValidRoot: hadValid}, nil
}

// Slot is the slot being written.
func (w *RootWriter) Slot() slot.Name { return w.slot }

// WriteAt writes b at offset off of the root. Bytes within the first
// 4 KiB go to memory until Finish; pieces must not overlap.
func (w *RootWriter) WriteAt(b []byte, off int64) (int, error) {
	if w.ended {
		return 0, errors.New("update: root: write after the end")
	}
	if off < 0 || off+int64(len(b)) > w.spec.Size {
		return 0, fmt.Errorf("update: root: write of %d bytes at %d is outside the %d-byte root", len(b), off, w.spec.Size)
	}
	n := 0
	if off < int64(len(w.head)) {
		n = copy(w.head[off:], b)
		w.headFilled += n
		b, off = b[n:], off+int64(n)
	}
	if len(b) == 0 {
		return n, nil
	}
	m, err := w.p.WriteAt(b, off)
	if err != nil {
		return n + m, fmt.Errorf("update: slot %s: write at %d: %w", w.slot, off, err)
	}
	return n + m, nil
}

// ReadAt reads back what the slot holds at off, past the first 4 KiB
// (which read as zeroes until Finish).
func (w *RootWriter) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(b)) > w.spec.Size {
		return 0, fmt.Errorf("update: root: read of %d bytes at %d is outside the %d-byte root", len(b), off, w.spec.Size)
	}
	return w.p.ReadAt(b, off)
}

// Sync flushes what was written to the slot.
func (w *RootWriter) Sync() error { return syncDevice(w.p) }

// Finish checks that the slot now holds the whole root: it reads the root
// back (the head from memory) and compares its SHA-256 with the declared
// one, checks the superblock, syncs, writes the head and syncs again. Only
// then can the slot be committed. On a mismatch the slot stays invalid.
// Finish ends the write either way.
func (w *RootWriter) Finish(ctx context.Context) (Result, error) {
	if w.ended {
		return Result{}, errors.New("update: root: finished twice")
	}
	defer w.end()
	fail := func(err error) (Result, error) {
		return Result{}, fmt.Errorf("update: slot %s: root: %w", w.slot, err)
	}
	if w.headFilled != len(w.head) {
		return fail(fmt.Errorf("only %d of the first %d bytes were written", w.headFilled, len(w.head)))
	}
	if err := checkSuperblock(w.head, w.spec.Size); err != nil {
		return fail(fmt.Errorf("%w: %w", err, mgmt.ErrRejected))
	}
	h := sha256.New()
	h.Write(w.head)
	rest := io.NewSectionReader(w.p, int64(len(w.head)), w.spec.Size-int64(len(w.head)))
	if _, err := io.CopyBuffer(h, &ctxReader{ctx: ctx, r: rest}, make([]byte, copyBufferBytes)); err != nil {
		return fail(fmt.Errorf("reading the written root back: %w", err))
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != w.spec.SHA256 {
		return fail(fmt.Errorf("the %d bytes written have SHA-256 %s, the release declares %s: %w", w.spec.Size, got, w.spec.SHA256, mgmt.ErrRejected))
	}
	if err := syncDevice(w.p); err != nil {
		return fail(err)
	}
	if _, err := w.p.WriteAt(w.head, 0); err != nil {
		err = fmt.Errorf("write offset 0: %w", err)
		if ierr := Invalidate(w.p); ierr != nil {
			err = errors.Join(err, ierr)
		}
		return fail(err)
	}
	if err := syncDevice(w.p); err != nil {
		if ierr := Invalidate(w.p); ierr != nil {
			err = errors.Join(err, ierr)
		}
		return fail(err)
	}
	w.m.staged, w.m.stagedRelease = w.slot, w.spec.Release
	return Result{Bytes: w.spec.Size, SHA256: w.spec.SHA256}, nil
}

// Abort ends the write without completing it: the slot stays invalid
// (its head zeroed), what was written stays for a resumed write.
func (w *RootWriter) Abort() {
	if !w.ended {
		w.end()
	}
}

func (w *RootWriter) end() {
	w.ended = true
	w.p.Close()
	w.m.mu.Unlock()
}

// OpenRunning opens the root slot this boot runs, for reading the chunks
// an update can reuse. The caller must only read from it.
func (m *Manager) OpenRunning(ctx context.Context) (Partition, error) {
	p, err := m.open(ctx, m.booted)
	if err != nil {
		return nil, fmt.Errorf("update: running slot %s: %w", m.booted, err)
	}
	return p, nil
}

// Booted is the slot this boot runs.
func (m *Manager) Booted() slot.Name { return m.booted }

// SlotSpecificBootFile reports whether boot file name differs between the
// slots of one image, so that a release's copy (built for slot a) must
// not be installed into another slot: a Raspberry Pi's cmdline.txt names
// the slot and its root partition. A VM's loader adds both at boot.
func (m *Manager) SlotSpecificBootFile(name string) bool {
	return m.fw != nil && name == layout.CmdlineFile
}
