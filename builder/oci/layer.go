package oci

import (
	"bufio"
	"bytes"
	"cmp"
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
	"golang.org/x/sync/errgroup"
)

// Magic numbers at the start of compressed layers.
var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

const mib = 1 << 20

// A layer is unpacked by three goroutines joined by queues of chunks, so
// that on a machine with more than one core the decompression, which is
// the slow part, does not wait for hashing and writing:
//
//	fetch:   compressed blob → its digest, the blob file → compressed chunks
//	inflate: compressed chunks → gzip, zstd or plain → uncompressed chunks
//	store:   uncompressed chunks → the layer limits, the diff id, the diff file
//
// A queue holds at most queueDepth chunks, so a layer in flight holds a
// few MiB whatever its size.
const (
	compressedChunkBytes   = 256 << 10
	uncompressedChunkBytes = 1 << 20
	queueDepth             = 4
)

// layer makes sure the uncompressed form of layer d is in the store. It
// reads the compressed blob once, from the store if there, else from f,
// writing the blob and the uncompressed tar side by side and checking
// both digests (the blob's by f's reader when f.verifiesBlobs) before
// either is renamed into place.
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

	// The blob's digest is checked here unless the source's reader checks
	// it (a registry's), so that no blob is hashed twice.
	var compressedHash hash.Hash
	var sinks []io.Writer
	if blobStored || !f.verifiesBlobs() {
		compressedHash = sha256.New()
		sinks = append(sinks, compressedHash)
	}
	var blobTmp *os.File
	if !blobStored {
		if blobTmp, err = os.CreateTemp(filepath.Dir(s.blobPath(d.Digest)), ".tmp-"+d.Digest.Hex+"-*"); err != nil {
			return err
		}
		defer os.Remove(blobTmp.Name())
		defer blobTmp.Close()
		sinks = append(sinks, blobTmp)
	}
	compressedSink := io.MultiWriter(sinks...)
	diffTmp, err := os.CreateTemp(filepath.Dir(s.diffPath(diffID)), ".tmp-"+diffID.Hex+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(diffTmp.Name())
	defer diffTmp.Close()
	diffHash := sha256.New()

	compressed := newChunkQueue(compressedChunkBytes, queueDepth)
	uncompressed := newChunkQueue(uncompressedChunkBytes, queueDepth)
	var compressedBytes, size int64
	g, gctx := errgroup.WithContext(ctx)
	// A stage that fails ends the others; the fetch may be waiting on a
	// registry that sends nothing more, which only closing its body ends.
	stopClosing := context.AfterFunc(gctx, func() { src.Close() })
	defer stopClosing()
	g.Go(func() (err error) {
		defer func() { compressed.close(err) }()
		compressedBytes, err = fetchChunks(gctx, src, compressedSink, compressed)
		return err
	})
	g.Go(func() (err error) {
		defer func() { uncompressed.close(err) }()
		qr := &queueReader{ctx: gctx, q: compressed}
		if err := inflate(gctx, qr, uncompressed); err != nil {
			// A fetch that failed (a registry's digest check) is the
			// cause, not the decoder's complaint about the stream's end.
			return cmp.Or(qr.upstream, err)
		}
		return nil
	})
	g.Go(func() (err error) {
		size, err = p.storeChunks(uncompressed, io.MultiWriter(diffTmp, diffHash))
		return err
	})
	if err := g.Wait(); err != nil {
		return err
	}
	if compressedHash != nil {
		if err := sumIs(compressedHash, d.Digest, "blob"); err != nil {
			return err
		}
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
		p.ref, i+1, n, shortDigest(d.Digest), float64(compressedBytes)/mib, from, float64(size)/mib)
	return nil
}

// unpack counts n more uncompressed bytes of the image against its limits.
func (p *puller) unpack(n int64) error {
	if total := p.unpacked.Add(n); total > p.limits.ImageBytes {
		return fmt.Errorf("the image's layers unpack to more than %d bytes, the limit of one image (a decompression bomb?)", p.limits.ImageBytes)
	}
	return nil
}

// fetchChunks reads the compressed blob to its end, hands every byte to
// sink (the digest, the blob file) and then to the queue for inflate. It
// returns how many bytes it read. A chunk is what one read returns, so
// that bytes a registry has sent are decompressed (and found corrupt)
// without waiting for more.
func fetchChunks(ctx context.Context, src io.Reader, sink io.Writer, out *chunkQueue) (int64, error) {
	r := &ctxReader{ctx: ctx, r: src}
	var total int64
	for {
		b, err := out.get(ctx)
		if err != nil {
			return total, err
		}
		n, rerr := r.Read(b)
		total += int64(n)
		if n > 0 {
			if _, err := sink.Write(b[:n]); err != nil {
				return total, err
			}
			if err := out.send(ctx, b[:n]); err != nil {
				return total, err
			}
		} else {
			out.recycle(b)
		}
		switch {
		case rerr == io.EOF:
			return total, nil
		case rerr != nil:
			return total, rerr
		}
	}
}

