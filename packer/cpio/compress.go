package cpio

import (
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/ingotdev/ingot/packer/rootfs"
)

// Compression selects how WriteCompressedTree compresses the archive. Both
// Gzip and Zstd are formats the kernel unpacks an initramfs from when built
// with CONFIG_RD_GZIP / CONFIG_RD_ZSTD (Debian's kernels have both).
type Compression uint8

// The supported compressions.
const (
	None Compression = iota
	Gzip
	Zstd
)

func (c Compression) String() string {
	switch c {
	case None:
		return "none"
	case Gzip:
		return "gzip"
	case Zstd:
		return "zstd"
	}
	return fmt.Sprintf("compression(%d)", uint8(c))
}

// WriteCompressedTree writes t as an archive compressed with c. The output
// is deterministic: gzip gets no name and a zero time, and zstd encodes on
// one goroutine so the output does not depend on the machine's core count.
func WriteCompressedTree(w io.Writer, t *rootfs.Tree, c Compression) error {
	switch c {
	case None:
		return WriteTree(w, t)
	case Gzip:
		zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
		if err != nil {
			return fmt.Errorf("cpio: gzip: %w", err)
		}
		if err := WriteTree(zw, t); err != nil {
			return err
		}
		if err := zw.Close(); err != nil {
			return fmt.Errorf("cpio: gzip: %w", err)
		}
		return nil
	case Zstd:
		zw, err := zstd.NewWriter(w,
			zstd.WithEncoderLevel(zstd.SpeedBetterCompression),
			zstd.WithEncoderConcurrency(1),
			zstd.WithEncoderCRC(true),
			// The kernel allocates the frame's window while it unpacks
			// the initramfs, before anything else runs: the level's
			// default 8 MiB is memory a small guest lacks.
			zstd.WithWindowSize(zstdWindowBytes))
		if err != nil {
			return fmt.Errorf("cpio: zstd: %w", err)
		}
		if err := WriteTree(zw, t); err != nil {
			zw.Close()
			return err
		}
		if err := zw.Close(); err != nil {
			return fmt.Errorf("cpio: zstd: %w", err)
		}
		return nil
	}
	return fmt.Errorf("cpio: unknown compression %s", c)
}

// zstdWindowBytes is the zstd window of a compressed archive (see
// WriteCompressedTree).
const zstdWindowBytes = 1 << 20
