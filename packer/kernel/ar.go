package kernel

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// The ar format as dpkg, GNU and BSD ar write it: a magic line, then per
// member a fixed 60-byte text header and the data, padded to an even offset.
const (
	arMagic       = "!<arch>\n"
	arHeaderBytes = 60
	arHeaderEnd   = "`\n"
	// arMaxNameTableBytes bounds the GNU long-name table read into memory;
	// real tables are a few KiB.
	arMaxNameTableBytes = 1 << 20
	// arMaxBSDNameBytes bounds a BSD "#1/N" inline name.
	arMaxBSDNameBytes = 4096
)

// arMember is a member of an ar archive.
type arMember struct {
	Name string
	// Size is the size of the member's data, without a BSD inline name.
	Size int64
	// Offset is where the member's header starts in the archive.
	Offset int64
	// Index counts members from 0, special GNU members included.
	Index int
}

// arReader reads an ar archive as a stream, member by member, so a large
// data.tar.xz is never held whole. After Next, Read returns the member's
// data.
type arReader struct {
	r   io.Reader
	off int64
	// remaining is what is left of the current member's data, and pad
	// whether a padding byte follows it.
	remaining int64
	pad       bool
	index     int
	names     []byte // GNU "//" long-name table
	cur       arMember
}

func newARReader(r io.Reader) (*arReader, error) {
	var magic [len(arMagic)]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil {
		return nil, fmt.Errorf("ar: reading magic: %w", noEOF(err))
	}
	if string(magic[:]) != arMagic {
		return nil, fmt.Errorf("ar: magic %q, want %q", magic[:], arMagic)
	}
	return &arReader{r: r, off: int64(len(arMagic))}, nil
}

// noEOF turns a plain EOF inside a structure into ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (a *arReader) read(p []byte) (int, error) {
	n, err := io.ReadFull(a.r, p)
	a.off += int64(n)
	return n, err
}

// skip discards the rest of the current member and its padding.
func (a *arReader) skip() error {
	if a.remaining > 0 {
		n, err := io.CopyN(io.Discard, a.r, a.remaining)
		a.off += n
		a.remaining -= n
		if err != nil {
			return fmt.Errorf("ar: member %d %q: %w", a.cur.Index, a.cur.Name, noEOF(err))
		}
	}
	if a.pad {
		a.pad = false
		var b [1]byte
		if _, err := a.read(b[:]); err != nil {
			// Some writers omit the padding after the last member.
			if err == io.EOF {
				return nil
			}
			return fmt.Errorf("ar: member %d %q: padding: %w", a.cur.Index, a.cur.Name, err)
		}
	}
	return nil
}

// Next advances to the next regular member, skipping the GNU symbol and
// name tables. It returns io.EOF after the last member.
func (a *arReader) Next() (arMember, error) {
	for {
		m, err := a.next()
		if err != nil {
			return arMember{}, err
		}
		if m.Name != "" {
			return m, nil
		}
	}
}

// next reads one header; special members come back with an empty name.
func (a *arReader) next() (arMember, error) {
	if err := a.skip(); err != nil {
		return arMember{}, err
	}
	start := a.off
	var h [arHeaderBytes]byte
	n, err := a.read(h[:])
	if err != nil {
		if err == io.EOF && n == 0 {
			return arMember{}, io.EOF
		}
		return arMember{}, fmt.Errorf("ar: member %d at offset %d: header: %w", a.index, start, noEOF(err))
	}
	m := arMember{Offset: start, Index: a.index}
	a.index++
	fail := func(format string, args ...any) (arMember, error) {
		return arMember{}, fmt.Errorf("ar: member %d at offset %d: %s", m.Index, start, fmt.Sprintf(format, args...))
	}
	if string(h[58:60]) != arHeaderEnd {
		return fail("header ends with %q, want %q", h[58:60], arHeaderEnd)
	}
	sizeField := strings.TrimRight(string(h[48:58]), " ")
	size, err := strconv.ParseInt(sizeField, 10, 64)
	if err != nil || size < 0 {
		return fail("size field %q is not a decimal number", sizeField)
	}
	m.Size = size
	a.remaining = size
	a.pad = size%2 == 1
	a.cur = m
	raw := strings.TrimRight(string(h[0:16]), " ")
	switch {
	case raw == "/" || raw == "/SYM64/" || raw == "__.SYMDEF" || raw == "__.SYMDEF SORTED":
		// Symbol tables: nothing to extract.
		return arMember{}, nil
	case raw == "//":
		if size > arMaxNameTableBytes {
			return fail("long-name table of %d bytes exceeds %d", size, arMaxNameTableBytes)
		}
		a.names = make([]byte, size)
		if _, err := a.read(a.names); err != nil {
			return fail("long-name table: %v", noEOF(err))
		}
		a.remaining = 0
		return arMember{}, nil
	case strings.HasPrefix(raw, "#1/"):
		// BSD: the name follows the header and counts towards the size.
		nameLen, err := strconv.ParseInt(raw[3:], 10, 64)
		if err != nil || nameLen <= 0 || nameLen > size || nameLen > arMaxBSDNameBytes {
			return fail("BSD name length %q invalid for a member of %d bytes", raw[3:], size)
		}
		name := make([]byte, nameLen)
		if _, err := a.read(name); err != nil {
			return fail("BSD name: %v", noEOF(err))
		}
		a.remaining -= nameLen
		m.Size -= nameLen
		m.Name = string(bytes.TrimRight(name, "\x00"))
	case len(raw) > 1 && raw[0] == '/' && isDigits(raw[1:]):
		at, err := strconv.Atoi(raw[1:])
		if err != nil || a.names == nil || at >= len(a.names) {
			return fail("long name at table offset %s: no such entry in a table of %d bytes", raw[1:], len(a.names))
		}
		name := a.names[at:]
		if end := bytes.IndexByte(name, '\n'); end >= 0 {
			name = name[:end]
		}
		m.Name = strings.TrimSuffix(string(name), "/")
	default:
		// GNU terminates short names with '/', dpkg and BSD do not.
		m.Name = strings.TrimSuffix(raw, "/")
	}
	if m.Name == "" {
		return fail("empty member name")
	}
	a.cur = m
	return m, nil
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// Read reads the current member's data.
func (a *arReader) Read(p []byte) (int, error) {
	if a.remaining <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > a.remaining {
		p = p[:a.remaining]
	}
	n, err := a.r.Read(p)
	a.off += int64(n)
	a.remaining -= int64(n)
	if err == io.EOF {
		if a.remaining > 0 {
			return n, fmt.Errorf("ar: member %d %q: %w (%d bytes missing)", a.cur.Index, a.cur.Name, io.ErrUnexpectedEOF, a.remaining)
		}
		err = nil
	}
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		err = fmt.Errorf("ar: member %d %q: %w", a.cur.Index, a.cur.Name, err)
	}
	return n, err
}
