// Package flash writes an appliance image to an SD card or USB disk (or a
// larger regular file): it refuses targets that are in use, mounted, hold
// the running system or are too small, asks before it destroys anything,
// writes and syncs with progress, verifies what the device reads back
// against the image's SHA-256, and then grows the perm partition to the
// end of the card with a fresh ext4 filesystem (perm is empty in a new
// image, so nothing is lost by making it anew).
//
// It writes only what it checked and the user confirmed: the target's
// path is resolved once, every step goes through the descriptor opened
// then, and a path that names something else by the time of writing (a
// card swapped, a link or file replaced) is refused.
package flash

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// chunkBytes is how much is written or read per system call.
const chunkBytes = 4 << 20

// syncEveryBytes bounds the dirty data the page cache holds while writing,
// so that progress follows the card rather than the cache and the final
// fsync does not stall for minutes.
const syncEveryBytes = 64 << 20

// ErrDeclined is returned when the confirmation was answered with no.
var ErrDeclined = errors.New("flash: not confirmed; nothing was written")

// RefusedError says why a target may not be written.
type RefusedError struct {
	Path   string
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("flash: refusing to write %s: %s", e.Path, e.Reason)
}

// Phase is a stage of Flash that reports progress.
type Phase string

// The phases, in order.
const (
	PhaseWrite  Phase = "write"
	PhaseVerify Phase = "verify"
)

// Progress is a progress report: Done of Total bytes of Phase.
type Progress struct {
	Phase       Phase
	Done, Total int64
	Elapsed     time.Duration
}

// String reads "write 96.0 MiB of 353.0 MiB (27%), 21.3 MiB/s".
func (p Progress) String() string {
	pct := int64(100)
	if p.Total > 0 {
		pct = p.Done * 100 / p.Total
	}
	s := fmt.Sprintf("%s %s of %s (%d%%)", p.Phase, humanBytes(p.Done), humanBytes(p.Total), pct)
	if secs := p.Elapsed.Seconds(); secs > 0 {
		s += fmt.Sprintf(", %s/s", humanBytes(int64(float64(p.Done)/secs)))
	}
	return s
}

// Confirm decides, after the checks passed and before anything is
// written, whether t may be overwritten with an image of imageBytes.
type Confirm func(t Target, imageBytes int64) (bool, error)

// Option changes how Flash works.
type Option func(*options)

type options struct {
	confirm     Confirm
	progress    func(Progress)
	sysDir      string
	procDir     string
	systemPaths []string
	noGrow      bool
}

// WithConfirm sets the question asked before writing. Without it Flash
// writes without asking (the CLI's -yes).
func WithConfirm(c Confirm) Option { return func(o *options) { o.confirm = c } }

// WithProgress sets a function called after every chunk written or read.
func WithProgress(f func(Progress)) Option { return func(o *options) { o.progress = f } }

// WithSystemPaths sets the paths whose backing disks are the running
// system's and are never written (default "/" and "/boot").
func WithSystemPaths(paths ...string) Option {
	return func(o *options) { o.systemPaths = paths }
}

// WithoutGrow leaves the partition table and perm as the image has them.
func WithoutGrow() Option { return func(o *options) { o.noGrow = true } }

