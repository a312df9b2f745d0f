package update

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/format/slot"
)

// Partition is an open root slot partition.
type Partition interface {
	Device
	io.Closer
	// SizeBytes is the size of the partition.
	SizeBytes() int64
}

// OpenFunc opens the partition of a root slot for reading and writing.
type OpenFunc func(ctx context.Context, n slot.Name) (Partition, error)

// File is a block device or regular file opened as a Partition.
type File struct {
	*os.File
	size int64
}

// SizeBytes is the size found when the file was opened.
func (f *File) SizeBytes() int64 { return f.size }

// OpenFile opens a block device (or a file standing in for one) read-write
// as a Partition; its size is where a seek to the end lands, which for a
// block device is the device's size.
func OpenFile(path string) (*File, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("update: %s: size: %w", path, err)
	}
	return &File{File: f, size: size}, nil
}

// Manager runs the update requests of the management agent for one boot:
// it knows the mounted boot partition, which slot this boot runs and how
// to open the slot partitions. One update operation runs at a time; a
// second one meanwhile fails with mgmt.ErrConflict.
type Manager struct {
	bootDir string
	booted  slot.Name
	open    OpenFunc
	opts    []Option
	// fw is the firmware of WithFirmware, or nil.
	fw Firmware
	// entries are the UEFI entries of WithEntries, or nil.
	entries *Entries
	// o are the options of opts.
	o options

	mu sync.Mutex
	// stateMu makes each change of slot.json, with the firmware files,
	// UEFI entries and update record that go with it, one step for
	// SlotState and LastUpdate: a status must not report a slot confirmed
	// (or committed) while the entries that boot it are still being
	// written, since a client that saw it may cut the power.
	stateMu sync.RWMutex
	// staged is the slot the last successful WriteRoot wrote, which
	// Commit turns into the trial slot; "" when nothing is staged.
	staged slot.Name
	// stagedDigests are the size and SHA-256 that WriteBootFile verified
	// of each boot file staged this boot, by the path it will replace;
	// Commit records them in layout.DigestsFile. Staged files of an
	// earlier boot are discarded, so none is staged without an entry.
	stagedDigests map[string]layout.FileDigest
	// stagedRelease is the release the staged root's PUT declared.
	stagedRelease uint64
}

// NewManager returns a Manager for the boot partition mounted read-write at
// bootDir, on a boot that runs slot booted. Boot files left staged by an
// earlier boot are discarded: they belong to an update that never
// committed.
func NewManager(bootDir string, booted slot.Name, open OpenFunc, opts ...Option) (*Manager, error) {
	if !booted.Valid() {
		return nil, fmt.Errorf("update: booted slot %q is not a or b (no %s on the kernel command line?)", booted, "ingot.slot")
	}
	if _, err := ReadState(bootDir); err != nil {
		return nil, err
	}
	if err := DiscardBootFiles(bootDir); err != nil {
		return nil, err
	}
	o := newOptions(opts)
	m := &Manager{bootDir: bootDir, booted: booted, open: open, opts: opts, fw: o.firmware, entries: o.entries, o: o}
	// A trial that never came up (the loader fell back) or a transition
	// whose record a power cut lost is decided from slot.json now.
	if s, err := ReadState(bootDir); err == nil {
		m.resolveRecord(s)
	}
	return m, nil
}

// resolveRecord decides the record of the last update from slot.json s
// (ResolveLastUpdate) and logs a failed write.
func (m *Manager) resolveRecord(s slot.State) {
	before := ReadLastUpdate(m.bootDir)
	r, err := ResolveLastUpdate(m.bootDir, s, m.o.now())
	if err != nil {
		m.o.logf("update: recording the last update's outcome: %v", err)
		return
	}
	if before != nil && r != nil && before.Outcome != r.Outcome {
		m.o.logf("update: the update of slot %s (build %s, release %d) %s: %s", r.Slot, r.BuildID, r.Release, r.Outcome, r.Reason)
	}
}

// endRecord records that a rollback or a new update ended the update of
// slot n (endLastUpdate) and logs a failed write.
func (m *Manager) endRecord(n slot.Name, outcome, reason string) {
	if _, err := endLastUpdate(m.bootDir, n, outcome, reason, m.o.now()); err != nil {
		m.o.logf("update: recording the last update's outcome: %v", err)
	}
}

