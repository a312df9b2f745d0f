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
	ra, err := openContent(a.node.entry.Content)
	if err != nil {
		return false, fmt.Errorf("squashfs: file %q: open content: %w", a.node.path, err)
	}
	defer ra.Close()
	rb, err := openContent(b.node.entry.Content)
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
	ra, err := openContent(a.node.entry.Content)
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

// openContent opens a file's content. Host files are read with plain
// system calls: os.File would register each with the poller, which costs
// a failed epoll_ctl per regular file, and trees have tens of thousands.
func openContent(c rootfs.Content) (io.ReadCloser, error) {
	h, ok := c.(rootfs.HostFile)
	if !ok {
		return c.Open()
	}
	for {
		fd, err := unix.Open(string(h), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: string(h), Err: err}
		}
		return rawFile(fd), nil
	}
}

// rawFile is an open host file descriptor.
type rawFile int

func (f rawFile) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(int(f), p)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, err
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

func (f rawFile) Close() error { return unix.Close(int(f)) }