func newOptions(opts []Option) options {
	o := options{sysDir: "/sys", procDir: "/proc", systemPaths: []string{"/", "/boot"}}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// Report describes a finished flash.
type Report struct {
	Target     Target
	ImageBytes int64
	// SHA256 is the hex digest of the image, which the target read back.
	SHA256 string
	// Perm is the perm partition after growing; zero when it was not grown.
	Perm Grown
}

// Flash writes the image file at imagePath to target, a whole block device
// or a regular file at least as large as the image, verifies it, and grows
// perm to the end of the target.
func Flash(ctx context.Context, imagePath, target string, opts ...Option) (*Report, error) {
	o := newOptions(opts)
	img, err := os.Open(imagePath)
	if err != nil {
		return nil, fmt.Errorf("flash: image: %w", err)
	}
	defer img.Close()
	ist, err := img.Stat()
	if err != nil {
		return nil, fmt.Errorf("flash: image: %w", err)
	}
	if !ist.Mode().IsRegular() {
		return nil, fmt.Errorf("flash: image %s is not a regular file", imagePath)
	}
	imageBytes := ist.Size()
	if imageBytes == 0 || imageBytes%sectorBytes != 0 {
		return nil, fmt.Errorf("flash: image %s: %d bytes, not a whole number of %d-byte sectors", imagePath, imageBytes, sectorBytes)
	}
	f, t, err := openTarget(target, o)
	if err != nil {
		return nil, err
	}
	closed := false
	defer func() {
		if !closed {
			f.Close()
		}
	}()
	if os.SameFile(ist, t.info) {
		return nil, &RefusedError{Path: target, Reason: "it is the image itself"}
	}
	if t.SizeBytes < imageBytes {
		return nil, &RefusedError{Path: target, Reason: fmt.Sprintf("%s is smaller than the %s image", humanBytes(t.SizeBytes), humanBytes(imageBytes))}
	}
	if o.confirm != nil {
		ok, err := o.confirm(t, imageBytes)
		if err != nil {
			return nil, fmt.Errorf("flash: confirm: %w", err)
		}
		if !ok {
			return nil, ErrDeclined
		}
	}
	if err := checkStillNamed(t); err != nil {
		return nil, err
	}

	sum, err := copyImage(ctx, f, img, imageBytes, o)
	if err != nil {
		return nil, fmt.Errorf("flash: %s: write: %w", target, err)
	}
	if err := dropCache(f); err != nil {
		return nil, fmt.Errorf("flash: %s: %w", target, err)
	}
	got, err := hashBack(ctx, f, imageBytes, o)
	if err != nil {
		return nil, fmt.Errorf("flash: %s: verify: %w", target, err)
	}
	if got != sum {
		return nil, fmt.Errorf("flash: %s: verify: the device reads back SHA-256 %s, the image is %s: the card may be faulty or fake", target, got, sum)
	}
	rep := &Report{Target: t, ImageBytes: imageBytes, SHA256: sum}
	// A regular file may end in a partial sector, which no table covers.
	targetBytes := t.SizeBytes &^ (sectorBytes - 1)
	if o.noGrow || targetBytes == imageBytes {
		return rep, finish(f, t, &closed)
	}
	g, mkfs, err := growTable(f, imageBytes, targetBytes)
	if err != nil {
		return nil, fmt.Errorf("flash: %s: %w", target, err)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("flash: %s: %w", target, err)
	}
	if mkfs {
		if f, err = makePermThrough(ctx, f, t, g); err != nil {
			closed = true
			return nil, err
		}
		rep.Perm = g
	}
	return rep, finish(f, t, &closed)
}

// makePermThrough makes perm's filesystem (makePerm) on the device or
// file that f has open and returns a descriptor of it opened as f was; f
// is closed. mke2fs claims a block device exclusively itself, so f's
// claim is released while it runs; a plain descriptor of the same device
// stays open meanwhile, so that the kernel gives its number to no other
// disk, and mke2fs opens the device through that descriptor, never
// through the path.
func makePermThrough(ctx context.Context, f *os.File, t Target, g Grown) (*os.File, error) {
	held, err := reopen(f, t, false)
	f.Close()
	if err != nil {
		return nil, err
	}
	defer held.Close()
	if err := makePerm(ctx, held, g); err != nil {
		return nil, fmt.Errorf("flash: %s: %w", t.Path, err)
	}
	return reopen(held, t, t.Block)
}

// finish syncs and closes f and, for a block device, has the kernel read
// the new partition table.
func finish(f *os.File, t Target, closed *bool) error {
	if err := f.Sync(); err != nil {
		return fmt.Errorf("flash: %s: %w", t.Path, err)
	}
	if t.Block {
		if err := rereadPartitions(f); err != nil {
			return fmt.Errorf("flash: %s: written and verified, but the kernel did not re-read the partition table (replug the card): %w", t.Path, err)
		}
	}
	*closed = true
	if err := f.Close(); err != nil {
		return fmt.Errorf("flash: %s: %w", t.Path, err)
	}
	return nil
}

// copyImage writes imageBytes of img to the start of f, syncing as it
// goes, and returns the SHA-256 of what it wrote.
func copyImage(ctx context.Context, f *os.File, img io.Reader, imageBytes int64, o options) (string, error) {
	h := sha256.New()
	buf := make([]byte, chunkBytes)
	start := time.Now()
	var done, unsynced int64
	for done < imageBytes {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := io.ReadFull(img, buf[:min(int64(len(buf)), imageBytes-done)])
		if err != nil {
			return "", fmt.Errorf("reading the image at byte %d: %w", done, err)
		}
		h.Write(buf[:n])
		if _, err := f.WriteAt(buf[:n], done); err != nil {
			return "", fmt.Errorf("at byte %d: %w", done, err)
		}
		done += int64(n)
		unsynced += int64(n)
		if unsynced >= syncEveryBytes || done == imageBytes {
			if err := f.Sync(); err != nil {
				return "", fmt.Errorf("sync at byte %d: %w", done, err)
			}
			unsynced = 0
		}
		if o.progress != nil {
			o.progress(Progress{Phase: PhaseWrite, Done: done, Total: imageBytes, Elapsed: time.Since(start)})
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// hashBack reads the first n bytes of f and returns their SHA-256.
func hashBack(ctx context.Context, f *os.File, n int64, o options) (string, error) {
	h := sha256.New()
	buf := make([]byte, chunkBytes)
	start := time.Now()
	var done int64
	for done < n {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		m, err := f.ReadAt(buf[:min(int64(len(buf)), n-done)], done)
		if err != nil {
			return "", fmt.Errorf("at byte %d: %w", done, err)
		}
		h.Write(buf[:m])
		done += int64(m)
		if o.progress != nil {
			o.progress(Progress{Phase: PhaseVerify, Done: done, Total: n, Elapsed: time.Since(start)})
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// humanBytes formats n in binary units for messages.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
