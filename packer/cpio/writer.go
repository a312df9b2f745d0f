// Package cpio writes "newc" (SVR4, magic 070701) cpio archives, the format
// the Linux kernel unpacks as an initramfs. Output is deterministic: inode
// numbers are assigned sequentially in write order, the archive's own device
// numbers are zero and every timestamp comes from the caller.
package cpio

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// File type bits of Header.Mode, as in st_mode.
const (
	ModeTypeMask    uint32 = 0o170000
	ModeSocket      uint32 = 0o140000
	ModeSymlink     uint32 = 0o120000
	ModeRegular     uint32 = 0o100000
	ModeBlockDevice uint32 = 0o060000
	ModeDir         uint32 = 0o040000
	ModeCharDevice  uint32 = 0o020000
	ModeFIFO        uint32 = 0o010000
)

const (
	newcMagic = "070701"
	// headerBytes is the magic plus 13 fields of 8 hex digits.
	headerBytes = len(newcMagic) + 13*8
	// alignBytes is the boundary that both the name and the data of an
	// entry are padded to, counted from the start of the archive.
	alignBytes = 4
	// maxField is the largest value an 8-hex-digit field holds; it bounds
	// sizes, times, inode numbers and name lengths.
	maxField = 0xffffffff
	// TrailerName is the name of the entry that ends every archive.
	TrailerName = "TRAILER!!!"
)

// ErrWriteTooLong is returned by Write when more bytes are written than the
// current header's Size announced.
var ErrWriteTooLong = errors.New("cpio: write too long")

// Header describes one archive entry.
type Header struct {
	// Name is the entry's path inside the archive, conventionally relative
	// ("etc/ingot/stage0.json"), "." for the root directory.
	Name string
	// Mode is the file type (one of the Mode* constants) and the permission
	// bits, as in st_mode.
	Mode uint32
	UID  uint32
	GID  uint32
	// NLink is the link count; 0 is written as 1.
	NLink uint32
	// ModTime is the modification time in seconds since the Unix epoch.
	ModTime int64
	// Size is the number of data bytes that follow: the content of a regular
	// file, the target of a symlink, zero for anything else.
	Size int64
	// Ino is the inode number. 0 asks the Writer for the next sequential
	// one; entries that are hard links of each other must share a number
	// the caller chose (see Writer.NextIno).
	Ino uint32
	// DevMajor and DevMinor are the device number of a character or block
	// device (the newc rdev fields).
	DevMajor uint32
	DevMinor uint32
}

// Writer writes a newc archive entry by entry: WriteHeader, then exactly
// Size bytes with Write, and Close to write the trailer. Writer does not
// buffer; wrap a slow destination in a bufio.Writer.
type Writer struct {
	w        io.Writer
	lastIno  uint32
	offBytes int64
	// remainingBytes is what the current entry still expects from Write.
	remainingBytes int64
	// current names the entry being written, for errors.
	current string
	closed  bool
	err     error // sticky: once the stream is broken, every call fails
}

// NewWriter returns a Writer that writes an archive to w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w}
}

// NextIno reserves and returns the next sequential inode number, for callers
// that write hard links themselves.
func (w *Writer) NextIno() uint32 {
	w.lastIno++
	return w.lastIno
}

func (w *Writer) write(p []byte) error {
	if w.err != nil {
		return w.err
	}
	n, err := w.w.Write(p)
	w.offBytes += int64(n)
	if err != nil {
		w.err = fmt.Errorf("cpio: write at offset %d: %w", w.offBytes, err)
	}
	return w.err
}

var zeros [alignBytes]byte

// pad writes zeros up to the next alignment boundary.
func (w *Writer) pad() error {
	if r := w.offBytes % alignBytes; r != 0 {
		return w.write(zeros[:alignBytes-r])
	}
	return nil
}

// finishEntry checks that the previous entry got all its bytes and pads
// after them.
func (w *Writer) finishEntry() error {
	if w.err != nil {
		return w.err
	}
	if w.remainingBytes != 0 {
		w.err = fmt.Errorf("cpio: entry %q: %d bytes of data missing", w.current, w.remainingBytes)
		return w.err
	}
	return w.pad()
}

