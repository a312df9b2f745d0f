//go:build !linux

package flash

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
)

// Block devices are found, checked and claimed through Linux interfaces
// (sysfs, mountinfo, O_EXCL, /proc/self/fd); elsewhere only regular files
// are targets, opened by path and compared with what the path named.

func inspectBlock(path string, _ fs.FileInfo, _ options) (Target, error) {
	return Target{}, &RefusedError{Path: path, Reason: fmt.Sprintf("writing block devices is supported on Linux only, not %s", runtime.GOOS)}
}

func checkFile(Target, options) error { return nil }

// openTarget opens the regular file at path and inspects it, refusing it
// when the path named something else a moment before.
func openTarget(path string, o options) (*os.File, Target, error) {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, Target{}, notFound(path)
	}
	if err != nil {
		return nil, Target{}, fmt.Errorf("flash: %w", err)
	}
	t, err := inspect(path, st, o)
	if err != nil {
		return nil, Target{}, err
	}
	f, err := reopen(nil, t, false)
	if err != nil {
		return nil, Target{}, err
	}
	if t.info, err = f.Stat(); err != nil {
		f.Close()
		return nil, Target{}, fmt.Errorf("flash: %w", err)
	}
	return f, t, nil
}

// reopen opens t's path for reading and writing and refuses what it
// opened unless it is the file t was inspected as.
func reopen(_ *os.File, t Target, _ bool) (*os.File, error) {
	f, err := os.OpenFile(t.Path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("flash: %w", err)
	}
	st, err := f.Stat()
	if err == nil && !sameTarget(t.info, st) {
		err = &RefusedError{Path: t.Path, Reason: "it names another file than the one checked"}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// childTarget is how a child process (mke2fs) opens the target: by its
// path, which reopen has just compared with the file checked.
func childTarget(held *os.File) (path string, extra []*os.File) {
	return held.Name(), nil
}

// identity names what st is for a refusal.
func identity(st fs.FileInfo) string {
	return fmt.Sprintf("a file of %d bytes modified %s", st.Size(), st.ModTime().UTC().Format("2006-01-02 15:04:05.000000000"))
}

// sameTarget reports whether now, a fresh stat of the target's path,
// names what was, the stat of the file opened for it.
func sameTarget(was, now fs.FileInfo) bool { return os.SameFile(was, now) }

// dropCache only syncs: the read-back of a regular file may come from
// the page cache, which is what a later reader sees too.
func dropCache(f *os.File) error { return f.Sync() }

func rereadPartitions(*os.File) error { return nil }
