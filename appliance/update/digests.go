package update

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/format/slot"
)

// The boot partition's layout.DigestsFile is a cache of what the boot
// files hold, so that BootFileHashes need not read them. It is trusted
// only to answer "what does this slot boot with": an entry is used when
// its size is the file's, and every file an update writes is still
// verified byte for byte as it arrives (writeVerified). Its invariant is
// that an entry never names content a file does not hold, whatever a power
// cut interrupts: applyBootFiles drops the entries of the files it is
// about to replace, and records their new digests only after the renames
// are on disk; a missing entry costs one hash and is then repaired.

// readDigests returns the record in bootDir. A missing, oversized or
// undecodable record is an empty one: it is a cache, and each file it
// does not vouch for is hashed instead.
func readDigests(bootDir string) layout.Digests {
	empty := layout.Digests{Files: map[string]layout.FileDigest{}}
	f, err := os.Open(filepath.Join(bootDir, layout.DigestsFile))
	if err != nil {
		return empty
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, layout.MaxDigestsBytes+1))
	if err != nil || len(data) > layout.MaxDigestsBytes {
		return empty
	}
	d, err := layout.ParseDigests(data)
	if err != nil {
		return empty
	}
	return d
}

// saveDigests replaces the record in bootDir with d: a temporary file
// (which DiscardBootFiles removes if a power cut leaves it), synced, then
// renamed over the record with slot.Rename, so a power cut leaves the old
// record or the new one.
func saveDigests(bootDir string, d layout.Digests) error {
	tmp := filepath.Join(bootDir, tempPrefix+layout.DigestsFile)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("update: %s: %w", layout.DigestsFile, err)
	}
	_, werr := f.Write(d.Marshal())
	serr := f.Sync()
	if err := errors.Join(werr, serr, f.Close()); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("update: %s: %w", layout.DigestsFile, err)
	}
	if err := slot.Rename(tmp, filepath.Join(bootDir, layout.DigestsFile)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("update: %s: %w", layout.DigestsFile, err)
	}
	return nil
}

// forgetDigests drops the entries of names from the record in bootDir,
// and writes it only when one was there.
func forgetDigests(bootDir string, names []string) error {
	d := readDigests(bootDir)
	changed := false
	for _, name := range names {
		if _, ok := d.Files[name]; ok {
			delete(d.Files, name)
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return saveDigests(bootDir, d)
}