// inflate decompresses the tar in r, gzip- or zstd-compressed or plain as
// its first bytes tell, into chunks for the store stage. It then reads r
// to its end, so that the fetch stage, which hashes every byte of the
// blob, is never left waiting (the blob may have bytes after the
// compressed data: padding, a second gzip member the decoder did not
// need).
func inflate(ctx context.Context, r io.Reader, out *chunkQueue) error {
	br := bufio.NewReaderSize(r, 1<<16)
	magic, err := br.Peek(len(zstdMagic))
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	var tar io.Reader = br
	format := "tar"
	switch {
	case bytes.HasPrefix(magic, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
		defer zr.Close()
		tar, format = zr, "gzip"
	case bytes.HasPrefix(magic, zstdMagic):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return fmt.Errorf("zstd: %w", err)
		}
		defer zr.Close()
		tar, format = zr, "zstd"
	}
	for {
		b, err := out.get(ctx)
		if err != nil {
			return err
		}
		n, rerr := fill(tar, b)
		if n > 0 {
			if err := out.send(ctx, b[:n]); err != nil {
				return err
			}
		} else {
			out.recycle(b)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("%s: %w", format, rerr)
		}
	}
	_, err = io.Copy(io.Discard, r)
	return err
}

// storeChunks writes the uncompressed chunks to w, stopping a layer once
// it passes the layer limit or the image's, before the bytes reach the
// disk. It returns the layer's uncompressed size.
func (p *puller) storeChunks(in *chunkQueue, w io.Writer) (int64, error) {
	var written int64
	for b := range in.full {
		written += int64(len(b))
		if written > p.limits.LayerBytes {
			return written, fmt.Errorf("uncompressed layer over %d bytes, the limit of one layer (a decompression bomb?)", p.limits.LayerBytes)
		}
		if err := p.unpack(int64(len(b))); err != nil {
			return written, err
		}
		if _, err := w.Write(b); err != nil {
			return written, err
		}
		in.recycle(b)
	}
	return written, in.err
}

// fill reads from r until b is full or r fails; io.EOF means r ended
// (after n bytes, maybe 0). Chunks of uncompressed bytes are filled, so
// that the store stage writes few and large pieces.
func fill(r io.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := r.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// chunkQueue hands chunks of a stream from one goroutine to the next and
// the emptied buffers back. The producer calls get, send and finally
// close; the consumer ranges over full and recycles each chunk.
type chunkQueue struct {
	full chan []byte
	free chan []byte
	size int
	// made counts the buffers allocated, at most cap(free); only the
	// producer touches it.
	made int
	// err is why the producer stopped early; it is set before full is
	// closed, so the consumer reads it after the channel drains.
	err error
}

func newChunkQueue(size, depth int) *chunkQueue {
	// depth chunks queued, one being filled, one being consumed.
	return &chunkQueue{full: make(chan []byte, depth), free: make(chan []byte, depth+2), size: size}
}

// get returns an empty buffer, waiting for the consumer to free one when
// all are in use.
func (q *chunkQueue) get(ctx context.Context) ([]byte, error) {
	select {
	case b := <-q.free:
		return b[:q.size], nil
	default:
	}
	if q.made < cap(q.free) {
		q.made++
		return make([]byte, q.size), nil
	}
	select {
	case b := <-q.free:
		return b[:q.size], nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (q *chunkQueue) send(ctx context.Context, b []byte) error {
	select {
	case q.full <- b:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// recycle returns a buffer; it never blocks, as free holds every buffer
// there is.
func (q *chunkQueue) recycle(b []byte) { q.free <- b }

// close ends the stream; err, when not nil, is why it ended early.
func (q *chunkQueue) close(err error) {
	q.err = err
	close(q.full)
}

// queueReader reads the chunks of a queue as a stream. A stream its
// producer ended early reads as that producer's error, never as a clean
// end.
type queueReader struct {
	ctx context.Context
	q   *chunkQueue
	buf []byte // the chunk being read, to recycle
	cur []byte // what is left of it
	// upstream is the producer's error, once Read has returned it.
	upstream error
}

func (r *queueReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.buf != nil {
			r.q.recycle(r.buf)
			r.buf = nil
		}
		select {
		case b, ok := <-r.q.full:
			if !ok {
				if r.q.err != nil {
					r.upstream = r.q.err
					return 0, r.q.err
				}
				return 0, io.EOF
			}
			r.buf, r.cur = b, b
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
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
