package flatten

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/ingotdev/ingot/packer/rootfs"
)

// sparse reports whether hdr is a GNU sparse file, whose data in the
// archive is not the file's bytes in order.
func sparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// content returns the source of a regular file's bytes: a range of the
// layer file, or for a sparse file a copy with the holes filled in.
func (f *flattener) content(hdr *tar.Header, tr *tar.Reader, file *layerFile) (rootfs.Content, error) {
	if hdr.Size == 0 {
		return rootfs.Bytes(nil), nil
	}
	if f.contentBytes += hdr.Size; hdr.Size < 0 || f.contentBytes > f.opts.maxBytes {
		return nil, fmt.Errorf("file of %d bytes takes the image's file contents over %d bytes, the limit (a sparse-file or decompression bomb?)", hdr.Size, f.opts.maxBytes)
	}
	if sparse(hdr) {
		return f.spool(hdr, tr)
	}
	// tar.Reader has read the header and nothing more, so the next byte
	// of the file is the first of the entry's data.
	return rootfs.HostFileRange{Path: f.layer.Path, Offset: file.offset(), Size: hdr.Size}, nil
}

func (f *flattener) spool(hdr *tar.Header, tr *tar.Reader) (rootfs.Content, error) {
	if f.opts.spoolDir == "" {
		data, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("sparse file: %w", err)
		}
		if int64(len(data)) != hdr.Size {
			return nil, fmt.Errorf("sparse file: read %d bytes, header says %d", len(data), hdr.Size)
		}
		return rootfs.Bytes(data), nil
	}
	if err := os.MkdirAll(f.opts.spoolDir, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(f.opts.spoolDir, "sparse-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), tr)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("sparse file: %w", err)
	}
	if n != hdr.Size {
		return nil, fmt.Errorf("sparse file: read %d bytes, header says %d", n, hdr.Size)
	}
	// Named by content, so equal files share one copy across builds.
	dst := filepath.Join(f.opts.spoolDir, hex.EncodeToString(h.Sum(nil)))
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return nil, err
	}
	return rootfs.HostFile(dst), nil
}
