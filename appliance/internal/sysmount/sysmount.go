// Package sysmount mounts the kernel and memory filesystems an init needs
// (proc, sysfs, devtmpfs, tmpfs, ...) idempotently: a target that is
// already a mount point is left alone, so stage1 can run after stage0 has
// moved its mounts over, or straight from the kernel.
package sysmount

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Mount describes one mount.
type Mount struct {
	Source, Target, FSType string
	Flags                  uintptr
	Data                   string
	// Mkdir creates Target first (only possible on a writable parent,
	// such as devtmpfs for /dev/pts).
	Mkdir bool
}

// Do mounts m unless m.Target is already a mount point. It reports whether
// it mounted.
func Do(m Mount) (bool, error) {
	if m.Mkdir {
		if err := os.MkdirAll(m.Target, 0o755); err != nil {
			return false, fmt.Errorf("mount %s: %w", m.Target, err)
		}
	}
	mounted, err := IsMountpoint(m.Target)
	if err != nil {
		return false, fmt.Errorf("mount %s: %w", m.Target, err)
	}
	if mounted {
		return false, nil
	}
	if err := unix.Mount(m.Source, m.Target, m.FSType, m.Flags, m.Data); err != nil && !errors.Is(err, unix.EBUSY) {
		return false, fmt.Errorf("mount %s (%s) on %s: %w", m.Source, m.FSType, m.Target, err)
	}
	return true, nil
}

// IsMountpoint reports whether path is the root of a mount: its device
// differs from its parent's, or it is "/" (which is always one). A bind
// mount of a directory onto itself is not detected, which init never does.
func IsMountpoint(path string) (bool, error) {
	path = filepath.Clean(path)
	if path == "/" {
		return true, nil
	}
	var st, parent unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return false, err
	}
	if err := unix.Lstat(filepath.Dir(path), &parent); err != nil {
		return false, err
	}
	return st.Dev != parent.Dev || st.Ino == parent.Ino, nil
}
