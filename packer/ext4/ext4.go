// Package ext4 makes ext4 filesystem images with mke2fs from e2fsprogs,
// deterministically: the same source tree and options give the same bytes.
//
// mke2fs -d copies a host directory into the new filesystem, but it also
// copies each source file's ctime, atime and owner, which no build can
// control, and e2fsprogs before 1.47.1 ignores SOURCE_DATE_EPOCH. Make
// therefore follows mke2fs with a debugfs pass that sets every copied
// inode's atime and ctime to the build time, clamps its mtime to it, and
// makes root own it.
package ext4

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

const (
	blockBytes = 4096
	// inodeBytes of 256 leave room for timestamps past 2038.
	inodeBytes    = 256
	maxLabelBytes = 16
	// defaultEpoch is 2020-01-01T00:00:00Z.
	defaultEpoch = 1577836800
	// minSizeBytes is 2048 blocks: below that mke2fs silently leaves the
	// journal out.
	minSizeBytes = 2048 * blockBytes
)

// Option tunes Make.
type Option func(*options)

type options struct {
	label    string
	uuid     string
	hashSeed string
	modTime  time.Time
}

// WithLabel sets the volume label (at most 16 bytes).
func WithLabel(label string) Option { return func(o *options) { o.label = label } }

// WithUUID sets the filesystem UUID (canonical text form). By default it is
// derived from the label, so pass a per-image UUID to tell images apart.
func WithUUID(uuid string) Option { return func(o *options) { o.uuid = uuid } }

// WithHashSeed sets the seed of the directory-index hash (default: the
// UUID). mke2fs would otherwise pick a random one.
func WithHashSeed(uuid string) Option { return func(o *options) { o.hashSeed = uuid } }

// WithTime sets the filesystem's creation time and the atime and ctime of
// every inode, and clamps mtimes to it (default 2020-01-01T00:00:00Z).
// Builds pass SOURCE_DATE_EPOCH here. It must be after 1970.
func WithTime(t time.Time) Option { return func(o *options) { o.modTime = t } }

// Make creates an ext4 filesystem with a journal, of sizeBytes (a multiple
// of 4096, at least 8 MiB), in imagePath, holding a copy of srcDir (nothing but lost+found
// when srcDir is ""). A regular file at imagePath is truncated and
// recreated; a block device is written in place. Owners become root; modes,
// symlinks, hard links and device nodes are kept. The tools must be
// installed: mke2fs and debugfs (Debian: e2fsprogs).
func Make(ctx context.Context, imagePath string, sizeBytes int64, srcDir string, opts ...Option) error {
	o := options{modTime: time.Unix(defaultEpoch, 0)}
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.complete(); err != nil {
		return err
	}
	if sizeBytes < minSizeBytes || sizeBytes%blockBytes != 0 {
		return fmt.Errorf("ext4: %s: size %d bytes: want a multiple of %d, at least %d", imagePath, sizeBytes, blockBytes, minSizeBytes)
	}
	var paths []string
	if srcDir != "" {
		var err error
		if paths, err = sourcePaths(srcDir); err != nil {
			return err
		}
	}
	device, err := prepareImage(imagePath, sizeBytes)
	if err != nil {
		return err
	}
	if err := populate(ctx, imagePath, sizeBytes, srcDir, paths, o); err != nil {
		if !device {
			os.Remove(imagePath) // a half-made image is worse than none
		}
		return fmt.Errorf("ext4: %s: %w", imagePath, err)
	}
	return nil
}

// populate runs mke2fs and the debugfs pass.
func populate(ctx context.Context, imagePath string, sizeBytes int64, srcDir string, paths []string, o options) error {
	epoch := strconv.FormatInt(o.modTime.Unix(), 10)
	env := append(os.Environ(),
		"E2FSPROGS_FAKE_TIME="+epoch,
		"SOURCE_DATE_EPOCH="+epoch,
		// mke2fs -d sorts entries with the locale's collation.
		"LC_ALL=C",
	)
	args := []string{
		"-t", "ext4", "-b", strconv.Itoa(blockBytes), "-I", strconv.Itoa(inodeBytes),
		"-L", o.label, "-U", o.uuid,
		// nodiscard and eager inode tables make the result independent of
		// whether the host filesystem punches holes.
		"-E", "hash_seed=" + o.hashSeed + ",root_owner=0:0,nodiscard,lazy_itable_init=0",
		"-F", "-q",
	}
	if srcDir != "" {
		args = append(args, "-d", srcDir)
	}
	args = append(args, imagePath, strconv.FormatInt(sizeBytes/1024, 10)+"k")
	if _, err := run(ctx, env, "mke2fs", args...); err != nil {
		return err
	}
	if len(paths) == 0 {
		return nil
	}
	return normalize(ctx, env, imagePath, srcDir, paths, o.modTime.Unix())
}

