package vm

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// runDirMode is the only mode a shared-parent run directory may have: its
// sockets carry the management token, so nobody else may create, replace or
// even list them.
const runDirMode = 0o700

// DefaultRunDir derives a short per-image run directory, ingot-UID/NAME-HASH
// under $XDG_RUNTIME_DIR or the temporary directory (Unix socket paths are
// limited to 107 bytes, so it must not live deep in the source tree). The
// ingot-UID parent sits in a directory other users can write, so it is
// created with mode 0700 and refused unless it is a real directory owned by
// the caller with exactly that mode: otherwise another local user could
// plant a vsock.sock there and be sent the token.
func DefaultRunDir(image string) (string, error) {
	base := os.Getenv("XDG_RUNTIME_DIR")
	if base == "" {
		base = os.TempDir()
	}
	parent := filepath.Join(base, fmt.Sprintf("ingot-%d", os.Getuid()))
	if err := os.Mkdir(parent, runDirMode); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("vm: run directory: %w", err)
	}
	if err := checkPrivateDir(parent); err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(image))
	name := strings.TrimSuffix(filepath.Base(image), filepath.Ext(image))
	if len(name) > 24 {
		name = name[:24]
	}
	return filepath.Join(parent, name+"-"+hex.EncodeToString(sum[:4])), nil
}

// checkPrivateDir reports whether dir is a directory, not a link to one,
// owned by the caller and with mode runDirMode.
func checkPrivateDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("vm: run directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("vm: run directory %s is not a directory (%s): refusing it, as another user may have planted it; remove it", dir, fi.Mode().Type())
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("vm: run directory %s: no owner information", dir)
	}
	if int(st.Uid) != os.Getuid() {
		return fmt.Errorf("vm: run directory %s is owned by uid %d, not by you (uid %d): refusing it, as its sockets would get your token; remove it", dir, st.Uid, os.Getuid())
	}
	if fi.Mode().Perm() != runDirMode {
		return fmt.Errorf("vm: run directory %s has mode %04o, want %04o: refusing it, as others could replace its sockets; remove it or chmod 700 it", dir, fi.Mode().Perm(), runDirMode)
	}
	return nil
}
