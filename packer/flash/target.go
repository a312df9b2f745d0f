package flash

import (
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// Target is the device or file an image is written to.
type Target struct {
	// Path is the target as given.
	Path string
	// Block is true for a block device, false for a regular file.
	Block bool
	// Name is the kernel's name of a block device (sdb, mmcblk0).
	Name string
	// Model describes the device: vendor and model from sysfs, the
	// backing file of a loop device, or "regular file".
	Model     string
	Removable bool
	SizeBytes int64

	info fs.FileInfo
}

// String describes the target for the confirmation question.
func (t Target) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s, %s (%d bytes)", t.Path, t.Model, humanBytes(t.SizeBytes), t.SizeBytes)
	if t.Block && !t.Removable {
		b.WriteString(", NOT a removable disk")
	}
	return b.String()
}

// inspect identifies st, what path names, as a target and refuses it
// when it may not be written.
func inspect(path string, st fs.FileInfo, o options) (Target, error) {
	switch {
	case st.Mode().IsRegular():
		t := Target{Path: path, Model: "regular file", SizeBytes: st.Size(), info: st}
		if err := checkFile(t, o); err != nil {
			return Target{}, err
		}
		return t, nil
	case isBlock(st):
		return inspectBlock(path, st, o)
	default:
		return Target{}, &RefusedError{Path: path, Reason: "not a block device or a regular file"}
	}
}

func isBlock(st fs.FileInfo) bool {
	return st.Mode()&fs.ModeDevice != 0 && st.Mode()&fs.ModeCharDevice == 0
}

func notFound(path string) error {
	return &RefusedError{Path: path, Reason: "no such device or file (to make a larger image file, create it first: truncate -s 8G FILE)"}
}

// checkStillNamed refuses t unless its path still names the device or file
// that was opened, checked and confirmed: a card swapped in meanwhile, a
// link pointed elsewhere or a file renamed over the path was confirmed by
// nobody. Flash writes through the descriptor it opened first whatever the
// path names; this check makes a changed path an error rather than a
// surprise.
func checkStillNamed(t Target) error {
	now, err := os.Stat(t.Path)
	if err != nil {
		return &RefusedError{Path: t.Path, Reason: fmt.Sprintf("it no longer names %s, which was checked and confirmed (%v); nothing was written", identity(t.info), err)}
	}
	if !sameTarget(t.info, now) {
		return &RefusedError{Path: t.Path, Reason: fmt.Sprintf("it now names %s, not %s, which was checked and confirmed; nothing was written", identity(now), identity(t.info))}
	}
	return nil
}
