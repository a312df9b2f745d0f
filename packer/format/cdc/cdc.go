// Package cdc is the content-defined chunking rule of chunked release
// roots: where a byte stream is cut into chunks, so that the host that
// publishes a root and the appliance that already holds an older one cut
// equal content at equal places and a change moves only the cuts around
// it.
//
// The rule is FastCDC's gear hash with normalized chunking: a 64-bit hash
// h = h<<1 + Gear[b] over the bytes after the first MinSize of a chunk
// (each bit of h depends on the last 64 bytes only), a cut after the first
// byte where h has its top bits clear, with a harder condition (more
// bits) before AvgSize and an easier one after it, and a forced cut at
// MaxSize. The gear table is derived from SHA-256 and never changes: a
// different table, mask or size is a different rule and needs a new Name.
package cdc

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
)

// Chunk size bounds. Every chunk but the last of a stream is at least
// MinSize bytes; none is larger than MaxSize; AvgSize is where the cut
// condition becomes easier (normalized chunking), and about the mean.
const (
	MinSize = 16 << 10
	AvgSize = 64 << 10
	MaxSize = 256 << 10
)

// Name identifies the chunking rule and its parameters; a chunk index
// records it.
const Name = "ingot-gear-v1"

// Cut conditions: h&mask == 0. The masks take the top bits of h, which
// depend on the most bytes (bit k of h depends on the last k+1 bytes).
// 16 bits would give a mean distance of 64 KiB; normalized chunking uses
// 2 more before AvgSize and 2 fewer after it.
const (
	maskHard = uint64(1<<18-1) << (64 - 18)
	maskEasy = uint64(1<<14-1) << (64 - 14)
)

// gearSeed is hashed with each byte value to derive the gear table.
const gearSeed = "ingot content-defined chunking gear table v1 "

// gearTable returns the gear table: entry i is the first 8 bytes (big
// endian) of SHA-256(gearSeed + decimal i).
var gearTable = sync.OnceValue(func() *[256]uint64 {
	var g [256]uint64
	for i := range g {
		sum := sha256.Sum256([]byte(gearSeed + strconv.Itoa(i)))
		g[i] = binary.BigEndian.Uint64(sum[:8])
	}
	return &g
})

// cut returns the length of the chunk that starts data, where data holds
// at least MaxSize bytes or the rest of the stream.
func cut(data []byte) int {
	n := len(data)
	if n <= MinSize {
		return n
	}
	if n > MaxSize {
		n = MaxSize
	}
	normal := min(n, AvgSize)
	g := gearTable()
	var h uint64
	i := MinSize
	for ; i < normal; i++ {
		h = h<<1 + g[data[i]]
		if h&maskHard == 0 {
			return i + 1
		}
	}
	for ; i < n; i++ {
		h = h<<1 + g[data[i]]
		if h&maskEasy == 0 {
			return i + 1
		}
	}
	return n
}

// Split reads r to its end and calls fn with each chunk's offset and bytes
// (data is valid only during the call). It stops at the first error of r
// or fn, and checks ctx between chunks. Empty input gives no chunks.
func Split(ctx context.Context, r io.Reader, fn func(off int64, data []byte) error) error {
	buf := make([]byte, 2*MaxSize)
	var start, end int // buf[start:end] is read and not yet cut
	var off int64
	eof := false
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !eof && end-start < MaxSize {
			copy(buf, buf[start:end])
			end -= start
			start = 0
			for end < len(buf) {
				n, err := r.Read(buf[end:])
				end += n
				if errors.Is(err, io.EOF) {
					eof = true
					break
				}
				if err != nil {
					return fmt.Errorf("cdc: reading at offset %d: %w", off+int64(end), err)
				}
			}
		}
		if start == end {
			return nil
		}
		n := cut(buf[start:end])
		if err := fn(off, buf[start:start+n]); err != nil {
			return err
		}
		start += n
		off += int64(n)
	}
}
