package squashfs

import (
	"bytes"
	"context"
	"fmt"
	"hash/maphash"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
)

// The blocks in flight (read, being compressed or waiting for their turn
// to be written) are bounded: enough per worker to keep every worker busy
// while the reader or the writer waits for a CPU, few enough bytes that
// memory stays small whatever the file sizes.
const (
	jobsPerWorker    = 16
	maxInflightBytes = 32 << 20
	minInflightJobs  = 4
)

type jobKind uint8

const (
	// jobBlock is a full block of a file.
	jobBlock jobKind = iota
	// jobSparse is a full block of zeros: recorded, never written.
	jobSparse
	// jobFragment is a block of packed file tails.
	jobFragment
	// jobRawBlock is a full block of a file stored as it is
	// (WithUncompressed): it skips the workers.
	jobRawBlock
)

// job is one unit of the data pipeline. Jobs are written strictly in the
// order the reader created them, whatever order workers finish them in.
type job struct {
	kind jobKind
	file *fileData
	in   []byte
	out  []byte
	// size is the block's size word: stored bytes, plus
	// dataUncompressedBit when stored as is.
	size uint32
	err  error
	done chan struct{}
}

// bufPool recycles block-sized buffers between reader, workers and writer.
type bufPool struct {
	mu   sync.Mutex
	free [][]byte
	size int
}

func (p *bufPool) get() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.free); n > 0 {
		b := p.free[n-1]
		p.free = p.free[:n-1]
		return b[:p.size]
	}
	return make([]byte, p.size, p.size+p.size/16+64)
}

func (p *bufPool) put(b []byte) {
	if cap(b) < p.size {
		return
	}
	p.mu.Lock()
	p.free = append(p.free, b)
	p.mu.Unlock()
}

type fragmentEntry struct {
	start uint64
	size  uint32
}

type dedupeKey struct {
	size int64
	hash uint64
	// raw separates files stored uncompressed from the others, so that
	// deduplication never stores a file other than as chosen.
	raw bool
}

// dataWriter writes file contents: full blocks compressed by a pool of
// workers, tails packed into fragment blocks, duplicates stored once.
type dataWriter struct {
	out       *output
	blockSize int
	workers   int
	newComp   func() (compressor, error)
	// storeRaw chooses the files whose full blocks are written as they
	// are (WithUncompressed); nil stores none so.
	storeRaw func(path string, head []byte) bool

	pool      bufPool
	zero      []byte
	work      chan *job
	order     chan *job
	failed    atomic.Bool
	writerErr error

	// Reader state.
	hostFiles hostFiles
	seed      maphash.Seed
	dedupe    map[dedupeKey][]*fileData
	frag      []byte
	fragCount uint32
	tailBuf   []byte
	cmpA      []byte
	cmpB      []byte

	// Writer state.
	fragments []fragmentEntry
}

func newDataWriter(out *output, blockSize, workers int, newComp func() (compressor, error)) *dataWriter {
	inflight := max(minInflightJobs, min(workers*jobsPerWorker, maxInflightBytes/blockSize))
	return &dataWriter{
		out:       out,
		blockSize: blockSize,
		workers:   workers,
		newComp:   newComp,
		pool:      bufPool{size: blockSize},
		zero:      make([]byte, blockSize),
		work:      make(chan *job, inflight),
		order:     make(chan *job, inflight),
		seed:      maphash.MakeSeed(),
		dedupe:    map[dedupeKey][]*fileData{},
		tailBuf:   make([]byte, blockSize),
	}
}

// run writes the data of files, in the order they arrive until the
// channel is closed, and returns the fragment table.
func (d *dataWriter) run(ctx context.Context, files <-chan *fileData) ([]fragmentEntry, error) {
	comps := make([]compressor, d.workers)
	for i := range comps {
		c, err := d.newComp()
		if err != nil {
			return nil, err
		}
		comps[i] = c
	}
	var wg sync.WaitGroup
	for _, c := range comps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.compressLoop(c)
		}()
	}
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		d.writeLoop()
	}()

	err := d.readAll(ctx, files)
	d.hostFiles.close()
	close(d.work)
	close(d.order)
	wg.Wait()
	<-writerDone
	if err == nil {
		err = d.writerErr
	}
	if err != nil {
		return nil, err
	}
	return d.fragments, nil
}

func (d *dataWriter) readAll(ctx context.Context, files <-chan *fileData) error {
	for f := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.failed.Load() {
			return nil // the writer's error is reported by run
		}
		if f.size == 0 {
			continue
		}
		if err := d.readFile(ctx, f); err != nil {
			return err
		}
	}
	if len(d.frag) > 0 {
		d.dispatch(&job{kind: jobFragment, in: d.frag})
		d.frag = nil
	}
	return nil
}

// sparseMarker stands in the dedupe hash for a block of zeros, so that
// sparse blocks cost no hashing.
var sparseMarker = []byte("\x00sparse block\x00")

