package fat

import (
	"encoding/binary"
	"fmt"
	"io"
)

// ReadWriterAt is storage that Rewrite updates in place: an *os.File, or a
// Section of one.
type ReadWriterAt interface {
	io.ReaderAt
	io.WriterAt
}

// syncer is implemented by *os.File and Section; Rewrite orders its writes
// with it.
type syncer interface {
	Sync() error
}

// Rewrite replaces the content of the existing regular file name on the
// FAT32 volume in the first sizeBytes of rw with data. It writes data into
// free clusters, links them in every FAT, then points the directory entry
// at them (a single 32-byte write), and only then frees the old clusters,
// calling rw's Sync method (if it has one) between the steps. A crash
// therefore leaves the old or the new content, at worst with clusters that
// fsck reports as lost. The old chain must be intact: Rewrite refuses to
// modify a volume that fails the reader's checks.
//
// Free clusters are taken lowest first. The entry keeps its timestamp
// unless WithTime is given; other options are ignored.
func Rewrite(rw ReadWriterAt, sizeBytes int64, name string, data []byte, opts ...Option) error {
	o, err := NewOptions(opts...)
	if err != nil {
		return err
	}
	fsys, err := Open(rw, sizeBytes)
	if err != nil {
		return err
	}
	d, err := fsys.lookup("rewrite", name)
	if err != nil {
		return err
	}
	if d.isDir() {
		return fmt.Errorf("fat: rewrite %q: is a directory", name)
	}
	if int64(len(data)) > MaxFileBytes {
		return fmt.Errorf("fat: rewrite %q: %d bytes, FAT files hold at most %d", name, len(data), int64(MaxFileBytes))
	}
	oldRuns, err := fsys.fileRuns(d)
	if err != nil {
		return fmt.Errorf("fat: rewrite %q: old content: %w", name, err)
	}
	g := fsys.g
	cb := g.ClusterBytes()
	need := uint32((int64(len(data)) + cb - 1) / cb)
	fresh, err := fsys.freeClusters(need)
	if err != nil {
		return fmt.Errorf("fat: rewrite %q: %w", name, err)
	}
	sync := func(step string) error {
		if s, ok := rw.(syncer); ok {
			if err := s.Sync(); err != nil {
				return fmt.Errorf("fat: rewrite %q: sync after %s: %w", name, step, err)
			}
		}
		return nil
	}

	// 1. Content into the fresh clusters, zero-padded to whole clusters.
	padded := make([]byte, int64(need)*cb)
	copy(padded, data)
	for i, c := range fresh {
		chunk := padded[int64(i)*cb:][:cb]
		if _, err := rw.WriteAt(chunk, g.ClusterOffset(c)); err != nil {
			return fmt.Errorf("fat: rewrite %q: writing cluster %d: %w", name, c, err)
		}
	}
	// 2. Link them. Until the entry points here they are merely lost.
	links := make([]uint32, len(fresh))
	for i := range fresh {
		links[i] = EOC
		if i+1 < len(fresh) {
			links[i] = fresh[i+1]
		}
	}
	if err := fsys.setFAT(rw, fresh, links); err != nil {
		return fmt.Errorf("fat: rewrite %q: %w", name, err)
	}
	if err := sync("writing the new content"); err != nil {
		return err
	}
	// 3. Switch the directory entry: one sector-internal write.
	ent := make([]byte, DirEntryBytes)
	if _, err := rw.ReadAt(ent, d.off); err != nil {
		return fmt.Errorf("fat: rewrite %q: reading directory entry at byte %d: %w", name, d.off, err)
	}
	first := uint32(0)
	if len(fresh) > 0 {
		first = fresh[0]
	}
	le := binary.LittleEndian
	le.PutUint16(ent[20:], uint16(first>>16))
	le.PutUint16(ent[26:], uint16(first))
	le.PutUint32(ent[28:], uint32(len(data)))
	if o.timeSet {
		date, tm, _ := DateTime(o.ModTime)
		le.PutUint16(ent[18:], date)
		le.PutUint16(ent[22:], tm)
		le.PutUint16(ent[24:], date)
	}
	if _, err := rw.WriteAt(ent, d.off); err != nil {
		return fmt.Errorf("fat: rewrite %q: writing directory entry at byte %d: %w", name, d.off, err)
	}
	if err := sync("switching the directory entry"); err != nil {
		return err
	}
	// 4. Free the old chain.
	var old []uint32
	for _, r := range oldRuns {
		for c := r.first; c < r.first+r.count; c++ {
			old = append(old, c)
		}
	}
	if err := fsys.setFAT(rw, old, make([]uint32, len(old))); err != nil {
		return fmt.Errorf("fat: rewrite %q: freeing old clusters: %w", name, err)
	}
	if err := fsys.adjustFree(rw, int64(len(old))-int64(len(fresh))); err != nil {
		return fmt.Errorf("fat: rewrite %q: %w", name, err)
	}
	return sync("freeing the old content")
}

