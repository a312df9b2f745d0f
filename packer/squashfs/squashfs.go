// Package squashfs writes squashfs 4.0 images, the read-only root
// filesystem of every appliance, from a rootfs.Tree, in pure Go.
//
// The image is what the Linux kernel and squashfs-tools read: every file
// type, owners through the id table, full mode bits, hard links sharing an
// inode, xattrs (user., trusted., security.), sparse blocks, tail packing
// into fragments, duplicate files stored once, directories of any size
// with lookup indexes, an NFS export table, and gzip, zstd or no
// compression. Data blocks are compressed by a pool of workers and written
// in order through a bounded pipeline, so memory does not grow with file
// size; WithUncompressed keeps chosen files' blocks as they are. The same
// tree and options always give the same bytes.
package squashfs

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/bits"
	"runtime"

	format "github.com/ingotdev/ingot/packer/format/squashfs"
	"github.com/ingotdev/ingot/packer/rootfs"
)

type config struct {
	comp      Compression
	level     int
	levelSet  bool
	blockSize int
	workers   int
	// storeRaw, when set, chooses the files whose full blocks are stored
	// uncompressed.
	storeRaw func(path string, head []byte) bool
}

// Option configures Write.
type Option func(*config)

// WithCompression selects the compressor; the default is Zstd.
func WithCompression(c Compression) Option {
	return func(cfg *config) { cfg.comp = c }
}

// WithLevel sets the compression level: 1..22 for zstd (default 3), 1..9
// for gzip (default 6).
func WithLevel(n int) Option {
	return func(cfg *config) { cfg.level, cfg.levelSet = n, true }
}

// WithBlockSize sets the data block size: a power of two from 4 KiB to
// 1 MiB, default 128 KiB.
func WithBlockSize(bytes int) Option {
	return func(cfg *config) { cfg.blockSize = bytes }
}

// WithWorkers sets how many blocks are compressed at once; the default is
// GOMAXPROCS.
func WithWorkers(n int) Option {
	return func(cfg *config) { cfg.workers = n }
}

// WithUncompressed stores the full data blocks of the files for which
// storeRaw returns true as they are, with the block's uncompressed bit
// set, while every other block stays compressed. storeRaw is called once
// per distinct file content, with the file's path (the first of its names
// when hard links share it) and its first bytes: the first block, or the
// whole file when it is smaller. A file's tail, packed into a fragment
// block with other files' tails, stays compressed, and so does the
// metadata. A file stored raw is never shared with an identical file
// stored compressed (and the other way around): each keeps its own blocks.
//
// Raw blocks of a file change only where its bytes change, which is what
// a binary delta between two images needs; they cost the space
// compression would have saved.
func WithUncompressed(storeRaw func(path string, head []byte) bool) Option {
	return func(cfg *config) { cfg.storeRaw = storeRaw }
}

func newConfig(opts []Option) (*config, error) {
	cfg := &config{comp: Zstd, blockSize: DefaultBlockBytes, workers: runtime.GOMAXPROCS(0)}
	for _, o := range opts {
		o(cfg)
	}
	switch cfg.comp {
	case Zstd, Gzip, None:
	default:
		return nil, fmt.Errorf("squashfs: unknown compression %d", cfg.comp)
	}
	if !cfg.levelSet {
		cfg.level = cfg.comp.defaultLevel()
	}
	if err := cfg.comp.checkLevel(cfg.level); err != nil {
		return nil, err
	}
	if cfg.blockSize < format.MinBlockBytes || cfg.blockSize > format.MaxBlockBytes || bits.OnesCount(uint(cfg.blockSize)) != 1 {
		return nil, fmt.Errorf("squashfs: block size %d is not a power of two from %d to %d", cfg.blockSize, format.MinBlockBytes, format.MaxBlockBytes)
	}
	if cfg.workers < 1 {
		return nil, fmt.Errorf("squashfs: %d workers, want at least 1", cfg.workers)
	}
	return cfg, nil
}

