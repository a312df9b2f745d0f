// Package kmod loads Linux kernel modules from files with finit_module(2):
// how stage0 loads the module closure the packer put in the initramfs, in
// the dependency order the packer computed.
package kmod

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Load loads the module in the file at path. A module that is already
// loaded or built into the kernel (EEXIST) is not an error.
func Load(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("module %s: %w", path, err)
	}
	defer f.Close()
	flags := 0
	switch filepath.Ext(path) {
	case ".xz", ".zst", ".gz":
		// The packer stores modules uncompressed; this covers images that
		// keep the distribution's compressed files, on kernels that can
		// decompress them (CONFIG_MODULE_DECOMPRESS).
		flags = unix.MODULE_INIT_COMPRESSED_FILE
	}
	if err := unix.FinitModule(int(f.Fd()), "", flags); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("module %s: finit_module: %w", path, err)
	}
	return nil
}

// LoadAll loads the modules in order. It goes on past a failure, since
// later modules may not need the one that failed, and returns one error
// per module that did not load.
func LoadAll(paths []string) []error {
	var errs []error
	for _, p := range paths {
		if err := Load(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}