// LastUpdate returns the record of the last update, nil when there is
// none that decodes.
func (m *Manager) LastUpdate(ctx context.Context) *mgmt.LastUpdate {
	m.stateMu.RLock()
	defer m.stateMu.RUnlock()
	return ReadLastUpdate(m.bootDir)
}

func (m *Manager) lock() error {
	if !m.mu.TryLock() {
		return fmt.Errorf("update: another update operation is in progress: %w", mgmt.ErrConflict)
	}
	return nil
}

// target returns the slot updates go to, the one this boot does not run,
// and refuses when that slot is the fallback of an unconfirmed trial.
func (m *Manager) target() (slot.Name, slot.State, error) {
	s, err := ReadState(m.bootDir)
	if err != nil {
		return "", s, err
	}
	t := m.booted.Other()
	if t == s.Active {
		return "", s, fmt.Errorf("update: this boot is an unconfirmed trial of slot %s and slot %s is its fallback; wait until the trial is confirmed, or roll back: %w", m.booted, t, mgmt.ErrConflict)
	}
	return t, s, nil
}

// WriteRoot streams a root image into the slot this boot does not run (see
// the package function WriteRoot). It starts a new update: boot files
// staged before it are discarded. When that slot is the pending trial of
// an earlier commit, the trial is cancelled in slot.json right before the
// first byte is written, so nothing ever boots a half-written slot.
// release is the root's release (mgmt.HeaderRelease), which the record of
// the update names.
func (m *Manager) WriteRoot(ctx context.Context, body io.Reader, sizeBytes int64, sha256Hex, arch string, release uint64) (mgmt.UpdateResult, error) {
	if err := m.lock(); err != nil {
		return mgmt.UpdateResult{}, err
	}
	defer m.mu.Unlock()
	m.staged = ""
	t, s, err := m.target()
	if err != nil {
		return mgmt.UpdateResult{}, err
	}
	m.stagedDigests = nil
	if err := DiscardBootFiles(m.bootDir); err != nil {
		return mgmt.UpdateResult{}, err
	}
	p, err := m.open(ctx, t)
	if err != nil {
		return mgmt.UpdateResult{}, fmt.Errorf("update: slot %s: %w", t, err)
	}
	defer p.Close()
	cancelTrial := func() error {
		if s.Trial != t {
			return nil
		}
		return m.cancelTrial(s, t)
	}
	opts := append(append([]Option(nil), m.opts...), withBeforeWrite(cancelTrial))
	res, err := WriteRoot(ctx, p, p.SizeBytes(), body, sizeBytes, sha256Hex, arch, opts...)
	if err != nil {
		return mgmt.UpdateResult{}, fmt.Errorf("slot %s: %w", t, err)
	}
	m.staged, m.stagedRelease = t, release
	return mgmt.UpdateResult{Slot: string(t), Bytes: res.Bytes, SHA256: res.SHA256}, nil
}

// WriteBootFile stages a boot partition file (see StageBootFile) for the
// update whose root was just written; Commit puts the staged files in
// place.
func (m *Manager) WriteBootFile(ctx context.Context, name string, body io.Reader, sizeBytes int64, sha256Hex string) (mgmt.UpdateResult, error) {
	if err := m.lock(); err != nil {
		return mgmt.UpdateResult{}, err
	}
	defer m.mu.Unlock()
	if m.staged == "" {
		return mgmt.UpdateResult{}, fmt.Errorf("update: boot file %s: no root was written for this update; PUT %s first: %w", name, mgmt.PathUpdateRoot, mgmt.ErrConflict)
	}
	res, dest, err := stageBootFile(ctx, m.bootDir, m.fw, name, m.staged, body, sizeBytes, sha256Hex)
	if err != nil {
		return mgmt.UpdateResult{}, err
	}
	if m.stagedDigests == nil {
		m.stagedDigests = map[string]layout.FileDigest{}
	}
	m.stagedDigests[dest] = layout.FileDigest{Size: res.Bytes, SHA256: res.SHA256}
	return mgmt.UpdateResult{File: name, Bytes: res.Bytes, SHA256: res.SHA256}, nil
}

