package update

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/image"
	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/format/slot"
)

// bootFiles are the boot partition files an update may replace. slot.json
// is not among them: only Commit, Confirm and Rollback write it.
var bootFiles = map[string]bool{
	layout.KernelFile:  true,
	layout.InitrdFile:  true,
	layout.CmdlineFile: true,
	layout.InfoFile:    true,
}

// Name prefixes of files in transit on the boot partition. The boot loader
// reads files by their exact names, so it never sees these.
const (
	tempPrefix   = ".ingot-tmp-"
	stagedPrefix = ".ingot-staged-"
)

// maxBootFileBytes bounds a boot file; a kernel plus initramfs of ingot is
// a few tens of MiB.
const maxBootFileBytes = 256 << 20

// StageBootFile writes the boot partition file name for root slot sl
// from body, of declaredBytes with SHA-256 wantSHA256, under a temporary
// name in bootDir; only when length and hash match is it renamed to its
// staged name, which ApplyBootFiles later renames over the live file. The
// kernel, initramfs and command line are written as sl's own copies
// (slot.Name.BootFile), which the running slot never reads, so a bad
// kernel can only ever break the trial boot that the boot loader falls
// back from. The live file is not touched here.
func StageBootFile(ctx context.Context, bootDir, name string, sl slot.Name, body io.Reader, declaredBytes int64, wantSHA256 string) (Result, error) {
	res, _, err := stageBootFile(ctx, bootDir, nil, name, sl, body, declaredBytes, wantSHA256)
	return res, err
}

// stageBootFile is StageBootFile naming per-slot files for fw; it also
// returns the path on the boot partition the staged file will replace.
func stageBootFile(ctx context.Context, bootDir string, fw Firmware, name string, sl slot.Name, body io.Reader, declaredBytes int64, wantSHA256 string) (Result, string, error) {
	tree := layout.DeviceTreeFile(name)
	switch {
	case tree && fw == nil:
		return Result{}, "", fmt.Errorf("update: boot file %q: a device tree, and this appliance's boot loader reads none (only a Raspberry Pi's firmware does): %w", name, mgmt.ErrNotFound)
	case !tree && !bootFiles[name]:
		return Result{}, "", fmt.Errorf("update: boot file %q: not one of vmlinuz, initrd.img, cmdline.txt, ingot.json or a device tree: %w", name, mgmt.ErrNotFound)
	}
	if !sl.Valid() {
		return Result{}, "", fmt.Errorf("update: boot file %s: slot %q is not a or b", name, sl)
	}
	dest := name
	if layout.PerSlot(name) || tree {
		dest = slotBootFile(fw, name, sl)
	}
	want, err := ParseSHA256(wantSHA256)
	if err != nil {
		return Result{}, "", fmt.Errorf("update: boot file %s: %w", name, err)
	}
	switch {
	case declaredBytes <= 0:
		return Result{}, "", fmt.Errorf("update: boot file %s: declared size %d: %w", name, declaredBytes, mgmt.ErrLengthRequired)
	case declaredBytes > maxBootFileBytes:
		return Result{}, "", fmt.Errorf("update: boot file %s: %d bytes, at most %d: %w", name, declaredBytes, maxBootFileBytes, mgmt.ErrTooLarge)
	}
	// Names in transit are flat, in the partition's root, whatever
	// directory the file goes to.
	tmpPath := filepath.Join(bootDir, tempPrefix+flatName(dest))
	f, err := os.OpenFile(tmpPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return Result{}, "", fmt.Errorf("update: boot file %s: %w", name, err)
	}
	res, err := writeVerified(ctx, f, body, declaredBytes, want)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err == nil {
		err = slot.Rename(tmpPath, filepath.Join(bootDir, stagedPrefix+flatName(dest)))
	}
	if err != nil {
		os.Remove(tmpPath)
		return Result{}, "", fmt.Errorf("update: boot file %s: %w", name, err)
	}
	return res, dest, nil
}

func writeVerified(ctx context.Context, f *os.File, body io.Reader, declaredBytes int64, want string) (Result, error) {
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(&ctxReader{ctx, body}, declaredBytes))
	if err != nil {
		return Result{}, fmt.Errorf("after %d of %d bytes: %w", n, declaredBytes, err)
	}
	if n != declaredBytes {
		return Result{}, fmt.Errorf("body ended after %d of %d bytes: %w", n, declaredBytes, mgmt.ErrRejected)
	}
	var extra [1]byte
	if n, _ := io.ReadFull(body, extra[:]); n > 0 {
		return Result{}, fmt.Errorf("body is longer than the declared %d bytes: %w", declaredBytes, mgmt.ErrRejected)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return Result{}, fmt.Errorf("sha256 of the %d bytes received is %s, the request declared %s: %w", n, got, want, mgmt.ErrRejected)
	}
	if err := f.Sync(); err != nil {
		return Result{}, fmt.Errorf("sync: %w", err)
	}
	return Result{Bytes: n, SHA256: want}, nil
}

// ctxReader stops a copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(b)
}

// StagedBootFiles lists the boot files staged in bootDir, sorted.
func StagedBootFiles(bootDir string) ([]string, error) {
	entries, err := os.ReadDir(bootDir)
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	var names []string
	for _, e := range entries {
		if flat, ok := strings.CutPrefix(e.Name(), stagedPrefix); ok && isBootFileName(unflatName(flat)) {
			names = append(names, unflatName(flat))
		}
	}
	return names, nil
}