func (o *options) complete() error {
	if len(o.label) > maxLabelBytes {
		return fmt.Errorf("ext4: label %q: longer than %d bytes", o.label, maxLabelBytes)
	}
	if o.modTime.Unix() <= 0 {
		// E2FSPROGS_FAKE_TIME=0 means "not set" to e2fsprogs.
		return fmt.Errorf("ext4: time %v: must be after 1970-01-01", o.modTime)
	}
	if o.uuid == "" {
		sum := sha256.Sum256([]byte("ingot ext4 uuid\x00" + o.label))
		sum[6] = sum[6]&0x0f | 0x80 // version 8
		sum[8] = sum[8]&0x3f | 0x80 // RFC variant
		h := hex.EncodeToString(sum[:16])
		o.uuid = h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
	}
	if o.hashSeed == "" {
		o.hashSeed = o.uuid
	}
	for _, u := range []struct{ what, v string }{{"UUID", o.uuid}, {"hash seed", o.hashSeed}} {
		if !validUUID(u.v) {
			return fmt.Errorf("ext4: %s %q: want the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", u.what, u.v)
		}
	}
	return nil
}

func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
				return false
			}
		}
	}
	return true
}

// sourcePaths lists srcDir's entries relative to it, refusing names that
// the debugfs pass cannot quote.
func sourcePaths(srcDir string) ([]string, error) {
	st, err := os.Stat(srcDir)
	if err != nil {
		return nil, fmt.Errorf("ext4: source: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("ext4: source %s: not a directory", srcDir)
	}
	var paths []string
	err = filepath.WalkDir(srcDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == srcDir {
			return err
		}
		rel, err := filepath.Rel(srcDir, p)
		if err != nil {
			return err
		}
		if strings.ContainsAny(rel, "\n\r\x00") {
			return fmt.Errorf("source %q: names with line breaks are not supported", rel)
		}
		paths = append(paths, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ext4: %w", err)
	}
	return paths, nil
}

// prepareImage gives mke2fs a zeroed regular file of the right size, so
// that blocks mke2fs skips read as zeros, or leaves a block device alone.
func prepareImage(path string, sizeBytes int64) (device bool, err error) {
	if st, err := os.Stat(path); err == nil && st.Mode()&fs.ModeDevice != 0 {
		return true, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return false, fmt.Errorf("ext4: %w", err)
	}
	if err := f.Truncate(sizeBytes); err != nil {
		f.Close()
		os.Remove(path)
		return false, fmt.Errorf("ext4: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return false, fmt.Errorf("ext4: %w", err)
	}
	return false, nil
}

// normalize rewrites the timestamps and owners that mke2fs copied from the
// build machine.
func normalize(ctx context.Context, env []string, image, srcDir string, paths []string, epoch int64) error {
	var script bytes.Buffer
	at := "@" + strconv.FormatInt(epoch, 10)
	for _, p := range paths {
		st, err := os.Lstat(filepath.Join(srcDir, filepath.FromSlash(p)))
		if err != nil {
			return err
		}
		q := `"/` + strings.ReplaceAll(p, `"`, `""`) + `"`
		fmt.Fprintf(&script, "sif %s atime %s\nsif %s ctime %s\n", q, at, q, at)
		if st.ModTime().Unix() > epoch {
			fmt.Fprintf(&script, "sif %s mtime %s\n", q, at)
		}
		fmt.Fprintf(&script, "sif %s uid 0\nsif %s gid 0\n", q, q)
	}
	cmds, err := os.CreateTemp("", "ingot-debugfs-*.cmds")
	if err != nil {
		return err
	}
	defer os.Remove(cmds.Name())
	if _, err := cmds.Write(script.Bytes()); err != nil {
		cmds.Close()
		return err
	}
	if err := cmds.Close(); err != nil {
		return err
	}
	stderr, err := run(ctx, env, "debugfs", "-w", "-f", cmds.Name(), image)
	if err != nil {
		return err
	}
	// debugfs reports failed requests on stderr but exits 0.
	for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
		if line != "" && !strings.HasPrefix(line, "debugfs ") {
			return fmt.Errorf("debugfs: %s", strings.TrimSpace(stderr))
		}
	}
	return nil
}

// run runs an e2fsprogs tool, returning its stderr, or an error that
// includes it.
func run(ctx context.Context, env []string, tool string, args ...string) (string, error) {
	path, err := LookTool(tool)
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String() + stdout.String())
		return "", fmt.Errorf("%s %s: %w: %s", tool, strings.Join(args, " "), err, msg)
	}
	return stderr.String(), nil
}

// LookTool finds an e2fsprogs tool (mke2fs, e2fsck, ...); they live in
// sbin, which a normal user's PATH may lack.
func LookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH or sbin directories (install e2fsprogs): %w", name, exec.ErrNotFound)
}