// checkSlot opens slot n and checks that it holds a complete root.
func (m *Manager) checkSlot(ctx context.Context, n slot.Name) error {
	p, err := m.open(ctx, n)
	if err != nil {
		return err
	}
	defer p.Close()
	return ValidRoot(p, p.SizeBytes())
}

// Commit makes the slot the last WriteRoot of this boot wrote the trial
// slot, after putting staged boot files in place. It fails with
// mgmt.ErrConflict when nothing was written since the last commit.
func (m *Manager) Commit(ctx context.Context) (mgmt.SlotState, error) {
	if err := m.lock(); err != nil {
		return mgmt.SlotState{}, err
	}
	defer m.mu.Unlock()
	if m.staged == "" {
		return mgmt.SlotState{}, fmt.Errorf("update: commit: no root was written since this boot's last commit; PUT %s first: %w", mgmt.PathUpdateRoot, mgmt.ErrConflict)
	}
	t, _, err := m.target()
	if err != nil {
		return mgmt.SlotState{}, err
	}
	if t != m.staged {
		return mgmt.SlotState{}, fmt.Errorf("update: commit: staged slot %s is not the update slot %s: %w", m.staged, t, mgmt.ErrConflict)
	}
	if err := m.checkSlot(ctx, t); err != nil {
		return mgmt.SlotState{}, fmt.Errorf("update: commit slot %s: %w", t, err)
	}
	if _, err := applyBootFiles(m.bootDir, m.stagedDigests); err != nil {
		return mgmt.SlotState{}, err
	}
	m.stagedDigests = nil
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	s, err := Commit(m.bootDir, t)
	if err != nil {
		return mgmt.SlotState{}, err
	}
	if fw := m.fw; fw != nil {
		if err := fw.Trial(m.bootDir, t); err != nil {
			return mgmt.SlotState{}, fmt.Errorf("update: commit: %w", err)
		}
	}
	if err := m.SyncEntries(); err != nil {
		return mgmt.SlotState{}, fmt.Errorf("update: commit: %w", err)
	}
	m.staged = ""
	m.beginRecord(t)
	return SlotState(s), nil
}

// beginRecord starts the record of the update just committed to slot t:
// pending, with the build id of t's command line. A failed write is
// logged: the record is informational.
func (m *Manager) beginRecord(t slot.Name) {
	r := mgmt.LastUpdate{
		Started: m.o.now(), Slot: string(t), Release: m.stagedRelease,
		FromSlot: string(m.booted), FromBuildID: m.o.runningBuild, FromRelease: m.o.runningRelease,
		Outcome: mgmt.OutcomePending,
	}
	if b, err := os.ReadFile(filepath.Join(m.bootDir, slotBootFile(m.fw, layout.CmdlineFile, t))); err == nil {
		r.BuildID = layout.CmdlineBuild(string(b))
	}
	if err := saveLastUpdate(m.bootDir, r); err != nil {
		m.o.logf("update: recording the update of slot %s: %v", t, err)
	}
}

// Rollback cancels a pending trial or makes the other slot the trial (see
// the package function Rollback), and drops anything staged.
func (m *Manager) Rollback(ctx context.Context) (mgmt.SlotState, error) {
	if err := m.lock(); err != nil {
		return mgmt.SlotState{}, err
	}
	defer m.mu.Unlock()
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	m.staged = ""
	m.stagedDigests = nil
	if err := DiscardBootFiles(m.bootDir); err != nil {
		return mgmt.SlotState{}, err
	}
	prev, err := ReadState(m.bootDir)
	if err != nil {
		return mgmt.SlotState{}, err
	}
	s, err := Rollback(m.bootDir, m.booted, func(n slot.Name) error { return m.checkSlot(ctx, n) })
	if err != nil {
		return mgmt.SlotState{}, err
	}
	switch {
	case prev.Trial != "" && prev.Trial == m.booted:
		m.endRecord(prev.Trial, mgmt.OutcomeRolledBack, "rolled back by request during its trial boot")
	case prev.Trial != "":
		m.endRecord(prev.Trial, mgmt.OutcomeCancelled, "cancelled by a rollback before its trial boot")
	default:
		m.endRecord(prev.Active, mgmt.OutcomeRolledBack, fmt.Sprintf("rolled back by request: slot %s is on trial again", s.Trial))
	}
	if fw := m.fw; fw != nil {
		if s.Trial != "" {
			err = fw.Trial(m.bootDir, s.Trial)
		} else {
			err = fw.Cancel(m.bootDir)
		}
		if err != nil {
			return mgmt.SlotState{}, fmt.Errorf("update: rollback: %w", err)
		}
	}
	if err := m.SyncEntries(); err != nil {
		return mgmt.SlotState{}, fmt.Errorf("update: rollback: %w", err)
	}
	return SlotState(s), nil
}