// readFile reads a file block by block and hands the blocks to the
// workers, and its tail to the current fragment block.
//
// Duplicates are caught before anything is written: the size and a hash
// of the first block nominate earlier files, which are then compared byte
// by byte. Only a file that matches nothing is written, so the output
// never has to take blocks back, and a nominated file that differs costs
// one extra read.
func (d *dataWriter) readFile(ctx context.Context, f *fileData) error {
	path := f.node.path
	rc, err := d.hostFiles.open(f.node.entry.Content)
	if err != nil {
		return fmt.Errorf("squashfs: file %q: open content: %w", path, err)
	}
	defer rc.Close()

	bs := int64(d.blockSize)
	full := f.size / bs
	tail := int(f.size % bs)

	// The first block, or the whole file when it is smaller.
	first := d.pool.get()[:min(f.size, bs)]
	if _, err := io.ReadFull(rc, first); err != nil {
		d.pool.put(first)
		return contentErr(path, 0, f.size, err)
	}
	if f.size <= bs {
		if err := checkEOF(rc, path, f.size); err != nil {
			d.pool.put(first)
			return err
		}
	}
	firstZero := len(first) == d.blockSize && bytes.Equal(first, d.zero)
	var h maphash.Hash
	h.SetSeed(d.seed)
	if firstZero {
		h.Write(sparseMarker)
	} else {
		h.Write(first)
	}
	raw := d.storeRaw != nil && d.storeRaw(path, first)
	key := dedupeKey{f.size, h.Sum64(), raw}
	for _, prev := range d.dedupe[key] {
		var same bool
		if f.size <= bs {
			same, err = d.sameAs(prev, first)
		} else {
			same, err = d.sameContent(prev, f)
		}
		if err != nil {
			d.pool.put(first)
			return err
		}
		if same {
			f.dupOf = prev
			d.pool.put(first)
			return nil
		}
	}
	d.dedupe[key] = append(d.dedupe[key], f)

	if full == 0 {
		d.addFragment(f, first)
		d.pool.put(first)
		return nil
	}
	d.dispatchBlock(f, first, firstZero, raw)
	if f.size == bs {
		return nil
	}
	for i := int64(1); i < full; i++ {
		if i&63 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
			if d.failed.Load() {
				return nil
			}
		}
		buf := d.pool.get()
		if _, err := io.ReadFull(rc, buf); err != nil {
			d.pool.put(buf)
			return contentErr(path, i*bs, f.size, err)
		}
		d.dispatchBlock(f, buf, bytes.Equal(buf, d.zero), raw)
	}
	tailBuf := d.tailBuf[:tail]
	if _, err := io.ReadFull(rc, tailBuf); err != nil {
		return contentErr(path, full*bs, f.size, err)
	}
	if err := checkEOF(rc, path, f.size); err != nil {
		return err
	}
	if tail > 0 {
		d.addFragment(f, tailBuf)
	}
	return nil
}

// dispatchBlock sends a full block to be written, compressed or, when raw,
// as it is, or records a sparse one.
func (d *dataWriter) dispatchBlock(f *fileData, buf []byte, zero, raw bool) {
	switch {
	case zero:
		d.pool.put(buf)
		d.dispatch(&job{kind: jobSparse, file: f})
	case raw:
		d.dispatch(&job{kind: jobRawBlock, file: f, in: buf, out: buf, size: uint32(len(buf)) | dataUncompressedBit})
	default:
		d.dispatch(&job{kind: jobBlock, file: f, in: buf})
	}
}

// dispatch hands a job to the workers (when it needs compressing) and to
// the writer, blocking while the pipeline is full.
func (d *dataWriter) dispatch(j *job) {
	j.done = make(chan struct{})
	d.order <- j
	if j.kind == jobBlock || j.kind == jobFragment {
		d.work <- j
	} else {
		close(j.done)
		// Compressing a block takes long enough that the reader and the
		// writer, which only run briefly, may be waiting for a CPU; let
		// them run now rather than at the next preemption, so that the
		// pipeline does not drain.
		runtime.Gosched()
	}
}

// addFragment packs a file tail into the current fragment block, sending
// the block off when the tail does not fit.
func (d *dataWriter) addFragment(f *fileData, tail []byte) {
	if len(d.frag)+len(tail) > d.blockSize {
		d.dispatch(&job{kind: jobFragment, in: d.frag})
		d.frag = nil
		d.fragCount++
	}
	if d.frag == nil {
		d.frag = d.pool.get()[:0]
	}
	f.fragment = d.fragCount
	f.fragOffset = uint32(len(d.frag))
	d.frag = append(d.frag, tail...)
}

func (d *dataWriter) compressLoop(c compressor) {
	for j := range d.work {
		out := d.pool.get()
		packed, err := c.compress(out, j.in)
		switch {
		case err != nil:
			j.err = err
			d.pool.put(out)
		case packed != nil && len(packed) < len(j.in):
			j.out = packed
			j.size = uint32(len(packed))
		default:
			d.pool.put(out)
			j.out = j.in
			j.size = uint32(len(j.in)) | dataUncompressedBit
		}
		close(j.done)
		// Compressing a block takes long enough that the reader and the
		// writer, which only run briefly, may be waiting for a CPU; let
		// them run now rather than at the next preemption, so that the
		// pipeline does not drain.
		runtime.Gosched()
	}
}

// writeLoop writes finished jobs in order. After a failure it keeps
// draining so that the reader and workers never block.
func (d *dataWriter) writeLoop() {
	for j := range d.order {
		<-j.done
		if !d.failed.Load() {
			if err := d.writeJob(j); err != nil {
				d.writerErr = err
				d.failed.Store(true)
			}
		}
		if j.in != nil {
			d.pool.put(j.in)
		}
		if j.out != nil && (len(j.in) == 0 || &j.out[0] != &j.in[0]) {
			d.pool.put(j.out)
		}
	}
}

func (d *dataWriter) writeJob(j *job) error {
	if j.err != nil {
		return j.err
	}
	f := j.file
	switch j.kind {
	case jobBlock, jobRawBlock, jobSparse:
		if !f.started {
			f.start = uint64(d.out.pos())
			f.started = true
		}
		if j.kind == jobSparse {
			f.blocks = append(f.blocks, 0)
			f.sparseBytes += uint64(d.blockSize)
			break
		}
		f.blocks = append(f.blocks, j.size)
		d.out.write(j.out)
	case jobFragment:
		d.fragments = append(d.fragments, fragmentEntry{start: uint64(d.out.pos()), size: j.size})
		d.out.write(j.out)
	}
	return d.out.err
}
