package flash

import (
	"errors"
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

// Inspect identifies path as a target and runs every check Flash runs
// before it asks for confirmation, except the size against an image. It
// only reads.
func Inspect(path string, opts ...Option) (Target, error) {
	return inspect(path, newOptions(opts))
}

func inspect(path string, o options) (Target, error) {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Target{}, &RefusedError{Path: path, Reason: "no such device or file (to make a larger image file, create it first: truncate -s 8G FILE)"}
	}
	if err != nil {
		return Target{}, fmt.Errorf("flash: %w", err)
	}
	switch {
	case st.Mode().IsRegular():
		t := Target{Path: path, Model: "regular file", SizeBytes: st.Size(), info: st}
		if err := checkFile(t, o); err != nil {
			return Target{}, err
		}
		return t, nil
	case st.Mode()&fs.ModeDevice != 0 && st.Mode()&fs.ModeCharDevice == 0:
		return inspectBlock(path, st, o)
	default:
		return Target{}, &RefusedError{Path: path, Reason: "not a block device or a regular file"}
	}
}