// ApplyBootFiles renames the staged boot files over the live ones with
// slot.Rename, which syncs the directories of both names. Each rename is
// atomic; a power cut between two of them can leave a new kernel with the
// old initramfs, which is why the client stages both and they are applied
// right before slot.json changes. The entries of layout.DigestsFile for
// the replaced files are dropped first, so the next BootFileHashes hashes
// them (see applyBootFiles for a caller that knows their digests).
func ApplyBootFiles(bootDir string) ([]string, error) {
	return applyBootFiles(bootDir, nil)
}

// applyBootFiles is ApplyBootFiles that then records in
// layout.DigestsFile the digests of the applied files that verified
// holds, by path on the boot partition: those stageBootFile checked as
// they were written this boot. Dropping the old entries before the first
// rename and adding the new ones after the last keeps the record from
// ever vouching for content a file does not hold.
func applyBootFiles(bootDir string, verified map[string]layout.FileDigest) ([]string, error) {
	names, err := StagedBootFiles(bootDir)
	if err != nil || len(names) == 0 {
		return nil, err
	}
	if err := forgetDigests(bootDir, names); err != nil {
		return nil, err
	}
	for _, name := range names {
		dst := filepath.Join(bootDir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return nil, fmt.Errorf("update: boot file %s: %w", name, err)
		}
		if err := slot.Rename(filepath.Join(bootDir, stagedPrefix+flatName(name)), dst); err != nil {
			return nil, fmt.Errorf("update: boot file %s: %w", name, err)
		}
	}
	d := readDigests(bootDir)
	known := false
	for _, name := range names {
		if fd, ok := verified[name]; ok {
			d.Files[name] = fd
			known = true
		}
	}
	if known {
		if err := saveDigests(bootDir, d); err != nil {
			return nil, err
		}
	}
	return names, nil
}

// DiscardBootFiles removes staged and half-written boot files.
func DiscardBootFiles(bootDir string) error {
	entries, err := os.ReadDir(bootDir)
	if err != nil {
		return fmt.Errorf("update: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), stagedPrefix) || strings.HasPrefix(e.Name(), tempPrefix) {
			if err := os.Remove(filepath.Join(bootDir, e.Name())); err != nil {
				errs = append(errs, fmt.Errorf("update: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

// isBootFileName reports whether name is a boot file an update may write:
// a shared one, or a slot's copy of a per-slot one, either as the
// host-side loader names it ("vmlinuz.b") or in a slot directory
// ("slot-b/vmlinuz", "slot-b/overlays/NAME.dtbo": the Raspberry Pi's
// os_prefix).
func isBootFileName(name string) bool {
	if bootFiles[name] {
		return !layout.PerSlot(name)
	}
	if dir, base, ok := strings.Cut(name, "/"); ok {
		return (dir == "slot-a" || dir == "slot-b") && (layout.PerSlot(base) || layout.DeviceTreeFile(base))
	}
	base, sl, ok := cutSlotSuffix(name)
	return ok && layout.PerSlot(base) && slot.Name(sl).Valid()
}

// flatName and unflatName map a boot file path to a name in the
// partition's root and back; '+' is in no boot file name
// (layout.DeviceTreeFile allows none).
func flatName(name string) string   { return strings.ReplaceAll(name, "/", "+") }
func unflatName(flat string) string { return strings.ReplaceAll(flat, "+", "/") }

func cutSlotSuffix(name string) (base, sl string, ok bool) {
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return "", "", false
	}
	return name[:i], name[i+1:], true
}

// BootFileHashes returns, for each slot of slots, the lowercase hex
// SHA-256 of each file that slot boots with (image.SlotFiles) on the boot
// partition mounted at bootDir; a file that is missing is missing from the
// map. The update client sends only the files whose hash differs from its
// new image's.
//
// A file whose entry in layout.DigestsFile has the file's size is not
// read: the entry's digest is the answer. Any other file is hashed, and
// the record is then rewritten with what was hashed, so the next call
// reads nothing. A record that cannot be rewritten (a read-only or full
// partition) costs the next call the same hashing and nothing else, so
// that failure is not this call's.
func BootFileHashes(bootDir string, slots ...slot.Name) (map[string]map[string]string, error) {
	fsys := os.DirFS(bootDir)
	d := readDigests(bootDir)
	repaired := false
	out := map[string]map[string]string{}
	for _, sl := range slots {
		paths, err := image.SlotFiles(fsys, sl)
		if err != nil {
			return nil, fmt.Errorf("update: boot file hashes: %w", err)
		}
		files := map[string]string{}
		for name, p := range paths {
			st, err := fs.Stat(fsys, p)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("update: boot file hashes: %w", err)
			}
			if fd, ok := d.Files[p]; ok && fd.Size == st.Size() {
				files[name] = fd.SHA256
				continue
			}
			fd, err := fileDigest(fsys, p)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("update: boot file hashes: %w", err)
			}
			files[name] = fd.SHA256
			d.Files[p] = fd
			repaired = true
		}
		out[string(sl)] = files
	}
	if repaired {
		_ = saveDigests(bootDir, d) // best effort: see the doc comment
	}
	return out, nil
}

// fileDigest reads the file name of fsys and returns its size and SHA-256.
func fileDigest(fsys fs.FS, name string) (layout.FileDigest, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return layout.FileDigest{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return layout.FileDigest{}, fmt.Errorf("%s: %w", name, err)
	}
	return layout.FileDigest{Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}