// Write writes t as a squashfs image to w, starting at w's current offset,
// and leaves w at the end of the image, which is padded to a multiple of
// 4 KiB. The superblock's creation time is the root directory's mtime.
// Symlinks get mode 0777, the only mode Linux gives them. Files are read
// once each through their Content; a file whose size and first block
// match an earlier file's is compared with it and, when equal, shares its
// data.
//
// Input the format cannot hold (a hard link to a missing path or to a
// directory, a file whose content is shorter or longer than its size, an
// xattr outside user., trusted. and security., an mtime outside
// 1970..2106, ...) is an error naming the path. On any error, what was
// written to w is not an image and must be discarded.
func Write(ctx context.Context, w io.WriteSeeker, t *rootfs.Tree, opts ...Option) error {
	cfg, err := newConfig(opts)
	if err != nil {
		return err
	}
	newComp := func() (compressor, error) { return newCompressor(cfg.comp, cfg.level) }
	metaComp, err := newComp()
	if err != nil {
		return err
	}
	out, err := newOutput(w)
	if err != nil {
		return err
	}
	sb := format.Superblock{
		BlockSize:  uint32(cfg.blockSize),
		BlockLog:   uint16(bits.TrailingZeros(uint(cfg.blockSize))),
		Compressor: cfg.comp.id(),
		Flags:      format.FlagDuplicates | format.FlagAlwaysFragments | format.FlagExportable,
	}
	if cfg.comp == None {
		sb.Flags |= format.FlagUncompressedInodes | format.FlagUncompressedData | format.FlagUncompressedFragments |
			format.FlagUncompressedXattrs | format.FlagUncompressedIDs
	}
	// The superblock is written last, once every table is placed; the
	// compressor options follow it.
	out.zeros(format.SuperblockBytes)
	if o := cfg.comp.options(cfg.level); o != nil {
		sb.Flags |= format.FlagCompressorOptions
		out.write(binary.LittleEndian.AppendUint16(nil, uint16(len(o))|metadataUncompressedBit))
		out.write(o)
	}

	p, fragments, err := writeData(ctx, out, t, cfg, newComp, metaComp)
	if err != nil {
		return err
	}
	sb.Inodes = uint32(len(p.order))
	sb.MkfsTime = uint32(p.root.entry.ModTime)
	sb.IDs = uint16(len(p.ids))
	sb.Fragments = uint32(len(fragments))
	if err := writeTables(out, metaComp, p, fragments, &sb); err != nil {
		return err
	}
	sb.BytesUsed = uint64(out.pos())
	out.zeros(int64(sb.PaddedBytes()) - out.pos())
	out.writeAt(0, sb.Encode())
	out.flush()
	return out.err
}

// planQueueFiles is how far planning may run ahead of the data writer.
const planQueueFiles = 1024

// writeData plans the tree and writes the file data. Planning walks the
// tree in a goroutine and hands files to the data writer as it finds them.
func writeData(ctx context.Context, out *output, t *rootfs.Tree, cfg *config, newComp func() (compressor, error), metaComp compressor) (*plan, []fragmentEntry, error) {
	files := make(chan *fileData, planQueueFiles)
	stop := make(chan struct{})
	type planResult struct {
		p   *plan
		err error
	}
	planned := make(chan planResult, 1)
	go func() {
		p, err := makePlan(t, metaComp, files, stop)
		close(files)
		planned <- planResult{p, err}
	}()
	dw := newDataWriter(out, cfg.blockSize, cfg.workers, newComp)
	dw.storeRaw = cfg.storeRaw
	fragments, err := dw.run(ctx, files)
	close(stop)
	res := <-planned
	switch {
	case err != nil:
		return nil, nil, err
	case res.err != nil:
		return nil, nil, res.err
	case ctx.Err() != nil:
		return nil, nil, ctx.Err()
	}
	// A duplicate shares the blocks and fragment of the file it repeats.
	for _, f := range res.p.files {
		if d := f.dupOf; d != nil {
			f.start, f.blocks, f.sparseBytes = d.start, d.blocks, d.sparseBytes
			f.fragment, f.fragOffset = d.fragment, d.fragOffset
		}
	}
	return res.p, fragments, nil
}