// cancelTrial takes slot t, the pending trial of state s, off trial
// before a new root is written to it: slot.json and the UEFI entries both,
// before the first byte, so a power cut mid-write leaves nothing that
// boots t, and the update record says why.
func (m *Manager) cancelTrial(s slot.State, t slot.Name) error {
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	if err := saveState(m.bootDir, slot.State{Active: s.Active, LastFailed: s.LastFailed}); err != nil {
		return err
	}
	if err := m.SyncEntries(); err != nil {
		return err
	}
	m.endRecord(t, mgmt.OutcomeCancelled, fmt.Sprintf("a new update to slot %s replaced it before its trial boot", t))
	return nil
}

// Confirm confirms this boot's slot (see the package function Confirm);
// stage1 calls it when the trial proved healthy.
func (m *Manager) Confirm() (slot.State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	s, err := Confirm(m.bootDir, m.booted)
	if err != nil {
		return s, err
	}
	m.resolveRecord(s)
	if fw := m.fw; fw != nil && s.Active == m.booted {
		if err := fw.Activate(m.bootDir, m.booted); err != nil {
			return s, fmt.Errorf("update: confirm: %w", err)
		}
	}
	if err := m.SyncEntries(); err != nil {
		return s, fmt.Errorf("update: confirm: %w", err)
	}
	return s, nil
}

// SyncEntries makes the UEFI entries match slot.json (Entries.Sync); it
// does nothing without WithEntries. Every writer of slot.json calls it
// right after its write.
func (m *Manager) SyncEntries() error {
	if m.entries == nil {
		return nil
	}
	return m.entries.Sync(m.bootDir)
}

// RebootArg returns the reboot(2) argument the next reboot needs: the
// firmware's trial argument while a trial is pending, else "".
func (m *Manager) RebootArg() string {
	fw := m.fw
	if fw == nil {
		return ""
	}
	s, err := ReadState(m.bootDir)
	if err != nil || s.Trial == "" || s.TriesLeft == 0 {
		return ""
	}
	return fw.RebootArg()
}

// BootFiles reports the hashes of the kernel, initramfs and command line
// slot sl boots with (see BootFileHashes); an empty sl means both slots.
func (m *Manager) BootFiles(ctx context.Context, sl string) (mgmt.BootFiles, error) {
	slots := []slot.Name{slot.A, slot.B}
	if sl != "" {
		if !slot.Name(sl).Valid() {
			return mgmt.BootFiles{}, fmt.Errorf("update: boot files: slot %q is not a or b: %w", sl, mgmt.ErrInvalid)
		}
		slots = []slot.Name{slot.Name(sl)}
	}
	if err := m.lock(); err != nil {
		return mgmt.BootFiles{}, err
	}
	defer m.mu.Unlock()
	hashes, err := BootFileHashes(m.bootDir, slots...)
	if err != nil {
		return mgmt.BootFiles{}, err
	}
	return mgmt.BootFiles{Slots: hashes}, nil
}

// SlotState returns slot.json as it is now.
func (m *Manager) SlotState(ctx context.Context) (mgmt.SlotState, error) {
	m.stateMu.RLock()
	defer m.stateMu.RUnlock()
	s, err := ReadState(m.bootDir)
	if err != nil {
		return mgmt.SlotState{}, err
	}
	return SlotState(s), nil
}
