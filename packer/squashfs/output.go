package squashfs

import (
	"fmt"
	"io"
)

// outputBufferBytes sizes the write buffer in front of the destination.
const outputBufferBytes = 1 << 20

// output is a buffered writer over an io.WriteSeeker that knows its
// position. Positions are relative to base, where the image starts.
type output struct {
	w    io.WriteSeeker
	base int64
	buf  []byte
	// flushed is the image position of buf[0].
	flushed int64
	err     error
}

func newOutput(w io.WriteSeeker) (*output, error) {
	base, err := w.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, fmt.Errorf("squashfs: output: %w", err)
	}
	return &output{w: w, base: base, buf: make([]byte, 0, outputBufferBytes)}, nil
}

func (o *output) pos() int64 { return o.flushed + int64(len(o.buf)) }

func (o *output) write(p []byte) {
	if o.err != nil {
		return
	}
	if len(o.buf)+len(p) > cap(o.buf) {
		o.flush()
		if len(p) >= cap(o.buf) {
			o.direct(p)
			return
		}
	}
	o.buf = append(o.buf, p...)
}

func (o *output) direct(p []byte) {
	if o.err != nil {
		return
	}
	if _, err := o.w.Write(p); err != nil {
		o.err = fmt.Errorf("squashfs: write at %d: %w", o.flushed, err)
		return
	}
	o.flushed += int64(len(p))
}

// zeros writes n zero bytes.
func (o *output) zeros(n int64) {
	var zero [4096]byte
	for n > 0 {
		k := min(n, int64(len(zero)))
		o.write(zero[:k])
		n -= k
	}
}

func (o *output) flush() {
	if o.err != nil || len(o.buf) == 0 {
		return
	}
	b := o.buf
	o.buf = o.buf[:0]
	o.direct(b)
}

func (o *output) seek(pos int64) {
	if o.err != nil {
		return
	}
	if _, err := o.w.Seek(o.base+pos, io.SeekStart); err != nil {
		o.err = fmt.Errorf("squashfs: seek to %d: %w", pos, err)
		return
	}
	o.flushed = pos
}

// writeAt writes p at pos and returns to the end.
func (o *output) writeAt(pos int64, p []byte) {
	o.flush()
	end := o.pos()
	o.seek(pos)
	o.direct(p)
	o.seek(end)
}
