//go:build !linux

package flash

import (
	"fmt"
	"io/fs"
	"os"
	"runtime"
)

// Block devices are found, checked and claimed through Linux interfaces
// (sysfs, mountinfo, O_EXCL); elsewhere only regular files are targets.

func inspectBlock(path string, _ fs.FileInfo, _ options) (Target, error) {
	return Target{}, &RefusedError{Path: path, Reason: fmt.Sprintf("writing block devices is supported on Linux only, not %s", runtime.GOOS)}
}

func checkFile(Target, options) error { return nil }

func openTarget(t Target) (*os.File, error) {
	f, err := os.OpenFile(t.Path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("flash: %w", err)
	}
	return f, nil
}

// dropCache only syncs: the read-back of a regular file may come from
// the page cache, which is what a later reader sees too.
func dropCache(f *os.File) error { return f.Sync() }

func rereadPartitions(*os.File) error { return nil }
