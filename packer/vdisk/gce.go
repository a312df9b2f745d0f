package vdisk

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"time"
)

// gceDiskName is the one file of a GCE image archive: Compute Engine's
// image import takes a gzip-compressed tar holding the raw disk as
// disk.raw, in GNU (oldgnu) tar format.
const gceDiskName = "disk.raw"

// gceRoundBytes: Compute Engine takes a disk.raw whose size is a whole
// number of GB (GiB), so the disk is padded with zeros to the next one.
// The GPT's backup then sits before the end; the appliance moves it there
// at its first boot, when it grows perm to the disk.
const gceRoundBytes = 1 << 30

// writeGCE writes the raw image, padded to a whole GiB, as disk.raw in a
// GNU tar, gzip-compressed.
// The tar header's time is o.ModTime (the build's epoch); the gzip header
// has no name and no time. The tar is not sparse: gzip shrinks the zero
// runs to almost nothing.
func writeGCE(ctx context.Context, out *os.File, m *image, o Options) error {
	zw, err := gzip.NewWriterLevel(out, gzip.DefaultCompression)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	mod := o.ModTime
	if mod.IsZero() {
		mod = time.Unix(0, 0)
	}
	hdr := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     gceDiskName,
		Mode:     0o644,
		Size:     (m.size + gceRoundBytes - 1) / gceRoundBytes * gceRoundBytes,
		ModTime:  mod.UTC().Truncate(time.Second),
		Format:   tar.FormatGNU,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("tar header: %w", err)
	}
	b := make([]byte, blockBytes)
	for i := range m.blocks() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := m.readBlock(i, b); err != nil {
			return err
		}
		n := min(int64(blockBytes), m.size-i*blockBytes)
		if _, err := tw.Write(b[:n]); err != nil {
			return fmt.Errorf("tar: %w", err)
		}
	}
	clear(b)
	for pad := hdr.Size - m.size; pad > 0; pad -= int64(len(b)) {
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, err := tw.Write(b[:min(pad, int64(len(b)))]); err != nil {
			return fmt.Errorf("tar: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("tar: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("gzip: %w", err)
	}
	return nil
}
