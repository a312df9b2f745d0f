// Package update writes A/B updates inside the appliance: a new root
// squashfs streamed into the inactive slot's partition, staged boot
// partition files, and the slot.json transitions that follow (commit the
// written slot as a trial, confirm a healthy trial, roll back).
//
// The rule throughout is that a power cut or a bad upload can never leave
// a slot that looks bootable but is not, and never touches the slot that
// runs now:
//
//   - Everything that can be checked before the first byte is written (the
//     declared size against the partition, the hash format, the declared
//     architecture, the squashfs superblock in the first bytes) is checked
//     first; such a rejection leaves the partition exactly as it was, so the
//     previous root there stays available for a rollback.
//   - Once writing starts, the first 4 KiB (which hold the squashfs
//     superblock) are zeroed first and written last, after the whole body
//     arrived, its length matched and its SHA-256 matched, and after the
//     rest was synced. Until then the slot has no superblock: stage0 cannot
//     mount it and Rollback will not pick it.
//   - slot.json is only written by Commit, Confirm and Rollback, atomically
//     (slot.Save).
//   - The record of the last update (layout.LastUpdateFile, lastupdate.go)
//     follows each slot.json transition; it is informational, and neither
//     its absence nor a failed write stops anything.
//
// The image's architecture is not read from the squashfs (that needs a
// squashfs reader in init); the client declares it in the Ingot-Arch
// header, taken from the image's build, and WriteRoot compares it with the
// architecture of the running init.
package update

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"
	"strings"
	"time"

	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/squashfs"
)

// Device is where a root image is written: the inactive slot's block
// device, or a regular file standing in for it. When it also has a
// Sync() error method, WriteRoot syncs before the superblock goes in and
// after.
type Device interface {
	io.ReaderAt
	io.WriterAt
}

// Result describes a root image that was written and verified.
type Result struct {
	Bytes  int64
	SHA256 string // lowercase hex
}

const (
	// headBytes is the part of the device written last and zeroed to
	// invalidate a slot; it covers the squashfs superblock.
	headBytes = 4096
	// copyBufferBytes bounds memory while streaming.
	copyBufferBytes = 1 << 20
)

// Option configures WriteRoot and Manager.
type Option func(*options)

type options struct {
	arch string
	// beforeWrite runs once every up-front check passed and before the
	// first byte is written; its error aborts with the device untouched.
	beforeWrite func() error
	// firmware is the boot loader on the boot partition that needs more
	// than slot.json; nil for the host-side loader of VMs.
	firmware Firmware
	// entries are the UEFI boot path's entries, or nil.
	entries *Entries
	// runningBuild and runningRelease are what this boot runs, recorded
	// as what an update replaced (mgmt.LastUpdate).
	runningBuild   string
	runningRelease uint64
	// logf reports what does not fail an operation: a record of the last
	// update that could not be written.
	logf func(format string, args ...any)
	// now is the clock of the last update's record.
	now func() time.Time
}

// WithArch sets the architecture images must be built for (default: the
// running init's GOARCH).
func WithArch(goarch string) Option { return func(o *options) { o.arch = goarch } }

// WithFirmware makes the Manager keep fw informed of every slot change
// and name the boot files of a slot the way fw reads them.
func WithFirmware(fw Firmware) Option { return func(o *options) { o.firmware = fw } }

// WithEntries makes the Manager mirror every change of slot.json into the
// UEFI boot path's entries (Entries.Sync), right after slot.json has it.
func WithEntries(e *Entries) Option { return func(o *options) { o.entries = e } }

// WithRunning tells the Manager the build id and release this boot runs,
// which the record of an update names as what it replaced.
func WithRunning(buildID string, release uint64) Option {
	return func(o *options) { o.runningBuild, o.runningRelease = buildID, release }
}

// WithLogf sets where the Manager reports what does not fail an operation,
// such as a record of the last update that could not be written (default:
// nowhere).
func WithLogf(logf func(format string, args ...any)) Option {
	return func(o *options) { o.logf = logf }
}

// withNow sets the clock of the last update's record (tests).
func withNow(now func() time.Time) Option { return func(o *options) { o.now = now } }

func withBeforeWrite(f func() error) Option { return func(o *options) { o.beforeWrite = f } }

