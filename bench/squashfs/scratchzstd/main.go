package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/klauspost/compress/zstd"
)

func main() {
	var blocks [][]byte
	var tail []byte
	filepath.WalkDir(os.Args[1], func(p string, d fs.DirEntry, err error) error {
		if !d.Type().IsRegular() {
			return nil
		}
		b, _ := os.ReadFile(p)
		for len(b) >= 128<<10 {
			blocks = append(blocks, b[:128<<10])
			b = b[128<<10:]
		}
		tail = append(tail, b...)
		for len(tail) >= 128<<10 {
			blocks = append(blocks, tail[:128<<10:128<<10])
			tail = tail[128<<10:]
		}
		return nil
	})
	total := 0
	for _, b := range blocks {
		total += len(b)
	}
	fmt.Println("blocks", len(blocks), "bytes", total)
	for _, opts := range []struct {
		name string
		o    []zstd.EOption
	}{
		{"default", []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedDefault)}},
		{"default-lowmem", []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithLowerEncoderMem(true)}},
		{"default-lowmem-w", []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithLowerEncoderMem(true), zstd.WithWindowSize(128<<10)}},
		{"default-w", []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithWindowSize(128<<10)}},
		{"default", []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedDefault)}},
		{"default-lowmem", []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithLowerEncoderMem(true)}},
	} {
		o := append([]zstd.EOption{zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false), zstd.WithSingleSegment(true)}, opts.o...)
		enc, _ := zstd.NewWriter(nil, o...)
		dst := make([]byte, 0, 200<<10)
		start := time.Now()
		out := 0
		for _, b := range blocks {
			dst = enc.EncodeAll(b, dst[:0])
			out += min(len(dst), len(b))
		}
		el := time.Since(start)
		fmt.Printf("%-16s %v %.0f MB/s out %d\n", opts.name, el, float64(total)/el.Seconds()/1e6, out)
	}
}
