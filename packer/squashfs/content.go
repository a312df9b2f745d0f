package squashfs

// Reading file contents: from the host without os.File overhead, checked
// against the size the tree promises, and compared for duplicates.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"

	"github.com/ingotdev/ingot/packer/rootfs"
	"golang.org/x/sys/unix"
)

// checkEOF makes sure a content has no bytes beyond the file's size.
func checkEOF(r io.Reader, path string, size int64) error {
	var extra [1]byte
	n, err := r.Read(extra[:])
	switch {
	case n > 0:
		return fmt.Errorf("squashfs: file %q: content is longer than its size %d", path, size)
	case err != nil && err != io.EOF:
		return fmt.Errorf("squashfs: file %q: read content: %w", path, err)
	}
	return nil
}

// contentErr describes a failed read of a file's content at byte at; a
// content that ends early is the common case and says so.
func contentErr(path string, at, size int64, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("squashfs: file %q: content ended near byte %d, want %d bytes", path, at, size)
	}
	return fmt.Errorf("squashfs: file %q: read content at byte %d: %w", path, at, err)
}

// sameContent compares two files byte by byte.
func (d *dataWriter) sameContent(a, b *fileData) (bool, error) {
	d.allocCompare()
	ra, err := d.hostFiles.open(a.node.entry.Content)
	if err != nil {
		return false, fmt.Errorf("squashfs: file %q: open content: %w", a.node.path, err)
	}
	defer ra.Close()
	rb, err := d.hostFiles.open(b.node.entry.Content)
	if err != nil {
		return false, fmt.Errorf("squashfs: file %q: open content: %w", b.node.path, err)
	}
	defer rb.Close()
	for at := int64(0); at < a.size; {
		n := int(min(int64(d.blockSize), a.size-at))
		if _, err := io.ReadFull(ra, d.cmpA[:n]); err != nil {
			return false, contentErr(a.node.path, at, a.size, err)
		}
		if _, err := io.ReadFull(rb, d.cmpB[:n]); err != nil {
			return false, contentErr(b.node.path, at, b.size, err)
		}
		if !bytes.Equal(d.cmpA[:n], d.cmpB[:n]) {
			return false, nil
		}
		at += int64(n)
	}
	return true, nil
}

// sameAs compares file a with data, all of the content of a file of the
// same size.
func (d *dataWriter) sameAs(a *fileData, data []byte) (bool, error) {
	d.allocCompare()
	ra, err := d.hostFiles.open(a.node.entry.Content)
	if err != nil {
		return false, fmt.Errorf("squashfs: file %q: open content: %w", a.node.path, err)
	}
	defer ra.Close()
	got := d.cmpA[:len(data)]
	if _, err := io.ReadFull(ra, got); err != nil {
		return false, contentErr(a.node.path, 0, a.size, err)
	}
	return bytes.Equal(got, data), nil
}

func (d *dataWriter) allocCompare() {
	if d.cmpA == nil {
		d.cmpA = make([]byte, d.blockSize)
		d.cmpB = make([]byte, d.blockSize)
	}
}

// maxOpenHostFiles bounds the host files hostFiles keeps open.
const maxOpenHostFiles = 64

// hostFiles opens file contents for the data writer's reader goroutine.
// Host files are read with plain system calls: os.File would register
// each with the poller, which costs a failed epoll_ctl per regular file,
// and trees have tens of thousands. Ranges of host files (the files of a
// flattened image, each a range of its layer tar) share one descriptor
// per host file, kept open until close, so that a layer of ten thousand
// small files is opened once, not ten thousand times. Not safe for
// concurrent use.
type hostFiles struct {
	fds map[string]int
	// opened lists the paths in fds, oldest first, for eviction.
	opened []string
}

// open opens a file's content.
func (h *hostFiles) open(c rootfs.Content) (io.ReadCloser, error) {
	switch c := c.(type) {
	case rootfs.HostFile:
		fd, err := openHost(string(c))
		if err != nil {
			return nil, err
		}
		return rawFile(fd), nil
	case rootfs.HostFileRange:
		fd, ok := h.fds[c.Path]
		if !ok {
			var err error
			if fd, err = openHost(c.Path); err != nil {
				return nil, err
			}
			if len(h.opened) == maxOpenHostFiles {
				unix.Close(h.fds[h.opened[0]])
				delete(h.fds, h.opened[0])
				h.opened = h.opened[1:]
			}
			if h.fds == nil {
				h.fds = map[string]int{}
			}
			h.fds[c.Path] = fd
			h.opened = append(h.opened, c.Path)
		}
		return &rangeReader{fd: fd, off: c.Offset, end: c.Offset + c.Size}, nil
	}
	return c.Open()
}

// close closes the descriptors kept open.
func (h *hostFiles) close() {
	for _, fd := range h.fds {
		unix.Close(fd)
	}
	h.fds, h.opened = nil, nil
}

func openHost(path string) (int, error) {
	for {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, &fs.PathError{Op: "open", Path: path, Err: err}
		}
		return fd, nil
	}
}

// rangeReader reads bytes off..end of a descriptor hostFiles owns, with
// positioned reads; closing it leaves the descriptor open.
type rangeReader struct {
	fd       int
	off, end int64
}

func (r *rangeReader) Read(p []byte) (int, error) {
	if r.off >= r.end {
		return 0, io.EOF
	}
	if int64(len(p)) > r.end-r.off {
		p = p[:r.end-r.off]
	}
	n, err := readRetrying(func() (int, error) { return unix.Pread(r.fd, p, r.off) }, len(p))
	r.off += int64(n)
	return n, err
}

func (r *rangeReader) Close() error { return nil }

// rawFile is an open host file descriptor.
type rawFile int

func (f rawFile) Read(p []byte) (int, error) {
	return readRetrying(func() (int, error) { return unix.Read(int(f), p) }, len(p))
}

// readRetrying calls read again while it fails with EINTR, and turns a
// read of nothing, when asked bytes were wanted, into io.EOF.
func readRetrying(read func() (int, error), asked int) (int, error) {
	for {
		n, err := read()
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, err
		case n == 0 && asked > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

func (f rawFile) Close() error { return unix.Close(int(f)) }