// writeTables writes everything after the data: inode and directory
// tables, then the lookup tables in the order the kernel's sanity checks
// expect (each table's index ends where the next table begins, the xattr
// index ends the image). It fills in their positions in sb.
func writeTables(out *output, comp compressor, p *plan, fragments []fragmentEntry, sb *format.Superblock) error {
	tw := &tableWriter{
		inodes:       newMetaWriter(comp),
		dirs:         newMetaWriter(comp),
		parentOfRoot: uint32(len(p.order) + 1),
	}
	for _, n := range p.order {
		if err := tw.writeNode(n); err != nil {
			return err
		}
	}
	sb.RootInode = p.root.ref
	inodeTable, dirTable := tw.inodes.finish(), tw.dirs.finish()
	if err := firstErr(tw.inodes.err, tw.dirs.err); err != nil {
		return fmt.Errorf("squashfs: compress metadata: %w", err)
	}
	sb.InodeTableStart = uint64(out.pos())
	out.write(inodeTable)
	sb.DirTableStart = uint64(out.pos())
	out.write(dirTable)

	var entries []byte
	for _, f := range fragments {
		entries = binary.LittleEndian.AppendUint64(entries, f.start)
		entries = binary.LittleEndian.AppendUint32(entries, f.size)
		entries = binary.LittleEndian.AppendUint32(entries, 0)
	}
	var err error
	if sb.FragmentTableStart, err = writeLookupTable(out, comp, entries); err != nil {
		return err
	}
	entries = entries[:0]
	for _, n := range p.order { // in inode number order
		entries = binary.LittleEndian.AppendUint64(entries, n.ref)
	}
	if sb.ExportTableStart, err = writeLookupTable(out, comp, entries); err != nil {
		return err
	}
	entries = entries[:0]
	for _, id := range p.ids {
		entries = binary.LittleEndian.AppendUint32(entries, id)
	}
	if sb.IDTableStart, err = writeLookupTable(out, comp, entries); err != nil {
		return err
	}
	sb.XattrIDTableStart = invalidTable
	if len(p.xattrIDs) == 0 {
		sb.Flags |= format.FlagNoXattrs
		return nil
	}
	sb.XattrIDTableStart, err = writeXattrTables(out, comp, p)
	return err
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// writeLookupTable writes a lookup table at the current position and
// returns the position of its index. An empty table writes nothing.
func writeLookupTable(out *output, comp compressor, entries []byte) (uint64, error) {
	at := uint64(out.pos())
	if len(entries) == 0 {
		return at, nil
	}
	table, indexAt, err := lookupTable(comp, entries, at)
	if err != nil {
		return 0, fmt.Errorf("squashfs: compress lookup table: %w", err)
	}
	out.write(table)
	return indexAt, nil
}

// writeXattrTables writes the key/value stream, the xattr id entries and
// the xattr id table header with its index, and returns the header's
// position. The index must end the image: the kernel checks that.
func writeXattrTables(out *output, comp compressor, p *plan) (uint64, error) {
	kv := p.xattrKV.finish()
	if p.xattrKV.err != nil {
		return 0, fmt.Errorf("squashfs: compress xattrs: %w", p.xattrKV.err)
	}
	kvStart := uint64(out.pos())
	out.write(kv)
	idsAt := uint64(out.pos())
	m := newMetaWriter(comp)
	m.write(p.xattrIDs)
	out.write(m.finish())
	if m.err != nil {
		return 0, fmt.Errorf("squashfs: compress xattr ids: %w", m.err)
	}
	count := len(p.xattrIDs) / xattrIDEntryBytes
	if count > math.MaxUint32 {
		return 0, fmt.Errorf("squashfs: %d xattr sets exceed the format's limit", count)
	}
	headerAt := uint64(out.pos())
	b := binary.LittleEndian.AppendUint64(nil, kvStart)
	b = binary.LittleEndian.AppendUint32(b, uint32(count))
	b = binary.LittleEndian.AppendUint32(b, 0)
	for _, s := range m.starts {
		b = binary.LittleEndian.AppendUint64(b, idsAt+uint64(s))
	}
	out.write(b)
	return headerAt, nil
}
