package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/ingotdev/ingot/packer/rootfs"
	"github.com/ingotdev/ingot/packer/squashfs"
)

const squashfsUsage = "[-comp zstd|gzip|none] [-level N] [-block-size N] SRC_DIR OUT"

// runSquashfs packs a directory into a squashfs image, like mksquashfs
// SRC OUT -noappend: owners, modes, xattrs, hard links and devices come
// from disk, so packing a root filesystem needs root.
func runSquashfs(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	fs := newFlagSet("squashfs", squashfsUsage, stderr)
	comp := fs.String("comp", "zstd", "compression: zstd, gzip or none")
	level := fs.Int("level", 0, "compression level (default 3 for zstd, 6 for gzip)")
	blockSize := fs.Int("block-size", squashfs.DefaultBlockBytes, "data block size in bytes, a power of two from 4096 to 1048576")
	if err := parseArgs(fs, args, 2, "want SRC_DIR and OUT"); err != nil {
		return err
	}
	src, dst := fs.Arg(0), fs.Arg(1)
	c, err := squashfs.ParseCompression(*comp)
	if err != nil {
		return usageError{err.Error()}
	}
	opts := []squashfs.Option{squashfs.WithCompression(c), squashfs.WithBlockSize(*blockSize)}
	if *level != 0 {
		opts = append(opts, squashfs.WithLevel(*level))
	}
	tree, err := rootfs.FromDir(src)
	if err != nil {
		return err
	}
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	if err := squashfs.Write(ctx, f, tree, opts...); err != nil {
		f.Close()
		os.Remove(dst)
		return err
	}
	size, err := f.Seek(0, io.SeekCurrent)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s: %d bytes\n", dst, size)
	return err
}