// WriteHeader finishes the previous entry and starts a new one.
func (w *Writer) WriteHeader(h *Header) error {
	if w.closed {
		return fmt.Errorf("cpio: entry %q: write after Close", h.Name)
	}
	if err := w.finishEntry(); err != nil {
		return err
	}
	if err := validHeader(h); err != nil {
		return err
	}
	ino := h.Ino
	if ino == 0 {
		ino = w.NextIno()
	} else if ino > w.lastIno {
		// Later automatic numbers must not collide with the caller's.
		w.lastIno = ino
	}
	if err := w.writeRaw(h, ino); err != nil {
		return err
	}
	w.remainingBytes = h.Size
	w.current = h.Name
	return nil
}

func validHeader(h *Header) error {
	switch {
	case h.Name == "":
		return fmt.Errorf("cpio: empty entry name")
	case strings.IndexByte(h.Name, 0) >= 0:
		return fmt.Errorf("cpio: entry %q: name contains NUL", h.Name)
	case len(h.Name)+1 > maxField:
		return fmt.Errorf("cpio: entry %q: name of %d bytes is too long", h.Name, len(h.Name))
	case h.Name == TrailerName:
		return fmt.Errorf("cpio: entry name %q is reserved for the trailer", h.Name)
	case h.ModTime < 0 || h.ModTime > maxField:
		return fmt.Errorf("cpio: entry %q: modification time %d outside 0..%d", h.Name, h.ModTime, int64(maxField))
	case h.Size < 0 || h.Size > maxField:
		return fmt.Errorf("cpio: entry %q: size %d outside 0..%d", h.Name, h.Size, int64(maxField))
	}
	switch h.Mode & ModeTypeMask {
	case ModeRegular, ModeSymlink:
	case ModeDir, ModeCharDevice, ModeBlockDevice, ModeFIFO, ModeSocket:
		if h.Size != 0 {
			return fmt.Errorf("cpio: entry %q: mode %#o cannot carry %d data bytes", h.Name, h.Mode, h.Size)
		}
	default:
		return fmt.Errorf("cpio: entry %q: mode %#o has no valid file type", h.Name, h.Mode)
	}
	if h.Mode&^(ModeTypeMask|0o7777) != 0 {
		return fmt.Errorf("cpio: entry %q: mode %#o has unknown bits", h.Name, h.Mode)
	}
	return nil
}

// writeRaw writes a header, the NUL-terminated name and the padding after
// it. It does not validate h, so it can write the trailer.
func (w *Writer) writeRaw(h *Header, ino uint32) error {
	nlink := h.NLink
	if nlink == 0 {
		nlink = 1
	}
	fields := [13]uint32{
		ino,
		h.Mode,
		h.UID,
		h.GID,
		nlink,
		uint32(h.ModTime),
		uint32(h.Size),
		0, 0, // device holding the file: constant, for reproducibility
		h.DevMajor,
		h.DevMinor,
		uint32(len(h.Name) + 1),
		0, // checksum: only used by the 070702 variant
	}
	buf := make([]byte, 0, headerBytes+len(h.Name)+1)
	buf = append(buf, newcMagic...)
	const hexDigits = "0123456789ABCDEF"
	for _, f := range fields {
		for shift := 28; shift >= 0; shift -= 4 {
			buf = append(buf, hexDigits[(f>>uint(shift))&0xf])
		}
	}
	buf = append(buf, h.Name...)
	buf = append(buf, 0)
	if err := w.write(buf); err != nil {
		return err
	}
	return w.pad()
}

// Write writes data of the current entry.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.closed {
		return 0, fmt.Errorf("cpio: write after Close")
	}
	n := len(p)
	var err error
	if int64(n) > w.remainingBytes {
		n = int(w.remainingBytes)
		err = fmt.Errorf("cpio: entry %q: %w", w.current, ErrWriteTooLong)
	}
	if werr := w.write(p[:n]); werr != nil {
		return 0, werr
	}
	w.remainingBytes -= int64(n)
	return n, err
}

// Close finishes the last entry and writes the trailer. It does not close
// the underlying writer.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	if err := w.finishEntry(); err != nil {
		return err
	}
	w.closed = true
	return w.writeRaw(&Header{Name: TrailerName}, 0)
}
