package squashfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"io/fs"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/ingotdev/ingot/rootfs"
	"golang.org/x/sys/unix"
)

// The blocks in flight (read, being compressed or waiting for their turn
// to be written) are bounded: enough per worker to keep every worker busy
// while the reader or the writer waits for a CPU, few enough bytes that
// memory stays small whatever the file sizes.
const (
	jobsPerWorker    = 16
	maxInflightBytes = 64 << 20
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
	// jobDiscard drops the blocks just written for a file that turned out
	// to duplicate an earlier one.
	jobDiscard
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
}

// dataWriter writes file contents: full blocks compressed by a pool of
// workers, tails packed into fragment blocks, duplicates stored once.
type dataWriter struct {
	out       *output
	blockSize int
	workers   int
	newComp   func() (compressor, error)

	pool      bufPool
	zero      []byte
	work      chan *job
	order     chan *job
	failed    atomic.Bool
	writerErr error

	// Reader state.
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

// run writes the data of files in order and returns the fragment table.
func (d *dataWriter) run(ctx context.Context, files []*fileData) ([]fragmentEntry, error) {
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

func (d *dataWriter) readAll(ctx context.Context, files []*fileData) error {
	for _, f := range files {
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

// sparseMarker stands in the content hash for a block of zeros, so that
// sparse blocks cost no hashing.
var sparseMarker = []byte("\x00sparse block\x00")

func (d *dataWriter) readFile(ctx context.Context, f *fileData) error {
	path := f.node.path
	rc, err := openContent(f.node.entry.Content)
	if err != nil {
		return fmt.Errorf("squashfs: file %q: open content: %w", path, err)
	}
	defer rc.Close()

	bs := int64(d.blockSize)
	full := f.size / bs
	tail := int(f.size % bs)
	var h maphash.Hash
	h.SetSeed(d.seed)
	// A file of exactly one block keeps it back until the duplicate check,
	// so that small duplicates never reach the output.
	holdBack := full == 1 && tail == 0
	var held *job
	for i := range full {
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
		j := &job{kind: jobBlock, file: f, in: buf}
		if bytes.Equal(buf, d.zero) {
			d.pool.put(buf)
			j = &job{kind: jobSparse, file: f}
			h.Write(sparseMarker)
		} else {
			h.Write(buf)
		}
		if holdBack {
			held = j
		} else {
			d.dispatch(j)
		}
	}
	tailBuf := d.tailBuf[:tail]
	if _, err := io.ReadFull(rc, tailBuf); err != nil {
		return contentErr(path, full*bs, f.size, err)
	}
	var extra [1]byte
	if n, err := rc.Read(extra[:]); n > 0 || (err != nil && err != io.EOF) {
		if err == nil {
			return fmt.Errorf("squashfs: file %q: content is longer than its size %d", path, f.size)
		}
		return fmt.Errorf("squashfs: file %q: read content: %w", path, err)
	}
	h.Write(tailBuf)
	key := dedupeKey{f.size, h.Sum64()}

	for _, prev := range d.dedupe[key] {
		same, err := d.sameContent(prev, f)
		if err != nil {
			return err
		}
		if !same {
			continue
		}
		f.dupOf = prev
		switch {
		case held != nil:
			d.pool.put(held.in)
		case full > 0:
			d.dispatch(&job{kind: jobDiscard, file: f})
		}
		return nil
	}
	d.dedupe[key] = append(d.dedupe[key], f)
	if held != nil {
		d.dispatch(held)
	}
	if tail > 0 {
		d.addFragment(f, tailBuf)
	}
	return nil
}

func contentErr(path string, at, size int64, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("squashfs: file %q: content ended near byte %d, want %d bytes", path, at, size)
	}
	return fmt.Errorf("squashfs: file %q: read content at byte %d: %w", path, at, err)
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

// sameContent compares two files byte by byte; the hash only nominates
// candidates.
func (d *dataWriter) sameContent(a, b *fileData) (bool, error) {
	if d.cmpA == nil {
		d.cmpA = make([]byte, d.blockSize)
		d.cmpB = make([]byte, d.blockSize)
	}
	ra, err := openContent(a.node.entry.Content)
	if err != nil {
		return false, fmt.Errorf("squashfs: file %q: open content: %w", a.node.path, err)
	}
	defer ra.Close()
	rb, err := openContent(b.node.entry.Content)
	if err != nil {
		return false, fmt.Errorf("squashfs: file %q: open content: %w", b.node.path, err)
	}
	defer rb.Close()
	for at := int64(0); at < a.size; {
		n := int(min(int64(d.blockSize), a.size-at))
		if _, err := io.ReadFull(ra, d.cmpA[:n]); err != nil {
			return false, contentErr(a.node.path, at, a.size, err)
		}
		if _, err := io.ReadFull(rb, d.cmpB[:n]); err != nil {
			return false, contentErr(b.node.path, at, b.size, err)
		}
		if !bytes.Equal(d.cmpA[:n], d.cmpB[:n]) {
			return false, nil
		}
		at += int64(n)
	}
	return true, nil
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
	case jobBlock, jobSparse:
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
	case jobDiscard:
		d.out.rewind(int64(f.start))
		f.blocks, f.sparseBytes, f.started = nil, 0, false
	}
	return d.out.err
}

// openContent opens a file's content. Host files are read with plain
// system calls: os.File would register each with the poller, which costs
// a failed epoll_ctl per regular file, and trees have tens of thousands.
func openContent(c rootfs.Content) (io.ReadCloser, error) {
	h, ok := c.(rootfs.HostFile)
	if !ok {
		return c.Open()
	}
	for {
		fd, err := unix.Open(string(h), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: string(h), Err: err}
		}
		return rawFile(fd), nil
	}
}

// rawFile is an open host file descriptor.
type rawFile int

func (f rawFile) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(int(f), p)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, err
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

func (f rawFile) Close() error { return unix.Close(int(f)) }
