//go:build unix

// Package filelock takes advisory locks on files shared by processes, such
// as two ingot builds using one cache.
package filelock

import (
	"fmt"
	"os"
	"syscall"
)

// Lock takes an exclusive flock on path (created if needed) and returns
// the function that releases it.
func Lock(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("filelock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("filelock: %s: %w", path, err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
