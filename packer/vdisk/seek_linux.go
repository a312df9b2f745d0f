package vdisk

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// dataRanges returns the [start, end) byte ranges of f that hold data, by
// SEEK_DATA and SEEK_HOLE. A file system without them reports the whole
// file as data.
func dataRanges(f *os.File, size int64) ([][2]int64, error) {
	var ranges [][2]int64
	for off := int64(0); off < size; {
		start, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole from off to the end
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			return [][2]int64{{0, size}}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("SEEK_DATA at byte %d: %w", off, err)
		}
		end, err := unix.Seek(int(f.Fd()), start, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("SEEK_HOLE at byte %d: %w", start, err)
		}
		end = min(end, size)
		if start >= end {
			break
		}
		ranges = append(ranges, [2]int64{start, end})
		off = end
	}
	return ranges, nil
}
