package squashfs

import (
	"encoding/binary"
	"fmt"

	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"

	format "github.com/ingotdev/ingot/packer/format/squashfs"
)

// Compression selects how data and metadata blocks are compressed.
type Compression uint8

// The compressions Write supports.
const (
	// Zstd is zstd (compressor id 6), read by Linux 4.14 and later.
	Zstd Compression = iota + 1
	// Gzip is zlib-wrapped deflate (compressor id 1), read by every kernel.
	Gzip
	// None stores every block uncompressed; the image says gzip so that
	// every reader accepts it.
	None
)

func (c Compression) String() string {
	switch c {
	case Zstd:
		return "zstd"
	case Gzip:
		return "gzip"
	case None:
		return "none"
	}
	return fmt.Sprintf("compression(%d)", uint8(c))
}

// ParseCompression returns the Compression named s: "zstd", "gzip" or
// "none".
func ParseCompression(s string) (Compression, error) {
	for _, c := range []Compression{Zstd, Gzip, None} {
		if c.String() == s {
			return c, nil
		}
	}
	return 0, fmt.Errorf("squashfs: unknown compression %q (want zstd, gzip or none)", s)
}

// Compression levels: the defaults of Write, the levels mksquashfs assumes
// when an image carries no compressor options, and the valid ranges.
const (
	DefaultZstdLevel = 3
	DefaultGzipLevel = 6

	mksquashfsZstdLevel = 15
	mksquashfsGzipLevel = 9

	minZstdLevel = 1
	maxZstdLevel = 22
	minGzipLevel = 1
	maxGzipLevel = 9

	// gzipWindowLog is the deflate window mksquashfs records as default.
	gzipWindowLog = 15
)

// defaultLevel returns the level Write uses for c when none is given.
func (c Compression) defaultLevel() int {
	switch c {
	case Zstd:
		return DefaultZstdLevel
	case Gzip:
		return DefaultGzipLevel
	}
	return 0
}

func (c Compression) checkLevel(level int) error {
	lo, hi := 0, 0
	switch c {
	case Zstd:
		lo, hi = minZstdLevel, maxZstdLevel
	case Gzip:
		lo, hi = minGzipLevel, maxGzipLevel
	}
	if level < lo || level > hi {
		if c == None {
			return fmt.Errorf("squashfs: compression none takes no level, got %d", level)
		}
		return fmt.Errorf("squashfs: %s level %d outside %d..%d", c, level, lo, hi)
	}
	return nil
}

// id returns the superblock compressor id.
func (c Compression) id() uint16 {
	if c == Zstd {
		return format.CompressorZstd
	}
	return format.CompressorGzip
}

// options returns the compressor options block, or nil when the level is
// the one readers assume. The kernel ignores the block for gzip and zstd;
// unsquashfs shows it, so it records the level actually used.
func (c Compression) options(level int) []byte {
	switch c {
	case Zstd:
		if level == mksquashfsZstdLevel {
			return nil
		}
		return binary.LittleEndian.AppendUint32(nil, uint32(level))
	case Gzip:
		if level == mksquashfsGzipLevel {
			return nil
		}
		b := binary.LittleEndian.AppendUint32(nil, uint32(level))
		b = binary.LittleEndian.AppendUint16(b, gzipWindowLog)
		return binary.LittleEndian.AppendUint16(b, 0) // default strategy
	}
	return nil
}

// compressor compresses one block at a time. It is not safe for
// concurrent use; every worker owns one.
type compressor interface {
	// compress appends the compressed form of src to dst[:0]. A nil
	// result means "store uncompressed".
	compress(dst, src []byte) ([]byte, error)
}

func newCompressor(c Compression, level int) (compressor, error) {
	switch c {
	case Zstd:
		enc, err := zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)),
			zstd.WithEncoderConcurrency(1),
			zstd.WithEncoderCRC(false),
			// The frame's window is then its content size, which the
			// kernel bounds by the block size.
			zstd.WithSingleSegment(true),
		)
		if err != nil {
			return nil, fmt.Errorf("squashfs: zstd: %w", err)
		}
		return zstdCompressor{enc}, nil
	case Gzip:
		g := &gzipCompressor{}
		zw, err := zlib.NewWriterLevel(&g.sink, level)
		if err != nil {
			return nil, fmt.Errorf("squashfs: gzip: %w", err)
		}
		g.zw = zw
		return g, nil
	case None:
		return noneCompressor{}, nil
	}
	return nil, fmt.Errorf("squashfs: unknown compression %d", c)
}

type zstdCompressor struct{ enc *zstd.Encoder }

func (z zstdCompressor) compress(dst, src []byte) ([]byte, error) {
	return z.enc.EncodeAll(src, dst[:0]), nil
}

// sliceSink is an io.Writer appending to a slice, so that zlib output
// lands in a reused buffer.
type sliceSink struct{ b []byte }

func (s *sliceSink) Write(p []byte) (int, error) {
	s.b = append(s.b, p...)
	return len(p), nil
}

// gzipCompressor writes zlib streams: squashfs "gzip" is RFC 1950 framing,
// which is what the kernel's zlib_inflate expects.
type gzipCompressor struct {
	sink sliceSink
	zw   *zlib.Writer
}

func (g *gzipCompressor) compress(dst, src []byte) ([]byte, error) {
	g.sink.b = dst[:0]
	g.zw.Reset(&g.sink)
	if _, err := g.zw.Write(src); err != nil {
		return nil, fmt.Errorf("squashfs: gzip: %w", err)
	}
	if err := g.zw.Close(); err != nil {
		return nil, fmt.Errorf("squashfs: gzip: %w", err)
	}
	out := g.sink.b
	g.sink.b = nil
	return out, nil
}

type noneCompressor struct{}

func (noneCompressor) compress(dst, src []byte) ([]byte, error) { return nil, nil }