// freeClusters returns the n lowest-numbered free clusters.
func (fsys *FS) freeClusters(n uint32) ([]uint32, error) {
	out := make([]uint32, 0, n)
	for c := uint32(2); uint32(len(out)) < n && fsys.g.validCluster(c); c++ {
		v, err := fsys.fatEntry(c)
		if err != nil {
			return nil, err
		}
		if v == fatFree {
			out = append(out, c)
		}
	}
	if uint32(len(out)) < n {
		return nil, fmt.Errorf("need %d free clusters, the volume has %d", n, len(out))
	}
	return out, nil
}

// setFAT sets the entries of clusters to values in every current FAT,
// preserving each entry's reserved top four bits as the spec asks.
// Consecutive clusters go out in one write.
func (fsys *FS) setFAT(w io.WriterAt, clusters, values []uint32) error {
	g := fsys.g
	fats := []uint32{g.ActiveFAT}
	if g.Mirrored {
		fats = fats[:0]
		for i := uint32(0); i < g.NumFATs; i++ {
			fats = append(fats, i)
		}
	}
	fsys.mu.Lock()
	fsys.cacheStart = -1
	fsys.mu.Unlock()
	for i := 0; i < len(clusters); {
		j := i + 1
		for j < len(clusters) && clusters[j] == clusters[j-1]+1 {
			j++
		}
		buf := make([]byte, 4*(j-i))
		at := g.FATOffset(g.ActiveFAT) + int64(clusters[i])*4
		if _, err := fsys.r.ReadAt(buf, at); err != nil {
			return fmt.Errorf("reading FAT at byte %d: %w", at, err)
		}
		for k := i; k < j; k++ {
			e := buf[4*(k-i):]
			binary.LittleEndian.PutUint32(e, binary.LittleEndian.Uint32(e)&^fatEntryMask|values[k]&fatEntryMask)
		}
		for _, f := range fats {
			off := g.FATOffset(f) + int64(clusters[i])*4
			if _, err := w.WriteAt(buf, off); err != nil {
				return fmt.Errorf("writing FAT %d at byte %d: %w", f+1, off, err)
			}
		}
		i = j
	}
	return nil
}

// adjustFree updates the FSInfo free-cluster count by delta, if the volume
// has an FSInfo sector with a known count.
func (fsys *FS) adjustFree(w io.WriterAt, delta int64) error {
	g := fsys.g
	if g.FSInfoSector == 0 || delta == 0 {
		return nil
	}
	at := int64(g.FSInfoSector) * int64(g.BytesPerSector)
	b := make([]byte, sectorBytes)
	if _, err := fsys.r.ReadAt(b, at); err != nil {
		return fmt.Errorf("reading FSInfo at byte %d: %w", at, err)
	}
	le := binary.LittleEndian
	if le.Uint32(b[0:]) != fsInfoLeadSig || le.Uint32(b[484:]) != fsInfoStrucSig || le.Uint32(b[508:]) != fsInfoTrailSig {
		return nil // not a valid FSInfo: nothing to keep current
	}
	free := le.Uint32(b[fsInfoFreeOff:])
	if free == fsInfoUnknown {
		return nil
	}
	n := int64(free) + delta
	if free > g.ClusterCount || n < 0 || n > int64(g.ClusterCount) {
		n = fsInfoUnknown // it was wrong before; let drivers recount
	}
	le.PutUint32(b[fsInfoFreeOff:], uint32(n))
	if _, err := w.WriteAt(b[fsInfoFreeOff:fsInfoFreeOff+4], at+fsInfoFreeOff); err != nil {
		return fmt.Errorf("writing FSInfo at byte %d: %w", at, err)
	}
	return nil
}

// Section is a ReadWriterAt over the n bytes at offset off of rw, such as a
// partition of a disk image. Its Sync calls rw's, if rw has one.
type Section struct {
	rw     ReadWriterAt
	off, n int64
}

// NewSection returns a Section of rw.
func NewSection(rw ReadWriterAt, off, n int64) *Section {
	return &Section{rw: rw, off: off, n: n}
}

// Size returns the section's length.
func (s *Section) Size() int64 { return s.n }

// ReadAt reads within the section.
func (s *Section) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= s.n {
		return 0, io.EOF
	}
	short := false
	if rest := s.n - off; int64(len(p)) > rest {
		p, short = p[:rest], true
	}
	n, err := s.rw.ReadAt(p, s.off+off)
	if err == nil && short {
		err = io.EOF
	}
	return n, err
}

// WriteAt writes within the section; writing past its end is an error.
func (s *Section) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > s.n {
		return 0, fmt.Errorf("fat: section write of %d bytes at %d outside its %d bytes", len(p), off, s.n)
	}
	return s.rw.WriteAt(p, s.off+off)
}

// Sync flushes rw if it can be flushed.
func (s *Section) Sync() error {
	if sy, ok := s.rw.(syncer); ok {
		return sy.Sync()
	}
	return nil
}
