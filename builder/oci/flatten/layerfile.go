package flatten

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// layerReadBytes is how much of a layer tar one read brings in: enough
// for the headers and contents of many small files at once. The first
// read after a skip past the buffer (over a large file's data) brings in
// only skipReadBytes: tar.Reader wants one byte and a header there, and
// the next entry may be large again.
const (
	layerReadBytes = 256 << 10
	skipReadBytes  = 8 << 10
)

// layerFile reads a layer tar for tar.Reader through a buffer, with
// positioned reads, and knows the offset of the next byte it hands out,
// which is where an entry's data starts after its header. It implements
// io.Seeker for tar.Reader's skipping of entry data: a skip within the
// buffer costs no system call, a longer one drops the buffer.
type layerFile struct {
	f   *os.File
	buf []byte
	// at is the file offset of buf[0]; buf[r:w] is not yet handed out.
	at   int64
	r, w int
	// eof says a read ended the file at at+w.
	eof bool
	// skipped says the buffer was dropped by a skip past it.
	skipped bool
}

func newLayerFile(f *os.File) *layerFile {
	return &layerFile{f: f, buf: make([]byte, layerReadBytes)}
}

// offset is the file offset of the next byte Read returns.
func (l *layerFile) offset() int64 { return l.at + int64(l.r) }

func (l *layerFile) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if l.r == l.w {
		if l.eof {
			return 0, io.EOF
		}
		l.at += int64(l.w)
		l.r, l.w = 0, 0
		buf := l.buf
		if l.skipped {
			buf, l.skipped = buf[:skipReadBytes], false
		}
		n, err := l.f.ReadAt(buf, l.at)
		l.w = n
		switch {
		case errors.Is(err, io.EOF):
			l.eof = true
			if n == 0 {
				return 0, io.EOF
			}
		case err != nil:
			return 0, err
		}
	}
	n := copy(p, l.buf[l.r:l.w])
	l.r += n
	return n, nil
}

// Seek supports what tar.Reader needs: moves relative to the current
// offset, forward or back.
func (l *layerFile) Seek(offset int64, whence int) (int64, error) {
	if whence != io.SeekCurrent {
		return 0, fmt.Errorf("layer file: seek whence %d is not supported", whence)
	}
	pos := l.offset() + offset
	if pos < 0 {
		return 0, fmt.Errorf("layer file: seek to %d", pos)
	}
	if pos >= l.at && pos <= l.at+int64(l.w) {
		l.r = int(pos - l.at)
		return pos, nil
	}
	l.at, l.r, l.w, l.eof, l.skipped = pos, 0, 0, false, true
	return pos, nil
}
