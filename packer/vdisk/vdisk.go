// Package vdisk converts ingot's raw disk image into the disk formats that
// hypervisors and clouds import: qcow2 (QEMU, libvirt, Proxmox), fixed VHD
// (Azure, Hyper-V), stream-optimized VMDK (vSphere, OVA, AWS import) and
// GCE's disk.raw in a gzip-compressed tar.
//
// Every writer is pure Go and streams from the raw image, which is sparse:
// it finds the data with SEEK_DATA/SEEK_HOLE and skips 64 KiB blocks that
// are all zeros, so sparse outputs (qcow2, VMDK) hold only the blocks that
// carry data. The output depends only on the raw image's bytes, the output
// file's base name (VMDK's descriptor names it) and Options: the same
// inputs give the same bytes. No field holds a wall-clock time or a random
// identifier; identifiers are derived from the image's content.
package vdisk

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Format is an output disk format.
type Format string

// The formats Convert writes.
const (
	Raw   Format = "raw"
	QCOW2 Format = "qcow2"
	VHD   Format = "vhd"
	VMDK  Format = "vmdk"
	GCE   Format = "gce"
)

// formats lists every format with its file name extension, in the order
// help texts show them.
var formats = []struct {
	f   Format
	ext string
}{
	{Raw, ".img"}, {QCOW2, ".qcow2"}, {VHD, ".vhd"}, {VMDK, ".vmdk"}, {GCE, ".tar.gz"},
}

// Names returns the format names, for help texts and errors.
func Names() []string {
	n := make([]string, len(formats))
	for i, f := range formats {
		n[i] = string(f.f)
	}
	return n
}

// ParseFormat returns the format named s.
func ParseFormat(s string) (Format, error) {
	for _, f := range formats {
		if string(f.f) == s {
			return f.f, nil
		}
	}
	return "", fmt.Errorf("unknown disk format %q (want one of %s)", s, strings.Join(Names(), ", "))
}

// Ext returns the file name extension of f's files (".qcow2").
func (f Format) Ext() string {
	for _, g := range formats {
		if g.f == f {
			return g.ext
		}
	}
	return "." + string(f)
}

// PathFor returns where the f copy of the raw image at raw goes: beside it,
// with ".img" replaced by f's extension (NAME-vm-amd64.qcow2).
func PathFor(raw string, f Format) string {
	if f == Raw {
		return raw
	}
	return strings.TrimSuffix(raw, ".img") + f.Ext()
}

// Options are the inputs of a conversion besides the raw image.
type Options struct {
	// ModTime is the time stamp written where a format has one (VHD's
	// footer, GCE's tar header): the build's SOURCE_DATE_EPOCH, never the
	// clock. The zero time writes the format's zero.
	ModTime time.Time
}

// blockBytes is the unit in which the raw image is scanned for data: one
// qcow2 cluster and one VMDK grain.
const blockBytes = 64 << 10

// Convert writes the raw disk image at src in format f to dst, with src's
// permissions. The file appears only when complete: it is written under a
// temporary name beside dst and renamed. Raw copies src.
func Convert(ctx context.Context, f Format, src, dst string, o Options) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("vdisk: %w", err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return fmt.Errorf("vdisk: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("vdisk: %s is not a regular file", src)
	}
	img := &image{f: in, name: src, size: st.Size()}
	if img.size == 0 || img.size%512 != 0 {
		return fmt.Errorf("vdisk: %s: size %d bytes is not a positive multiple of 512", src, img.size)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*")
	if err != nil {
		return fmt.Errorf("vdisk: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	switch f {
	case Raw:
		err = writeRaw(ctx, tmp, img)
	case QCOW2:
		err = writeQCOW2(ctx, tmp, img)
	case VHD:
		err = writeVHD(ctx, tmp, img, o)
	case VMDK:
		err = writeVMDK(ctx, tmp, img, filepath.Base(dst))
	case GCE:
		err = writeGCE(ctx, tmp, img, o)
	default:
		_, err = ParseFormat(string(f))
	}
	if err != nil {
		return fmt.Errorf("vdisk: %s of %s: %w", f, src, err)
	}
	// The copy holds what the image holds (the root's keys among it), so
	// it gets the image's permissions, not wider ones.
	if err := tmp.Chmod(st.Mode().Perm()); err != nil {
		return fmt.Errorf("vdisk: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("vdisk: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("vdisk: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("vdisk: %w", err)
	}
	return nil
}

// image is the raw input.
type image struct {
	f    *os.File
	name string
	size int64
}

// blocks returns the number of blockBytes blocks that cover the image (the
// last one may be partial).
func (m *image) blocks() int64 { return (m.size + blockBytes - 1) / blockBytes }

// readBlock reads block i into b (len blockBytes), zero-filling past the end.
func (m *image) readBlock(i int64, b []byte) error {
	off := i * blockBytes
	n := min(int64(len(b)), m.size-off)
	clear(b[n:])
	if _, err := m.f.ReadAt(b[:n], off); err != nil {
		return fmt.Errorf("reading %s at byte %d: %w", m.name, off, err)
	}
	return nil
}

// scan is what a pass over the image found.
type scan struct {
	// data lists, in order, the blocks that hold a non-zero byte.
	data []int64
	// digest is SHA-256 over each data block's index and bytes: a content
	// identity from which formats derive their identifiers.
	digest [32]byte
}

// scan finds the data blocks: only ranges SEEK_DATA reports are read (a
// file system without it reports everything as data), and of those only
// blocks with a non-zero byte count.
func (m *image) scan(ctx context.Context) (scan, error) {
	var s scan
	h := sha256.New()
	b := make([]byte, blockBytes)
	var idx [8]byte
	ranges, err := dataRanges(m.f, m.size)
	if err != nil {
		return s, fmt.Errorf("%s: %w", m.name, err)
	}
	for _, r := range ranges {
		for i := r[0] / blockBytes; i*blockBytes < r[1]; i++ {
			if n := len(s.data); n > 0 && s.data[n-1] >= i {
				continue // block shared by two ranges
			}
			if err := ctx.Err(); err != nil {
				return s, err
			}
			if err := m.readBlock(i, b); err != nil {
				return s, err
			}
			if allZero(b) {
				continue
			}
			s.data = append(s.data, i)
			for k := range idx {
				idx[k] = byte(i >> (8 * k))
			}
			h.Write(idx[:])
			h.Write(b)
		}
	}
	copy(s.digest[:], h.Sum(nil))
	return s, nil
}

var zeroBlock = make([]byte, blockBytes)

func allZero(b []byte) bool { return bytes.Equal(b, zeroBlock[:len(b)]) }

// writeRaw copies the image, leaving holes where it has zero blocks.
func writeRaw(ctx context.Context, out *os.File, m *image) error {
	s, err := m.scan(ctx)
	if err != nil {
		return err
	}
	if err := copySparse(ctx, out, m, s, 0); err != nil {
		return err
	}
	return out.Truncate(m.size)
}

// copySparse writes the data blocks of m to out at their offsets plus
// base, seeking over zero blocks. The caller sets the final size.
func copySparse(ctx context.Context, out io.WriterAt, m *image, s scan, base int64) error {
	b := make([]byte, blockBytes)
	for _, i := range s.data {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := m.readBlock(i, b); err != nil {
			return err
		}
		n := min(int64(blockBytes), m.size-i*blockBytes)
		if _, err := out.WriteAt(b[:n], base+i*blockBytes); err != nil {
			return err
		}
	}
	return nil
}

// errSize is wrapped when an image is too large for a format.
var errSize = errors.New("image too large for the format")