func newOptions(opts []Option) options {
	o := options{arch: runtime.GOARCH, logf: func(string, ...any) {}, now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// ParseSHA256 checks a hex SHA-256 and returns it in lowercase.
func ParseSHA256(s string) (string, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if b, err := hex.DecodeString(s); err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("sha256 %q: want 64 hex digits: %w", s, mgmt.ErrInvalid)
	}
	return s, nil
}

// WriteRoot streams a root squashfs of declaredBytes from body onto dev, a
// partition of partBytes, checking it against wantSHA256 (hex) and the
// declared GOARCH imageArch. It never reads more than declaredBytes+1 from
// body and holds at most a few MiB in memory. Errors wrap mgmt.ErrInvalid,
// mgmt.ErrTooLarge or mgmt.ErrRejected for bad requests and images, so the
// agent can answer with the right status. See the package documentation
// for what dev holds after a failure.
func WriteRoot(ctx context.Context, dev Device, partBytes int64, body io.Reader, declaredBytes int64, wantSHA256, imageArch string, opts ...Option) (Result, error) {
	o := newOptions(opts)
	want, err := ParseSHA256(wantSHA256)
	if err != nil {
		return Result{}, fmt.Errorf("update: root: %w", err)
	}
	switch {
	case declaredBytes <= 0:
		return Result{}, fmt.Errorf("update: root: declared size %d: %w", declaredBytes, mgmt.ErrLengthRequired)
	case declaredBytes > partBytes:
		return Result{}, fmt.Errorf("update: root: image of %d bytes does not fit the %d-byte partition: %w", declaredBytes, partBytes, mgmt.ErrTooLarge)
	case partBytes < headBytes:
		return Result{}, fmt.Errorf("update: root: partition of %d bytes is smaller than %d", partBytes, headBytes)
	case declaredBytes < squashfs.SuperblockBytes:
		return Result{}, fmt.Errorf("update: root: image of %d bytes is too small to be a squashfs: %w", declaredBytes, mgmt.ErrRejected)
	case imageArch == "":
		return Result{}, fmt.Errorf("update: root: the image's architecture was not declared (%s header): %w", mgmt.HeaderArch, mgmt.ErrInvalid)
	case imageArch != o.arch:
		return Result{}, fmt.Errorf("update: root: image is for %s, this appliance runs %s: %w", imageArch, o.arch, mgmt.ErrRejected)
	}

	head := make([]byte, min(int64(headBytes), declaredBytes))
	if n, err := io.ReadFull(body, head); err != nil {
		return Result{}, fmt.Errorf("update: root: body ended after %d of %d bytes: %v: %w", n, declaredBytes, err, mgmt.ErrRejected)
	}
	if err := checkSuperblock(head, declaredBytes); err != nil {
		return Result{}, fmt.Errorf("update: root: %w: %w", err, mgmt.ErrRejected)
	}
	if o.beforeWrite != nil {
		if err := o.beforeWrite(); err != nil {
			return Result{}, fmt.Errorf("update: root: %w", err)
		}
	}

	// From here on the device changes: the slot is invalid until the end.
	if err := Invalidate(dev); err != nil {
		return Result{}, fmt.Errorf("update: root: %w", err)
	}
	h := sha256.New()
	h.Write(head)
	res, err := streamRest(ctx, dev, h, body, int64(len(head)), declaredBytes)
	if err == nil {
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			err = fmt.Errorf("sha256 of the %d bytes received is %s, the request declared %s: %w", declaredBytes, got, want, mgmt.ErrRejected)
		} else {
			res.SHA256 = got
		}
	}
	if err == nil {
		err = syncDevice(dev)
	}
	if err == nil {
		// The superblock goes in last: only now can anything mount the slot.
		if _, werr := dev.WriteAt(head, 0); werr != nil {
			err = fmt.Errorf("write offset 0: %w", werr)
		} else {
			err = syncDevice(dev)
		}
	}
	if err != nil {
		if ierr := Invalidate(dev); ierr != nil {
			err = errors.Join(err, ierr)
		}
		return Result{}, fmt.Errorf("update: root: %w (the slot was invalidated)", err)
	}
	return res, nil
}

// streamRest copies body bytes [from, total) to dev at the same offsets,
// hashing them, and makes sure body holds no more than total.
func streamRest(ctx context.Context, dev Device, h hash.Hash, body io.Reader, from, total int64) (Result, error) {
	buf := make([]byte, min(int64(copyBufferBytes), max(total-from, 1)))
	off := from
	for off < total {
		if err := ctx.Err(); err != nil {
			return Result{}, fmt.Errorf("after %d of %d bytes: %w", off, total, err)
		}
		chunk := buf[:min(int64(len(buf)), total-off)]
		n, err := io.ReadFull(body, chunk)
		if n > 0 {
			h.Write(chunk[:n])
			if _, werr := dev.WriteAt(chunk[:n], off); werr != nil {
				return Result{}, fmt.Errorf("write offset %d: %w", off, werr)
			}
			off += int64(n)
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return Result{}, fmt.Errorf("body ended after %d of %d bytes: %w", off, total, mgmt.ErrRejected)
			}
			return Result{}, fmt.Errorf("reading the body after %d of %d bytes: %w", off, total, err)
		}
	}
	var extra [1]byte
	if n, _ := io.ReadFull(body, extra[:]); n > 0 {
		return Result{}, fmt.Errorf("body is longer than the declared %d bytes: %w", total, mgmt.ErrRejected)
	}
	return Result{Bytes: total}, nil
}

// checkSuperblock checks the squashfs superblock at the start of an image
// of imageBytes.
func checkSuperblock(b []byte, imageBytes int64) error {
	_, err := squashfs.ParseWithin(b, imageBytes)
	return err
}

// ValidRoot checks that dev starts with a squashfs superblock, i.e. that a
// root was completely written there (WriteRoot writes the superblock
// last) or the slot still holds the image it was built with.
func ValidRoot(dev io.ReaderAt, partBytes int64) error {
	b := make([]byte, squashfs.SuperblockBytes)
	if _, err := dev.ReadAt(b, 0); err != nil {
		return fmt.Errorf("update: reading the superblock: %w", err)
	}
	if err := checkSuperblock(b, partBytes); err != nil {
		return fmt.Errorf("update: no valid root: %w", err)
	}
	return nil
}

// Invalidate zeroes the first 4 KiB of dev so that nothing mounts or boots
// it, and syncs.
func Invalidate(dev Device) error {
	if _, err := dev.WriteAt(make([]byte, headBytes), 0); err != nil {
		return fmt.Errorf("invalidating the slot: %w", err)
	}
	if err := syncDevice(dev); err != nil {
		return fmt.Errorf("invalidating the slot: %w", err)
	}
	return nil
}

func syncDevice(dev Device) error {
	if s, ok := dev.(interface{ Sync() error }); ok {
		if err := s.Sync(); err != nil {
			return fmt.Errorf("sync: %w", err)
		}
	}
	return nil
}
