package oci

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Magic numbers at the start of compressed layers.
var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

const mib = 1 << 20

// layer makes sure the uncompressed form of layer d is in the store. It
// reads the compressed blob once, from the store if there, else from f,
// writing the blob and the uncompressed tar side by side and checking
// both digests before either is renamed into place.
func (p *puller) layer(ctx context.Context, f fetcher, d v1.Descriptor, diffID v1.Hash, i, n int, offline bool) error {
	s := p.s
	if diffID.Algorithm != "sha256" {
		return fmt.Errorf("diff id %s: unsupported digest algorithm", diffID)
	}
	if fi, err := os.Stat(s.diffPath(diffID)); err == nil {
		return p.unpack(fi.Size())
	}
	blobStored := exists(s.blobPath(d.Digest))
	if offline && !blobStored {
		return fmt.Errorf("blob %s: %w", d.Digest, errNotStored)
	}
	var src io.ReadCloser
	var err error
	if blobStored {
		src, err = os.Open(s.blobPath(d.Digest))
	} else {
		src, err = f.blob(ctx, d)
	}
	if err != nil {
		return err
	}
	defer src.Close()

	var blobTmp *os.File
	compressedHash := sha256.New()
	var compressed io.Reader = &ctxReader{ctx: ctx, r: src}
	if blobStored {
		compressed = io.TeeReader(compressed, compressedHash)
	} else {
		if blobTmp, err = os.CreateTemp(filepath.Dir(s.blobPath(d.Digest)), ".tmp-"+d.Digest.Hex+"-*"); err != nil {
			return err
		}
		defer os.Remove(blobTmp.Name())
		defer blobTmp.Close()
		compressed = io.TeeReader(compressed, io.MultiWriter(blobTmp, compressedHash))
	}
	counted := &countReader{r: compressed}
	diffTmp, err := os.CreateTemp(filepath.Dir(s.diffPath(diffID)), ".tmp-"+diffID.Hex+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(diffTmp.Name())
	defer diffTmp.Close()
	diffHash := sha256.New()
	size, err := decompress(&boundedWriter{w: io.MultiWriter(diffTmp, diffHash), p: p}, counted)
	if err != nil {
		return err
	}
	// The compressed stream may have bytes after the compressed data
	// (padding, a second gzip member the decoder did not need).
	if _, err := io.Copy(io.Discard, counted); err != nil {
		return err
	}
	if err := sumIs(compressedHash, d.Digest, "blob"); err != nil {
		return err
	}
	if err := sumIs(diffHash, diffID, "uncompressed layer"); err != nil {
		return err
	}
	if err := diffTmp.Close(); err != nil {
		return err
	}
	if blobTmp != nil {
		if err := blobTmp.Close(); err != nil {
			return err
		}
		if err := os.Rename(blobTmp.Name(), s.blobPath(d.Digest)); err != nil {
			return err
		}
	}
	if err := os.Rename(diffTmp.Name(), s.diffPath(diffID)); err != nil {
		return err
	}
	from := "fetched"
	if blobStored {
		from = "unpacked from the store"
	}
	p.progress.printf("oci: %s: layer %d/%d %s: %.1f MiB %s, %.1f MiB uncompressed",
		p.ref, i+1, n, shortDigest(d.Digest), float64(counted.n)/mib, from, float64(size)/mib)
	return nil
}

// unpack counts n more uncompressed bytes of the image against its limits.
func (p *puller) unpack(n int64) error {
	if total := p.unpacked.Add(n); total > p.limits.ImageBytes {
		return fmt.Errorf("the image's layers unpack to more than %d bytes, the limit of one image (a decompression bomb?)", p.limits.ImageBytes)
	}
	return nil
}

// boundedWriter stops a layer's decompression once it passes the layer
// limit or the image's, before the bytes reach the disk.
type boundedWriter struct {
	w       io.Writer
	p       *puller
	written int64
}

func (b *boundedWriter) Write(data []byte) (int, error) {
	b.written += int64(len(data))
	if b.written > b.p.limits.LayerBytes {
		return 0, fmt.Errorf("uncompressed layer over %d bytes, the limit of one layer (a decompression bomb?)", b.p.limits.LayerBytes)
	}
	if err := b.p.unpack(int64(len(data))); err != nil {
		return 0, err
	}
	return b.w.Write(data)
}

func shortDigest(h v1.Hash) string {
	if len(h.Hex) > 12 {
		return h.Algorithm + ":" + h.Hex[:12]
	}
	return h.String()
}

func sumIs(h hash.Hash, want v1.Hash, what string) error {
	if got := hex.EncodeToString(h.Sum(nil)); got != want.Hex {
		return fmt.Errorf("%s has digest sha256:%s, want %s", what, got, want)
	}
	return nil
}

// decompress copies the tar in r, gzip- or zstd-compressed or plain as
// its first bytes tell, to w.
func decompress(w io.Writer, r io.Reader) (int64, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	magic, err := br.Peek(len(zstdMagic))
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	switch {
	case bytes.HasPrefix(magic, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return 0, fmt.Errorf("gzip: %w", err)
		}
		defer zr.Close()
		n, err := io.Copy(w, zr)
		if err != nil {
			return n, fmt.Errorf("gzip: %w", err)
		}
		return n, nil
	case bytes.HasPrefix(magic, zstdMagic):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return 0, fmt.Errorf("zstd: %w", err)
		}
		defer zr.Close()
		n, err := io.Copy(w, zr)
		if err != nil {
			return n, fmt.Errorf("zstd: %w", err)
		}
		return n, nil
	}
	return io.Copy(w, br)
}

// ctxReader stops a copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(b)
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}
