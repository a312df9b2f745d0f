package slot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// SectorBytes is the unit a disk writes whole: a power cut leaves a sector
// old or new, never torn. A file of at most one sector whose size does not
// change is therefore rewritten in place atomically; slot.json
// (FileBytes) and the Raspberry Pi's config.txt are kept that small for
// this reason. A rename is the other way to replace a file, but Linux's
// vfat does not make it crash-safe (a power test saw the old file's
// clusters freed while the directory still pointed at them), so it is
// only the fallback for files that are new or change size.
const SectorBytes = 512

// WriteFile makes path, on a mounted boot partition, hold data so that a
// power cut leaves the old or the new content. An existing file of
// len(data) <= SectorBytes bytes is overwritten in place by one write and
// synced; otherwise data goes to a temporary file beside path, which is
// synced, renamed over path, and the directory synced (Rename). The sync
// before returning is what makes the caller's next step (a reboot, an
// answer to the client) safe to take.
func WriteFile(path string, data []byte) error {
	if st, err := os.Stat(path); err == nil && st.Size() == int64(len(data)) && len(data) <= SectorBytes {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("slot: write %s: %w", path, err)
		}
		_, werr := f.WriteAt(data, 0)
		serr := f.Sync()
		if err := errors.Join(werr, serr, f.Close()); err != nil {
			return fmt.Errorf("slot: write %s in place: %w", path, err)
		}
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".ingot-*.tmp")
	if err != nil {
		return fmt.Errorf("slot: write %s: %w", path, err)
	}
	_, werr := tmp.Write(data)
	serr := tmp.Sync() // the content is on disk before a name points at it
	if err := errors.Join(werr, serr, tmp.Close()); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("slot: write %s: %w", path, err)
	}
	if err := Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}

// Rename renames oldpath to newpath on a mounted boot partition and syncs
// the directories of both, so the rename is on disk when it returns: each
// directory's entries are flushed by a sync of that directory only.
func Rename(oldpath, newpath string) error {
	if err := os.Rename(oldpath, newpath); err != nil {
		return fmt.Errorf("slot: %w", err)
	}
	dirs := []string{filepath.Dir(newpath)}
	if d := filepath.Dir(oldpath); d != dirs[0] {
		dirs = append(dirs, d)
	}
	for _, dir := range dirs {
		if err := SyncDir(dir); err != nil {
			return err
		}
	}
	return nil
}

// SyncDir flushes the entries of directory dir to disk, after a file in it
// was created, renamed or removed.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("slot: sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("slot: sync %s: %w", dir, err)
	}
	return nil
}
