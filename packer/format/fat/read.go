package fat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf16"
)

// maxDirBytes bounds a directory's cluster chain: the spec's 65536 entries.
const maxDirBytes = MaxDirEntries * DirEntryBytes

// fatCacheBytes is how much of the FAT the reader caches: chains are mostly
// contiguous, so one block serves long runs of lookups.
const fatCacheBytes = 4096

// FS is a FAT32 filesystem read through an io.ReaderAt. It implements
// fs.FS, fs.ReadFileFS, fs.ReadDirFS and fs.StatFS and is safe for
// concurrent use. Name lookup ignores case, as FAT does, and also accepts
// 8.3 aliases ("SLOT~1.JSO").
type FS struct {
	r        io.ReaderAt
	g        Geometry
	label    string
	volumeID uint32

	mu         sync.Mutex
	cacheStart int64 // byte offset of cache within the volume, -1 if empty
	cache      []byte
}

// Open reads the boot sector of the FAT32 volume in the first sizeBytes of
// r and checks that its layout is self-consistent and fits sizeBytes.
func Open(r io.ReaderAt, sizeBytes int64) (*FS, error) {
	b := make([]byte, minSectorBytes)
	if _, err := r.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("fat: reading boot sector: %w", err)
	}
	g, err := parseBootSector(b, sizeBytes)
	if err != nil {
		return nil, fmt.Errorf("fat: boot sector: %w", err)
	}
	fsys := &FS{r: r, g: g, cacheStart: -1, volumeID: binary.LittleEndian.Uint32(b[67:])}
	if b[66] == extBootSig {
		fsys.label = strings.TrimRight(string(b[71:82]), " ")
	}
	// The root directory's label entry wins over the boot sector's, as in
	// every other implementation.
	if _, label, err := fsys.readDir(g.RootCluster, "/"); err != nil {
		return nil, err
	} else if label != "" {
		fsys.label = label
	}
	if fsys.label == strings.TrimRight(noLabel, " ") {
		fsys.label = ""
	}
	return fsys, nil
}

// Label returns the volume label ("" if none).
func (fsys *FS) Label() string { return fsys.label }

// VolumeID returns the volume serial number.
func (fsys *FS) VolumeID() uint32 { return fsys.volumeID }

func parseBootSector(b []byte, sizeBytes int64) (Geometry, error) {
	le := binary.LittleEndian
	if b[bootSigOffset] != 0x55 || b[bootSigOffset+1] != 0xAA {
		return Geometry{}, errors.New("no 0x55AA signature")
	}
	g := Geometry{
		BytesPerSector:    uint32(le.Uint16(b[11:])),
		SectorsPerCluster: uint32(b[13]),
		ReservedSectors:   uint32(le.Uint16(b[14:])),
		NumFATs:           uint32(b[16]),
		TotalSectors:      uint32(le.Uint16(b[19:])),
		FATSectors:        le.Uint32(b[36:]),
		RootCluster:       le.Uint32(b[44:]),
		FSInfoSector:      uint32(le.Uint16(b[48:])),
	}
	if g.TotalSectors == 0 {
		g.TotalSectors = le.Uint32(b[32:])
	}
	bps, spc := g.BytesPerSector, g.SectorsPerCluster
	switch {
	case bps < minSectorBytes || bps > maxSectorBytes || bps&(bps-1) != 0:
		return Geometry{}, fmt.Errorf("bytes per sector %d, want a power of two from %d to %d", bps, minSectorBytes, maxSectorBytes)
	case spc == 0 || spc > maxSecPerClus || spc&(spc-1) != 0:
		return Geometry{}, fmt.Errorf("sectors per cluster %d, want a power of two up to %d", spc, maxSecPerClus)
	case bps*spc > 2*maxClusterBytes:
		return Geometry{}, fmt.Errorf("cluster of %d bytes, at most %d", bps*spc, 2*maxClusterBytes)
	case g.ReservedSectors == 0:
		return Geometry{}, errors.New("no reserved sectors")
	case g.NumFATs == 0 || g.NumFATs > 4:
		return Geometry{}, fmt.Errorf("%d FATs, want 1 to 4", g.NumFATs)
	case le.Uint16(b[17:]) != 0 || le.Uint16(b[22:]) != 0 || g.FATSectors == 0:
		return Geometry{}, errors.New("not FAT32 (root entry count or 16-bit FAT size set)")
	case le.Uint16(b[42:]) != 0:
		return Geometry{}, fmt.Errorf("FAT32 version %#04x, only 0.0 exists", le.Uint16(b[42:]))
	case uint64(g.TotalSectors)*uint64(bps) > uint64(max(sizeBytes, 0)):
		return Geometry{}, fmt.Errorf("%d sectors of %d bytes, more than the %d bytes given", g.TotalSectors, bps, sizeBytes)
	}
	meta := uint64(g.ReservedSectors) + uint64(g.NumFATs)*uint64(g.FATSectors)
	if meta >= uint64(g.TotalSectors) {
		return Geometry{}, fmt.Errorf("reserved sectors and FATs (%d sectors) fill the volume (%d sectors)", meta, g.TotalSectors)
	}
	count := (uint64(g.TotalSectors) - meta) / uint64(spc)
	switch {
	case count == 0:
		return Geometry{}, errors.New("no data clusters")
	case count > maxClusters:
		return Geometry{}, fmt.Errorf("%d clusters, FAT32 allows at most %d", count, maxClusters)
	case uint64(g.FATSectors)*uint64(bps)/4 < count+2:
		return Geometry{}, fmt.Errorf("FAT of %d sectors cannot map %d clusters", g.FATSectors, count)
	}
	g.ClusterCount = uint32(count)
	g.Mirrored = true
	if ext := le.Uint16(b[40:]); ext&0x80 != 0 {
		g.Mirrored = false
		// Mirroring off: only the active FAT is current.
		g.ActiveFAT = uint32(ext & 0x0f)
		if g.ActiveFAT >= g.NumFATs {
			return Geometry{}, fmt.Errorf("active FAT %d of %d", g.ActiveFAT, g.NumFATs)
		}
	}
	if !g.validCluster(g.RootCluster) {
		return Geometry{}, fmt.Errorf("root cluster %d outside 2..%d", g.RootCluster, g.ClusterCount+1)
	}
	if g.FSInfoSector == 0 || g.FSInfoSector >= g.ReservedSectors {
		g.FSInfoSector = 0 // absent or bogus: ignore it
	}
	return g, nil
}

// fatEntry returns the FAT entry of cluster c (which must be valid).
func (fsys *FS) fatEntry(c uint32) (uint32, error) {
	off := fsys.g.FATOffset(fsys.g.ActiveFAT) + int64(c)*4
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	if fsys.cacheStart < 0 || off < fsys.cacheStart || off+4 > fsys.cacheStart+int64(len(fsys.cache)) {
		start := off - off%fatCacheBytes
		end := min(start+fatCacheBytes, fsys.g.FATOffset(fsys.g.ActiveFAT+1))
		start = max(start, fsys.g.FATOffset(fsys.g.ActiveFAT))
		buf := make([]byte, end-start)
		if _, err := fsys.r.ReadAt(buf, start); err != nil {
			fsys.cacheStart = -1
			return 0, fmt.Errorf("fat: reading FAT at byte %d: %w", start, err)
		}
		fsys.cacheStart, fsys.cache = start, buf
	}
	return binary.LittleEndian.Uint32(fsys.cache[off-fsys.cacheStart:]) & fatEntryMask, nil
}

// run is a stretch of consecutive clusters.
type run struct {
	first, count uint32
}

// chain follows the cluster chain from first. With exact (a file of known
// size) it needs limit clusters and reads no further, the way Linux reads
// a file: a FAT entry past the file's end that is not end-of-chain (a
// crash between a rename and freeing, say) does not make the file
// unreadable. Otherwise it may hold at most limit clusters, which is what
// stops a looping chain.
func (fsys *FS) chain(first uint32, limit uint32, exact bool) ([]run, error) {
	if !fsys.g.validCluster(first) {
		return nil, fmt.Errorf("first cluster %d outside 2..%d", first, fsys.g.ClusterCount+1)
	}
	var runs []run
	seen := make([]uint64, (fsys.g.ClusterCount+2+63)/64)
	c := first
	for n := uint32(1); ; n++ {
		if seen[c/64]&(1<<(c%64)) != 0 {
			return nil, fmt.Errorf("cluster chain from %d loops back to cluster %d", first, c)
		}
		seen[c/64] |= 1 << (c % 64)
		if k := len(runs) - 1; k >= 0 && runs[k].first+runs[k].count == c {
			runs[k].count++
		} else {
			runs = append(runs, run{c, 1})
		}
		if exact && n == limit {
			return runs, nil
		}
		next, err := fsys.fatEntry(c)
		if err != nil {
			return nil, err
		}
		if next >= fatEOCMin {
			if exact && n != limit {
				return nil, fmt.Errorf("cluster chain from %d ends after %d clusters, the size needs %d", first, n, limit)
			}
			return runs, nil
		}
		if n == limit {
			return nil, fmt.Errorf("cluster chain from %d is longer than %d clusters (a loop?)", first, limit)
		}
		if !fsys.g.validCluster(next) {
			return nil, fmt.Errorf("cluster chain from %d: cluster %d links to %#x", first, c, next)
		}
		c = next
	}
}

// dirent is a parsed directory entry.
type dirent struct {
	name    string
	short   string
	attr    byte
	first   uint32
	size    uint32
	modTime time.Time
	off     int64 // byte offset of the 8.3 entry in the volume
}

func (d dirent) isDir() bool { return d.attr&AttrDirectory != 0 }

// readDir parses the directory whose chain starts at first. It returns the
// entries (without "." and "..") and the volume label entry, if any.
func (fsys *FS) readDir(first uint32, where string) ([]dirent, string, error) {
	cb := fsys.g.ClusterBytes()
	runs, err := fsys.chain(first, uint32(max(maxDirBytes/cb, 1)), false)
	if err != nil {
		return nil, "", fmt.Errorf("fat: directory %q: %w", where, err)
	}
	var (
		ents  []dirent
		label string
		lfn   longName
	)
	for _, r := range runs {
		buf := make([]byte, int64(r.count)*cb)
		base := fsys.g.ClusterOffset(r.first)
		if _, err := fsys.r.ReadAt(buf, base); err != nil {
			return nil, "", fmt.Errorf("fat: directory %q: reading clusters %d..%d: %w", where, r.first, r.first+r.count-1, err)
		}
		for i := 0; i+DirEntryBytes <= len(buf); i += DirEntryBytes {
			e := buf[i : i+DirEntryBytes]
			switch {
			case e[0] == 0:
				return ents, label, nil // end of directory
			case e[0] == deletedMarker:
				lfn.reset()
				continue
			case e[11]&0x3f == attrLongName:
				lfn.add(e)
				continue
			case e[11]&AttrVolumeID != 0:
				if label == "" && e[11]&AttrDirectory == 0 {
					label = strings.TrimRight(string(e[:11]), " ")
				}
				lfn.reset()
				continue
			case e[0] == '.' && (e[1] == ' ' || e[1] == '.'):
				lfn.reset()
				continue // "." and ".."
			}
			le := binary.LittleEndian
			d := dirent{
				short:   shortDisplay(e[:11], e[12]),
				attr:    e[11],
				first:   uint32(le.Uint16(e[20:]))<<16 | uint32(le.Uint16(e[26:])),
				size:    le.Uint32(e[28:]),
				modTime: parseDateTime(le.Uint16(e[24:]), le.Uint16(e[22:])),
				off:     base + int64(i),
			}
			d.name = lfn.name(e[:11])
			if d.name == "" {
				d.name = d.short
			}
			lfn.reset()
			if d.name == "" || d.name == "." || d.name == ".." || strings.ContainsAny(d.name, "/\x00") {
				return nil, "", fmt.Errorf("fat: directory %q: entry at byte %d: invalid name %q", where, d.off, d.name)
			}
			if d.isDir() || d.size > 0 {
				if !fsys.g.validCluster(d.first) {
					return nil, "", fmt.Errorf("fat: directory %q: entry %q: first cluster %d outside 2..%d", where, d.name, d.first, fsys.g.ClusterCount+1)
				}
			}
			ents = append(ents, d)
		}
	}
	return ents, label, nil
}

// longName collects the long-name entries in front of an 8.3 entry.
type longName struct {
	units []uint16
	next  int // ordinal expected next; 0 when complete
	sum   byte
	ok    bool
}

func (l *longName) reset() { *l = longName{units: l.units[:0]} }

func (l *longName) add(e []byte) {
	ord := int(e[0] & lfnOrdMask)
	if e[0]&lfnLastFlag != 0 {
		if ord == 0 || ord > (maxLongUnits+lfnUnitsPerEnt-1)/lfnUnitsPerEnt {
			l.reset()
			return
		}
		l.units = append(l.units[:0], make([]uint16, ord*lfnUnitsPerEnt)...)
		l.sum, l.ok = e[13], true
	} else if !l.ok || ord != l.next || e[13] != l.sum {
		l.reset()
		return
	}
	for j, off := range lfnUnitOffsets {
		l.units[(ord-1)*lfnUnitsPerEnt+j] = binary.LittleEndian.Uint16(e[off:])
	}
	l.next = ord - 1
}

// name returns the long name if a complete, matching one was collected.
func (l *longName) name(short []byte) string {
	if !l.ok || l.next != 0 || l.sum != shortChecksum(short) {
		return ""
	}
	u := l.units
	for i, c := range u {
		if c == 0 {
			u = u[:i]
			break
		}
	}
	return string(utf16.Decode(u))
}

// lookup resolves a valid fs path to its entry. Directories met on the way
// must not repeat, so a directory entry pointing at an ancestor gives an
// error instead of an endless walk.
func (fsys *FS) lookup(op, name string) (dirent, error) {
	if !fs.ValidPath(name) {
		return dirent{}, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	cur := dirent{name: ".", attr: AttrDirectory, first: fsys.g.RootCluster}
	if name == "." {
		return cur, nil
	}
	seen := map[uint32]bool{cur.first: true}
	parts := strings.Split(name, "/")
	for i, part := range parts {
		if !cur.isDir() {
			return dirent{}, &fs.PathError{Op: op, Path: name, Err: fmt.Errorf("%q is not a directory", path.Join(parts[:i]...))}
		}
		ents, _, err := fsys.readDir(cur.first, path.Join(parts[:i]...))
		if err != nil {
			return dirent{}, &fs.PathError{Op: op, Path: name, Err: err}
		}
		found := false
		for _, e := range ents {
			if strings.EqualFold(e.name, part) || strings.EqualFold(e.short, part) {
				cur, found = e, true
				break
			}
		}
		if !found {
			return dirent{}, &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
		}
		if cur.isDir() {
			if seen[cur.first] {
				return dirent{}, &fs.PathError{Op: op, Path: name, Err: fmt.Errorf("fat: directory loop at %q (cluster %d)", path.Join(parts[:i+1]...), cur.first)}
			}
			seen[cur.first] = true
		}
	}
	return cur, nil
}

// Open opens the named file or directory.
func (fsys *FS) Open(name string) (fs.File, error) {
	d, err := fsys.lookup("open", name)
	if err != nil {
		return nil, err
	}
	if d.isDir() {
		ents, _, err := fsys.readDir(d.first, name)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		return &dir{info: fileInfo{d}, ents: ents}, nil
	}
	runs, err := fsys.fileRuns(d)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return &file{fsys: fsys, info: fileInfo{d}, runs: runs}, nil
}

// fileRuns validates and returns the clusters of a regular file.
func (fsys *FS) fileRuns(d dirent) ([]run, error) {
	if d.size == 0 {
		return nil, nil
	}
	cb := fsys.g.ClusterBytes()
	need := (int64(d.size) + cb - 1) / cb
	if need > int64(fsys.g.ClusterCount) {
		return nil, fmt.Errorf("fat: size %d bytes exceeds the volume", d.size)
	}
	runs, err := fsys.chain(d.first, uint32(need), true)
	if err != nil {
		return nil, fmt.Errorf("fat: %w", err)
	}
	return runs, nil
}

// ReadFile returns the content of the named file.
func (fsys *FS) ReadFile(name string) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rf, ok := f.(*file)
	if !ok {
		return nil, &fs.PathError{Op: "read", Path: name, Err: errors.New("is a directory")}
	}
	b := make([]byte, rf.info.d.size)
	if _, err := rf.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, &fs.PathError{Op: "read", Path: name, Err: err}
	}
	return b, nil
}

// ReadDir returns the named directory's entries sorted by name.
func (fsys *FS) ReadDir(name string) ([]fs.DirEntry, error) {
	d, err := fsys.lookup("readdir", name)
	if err != nil {
		return nil, err
	}
	if !d.isDir() {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: errors.New("not a directory")}
	}
	ents, _, err := fsys.readDir(d.first, name)
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: err}
	}
	out := make([]fs.DirEntry, len(ents))
	for i, e := range ents {
		out[i] = fs.FileInfoToDirEntry(fileInfo{e})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out, nil
}

// Stat returns the named file's metadata.
func (fsys *FS) Stat(name string) (fs.FileInfo, error) {
	d, err := fsys.lookup("stat", name)
	if err != nil {
		return nil, err
	}
	return fileInfo{d}, nil
}

// fileInfo is an fs.FileInfo for a directory entry.
type fileInfo struct{ d dirent }

func (fi fileInfo) Name() string       { return fi.d.name }
func (fi fileInfo) Size() int64        { return int64(fi.d.size) }
func (fi fileInfo) ModTime() time.Time { return fi.d.modTime }
func (fi fileInfo) IsDir() bool        { return fi.d.isDir() }
func (fi fileInfo) Sys() any           { return nil }
func (fi fileInfo) Mode() fs.FileMode {
	m := fs.FileMode(0o644)
	if fi.d.isDir() {
		m = fs.ModeDir | 0o755
	}
	if fi.d.attr&attrReadOnly != 0 {
		m &^= 0o222
	}
	return m
}

// file is an open regular file. It implements io.ReaderAt and io.Seeker.
type file struct {
	fsys *FS
	info fileInfo
	runs []run
	off  int64
}

func (f *file) Stat() (fs.FileInfo, error) { return f.info, nil }
func (f *file) Close() error               { return nil }

func (f *file) Read(p []byte) (int, error) {
	n, err := f.ReadAt(p, f.off)
	f.off += int64(n)
	return n, err
}

func (f *file) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.off
	case io.SeekEnd:
		offset += int64(f.info.d.size)
	default:
		return 0, fmt.Errorf("fat: seek %q: invalid whence %d", f.info.d.name, whence)
	}
	if offset < 0 {
		return 0, fmt.Errorf("fat: seek %q: negative offset %d", f.info.d.name, offset)
	}
	f.off = offset
	return offset, nil
}

func (f *file) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("fat: read %q: negative offset %d", f.info.d.name, off)
	}
	size := int64(f.info.d.size)
	if off >= size {
		return 0, io.EOF
	}
	want := len(p)
	if rest := size - off; int64(len(p)) > rest {
		p = p[:rest]
	}
	cb := f.fsys.g.ClusterBytes()
	n := 0
	var start int64 // file offset where the current run starts
	for _, r := range f.runs {
		runBytes := int64(r.count) * cb
		if n < len(p) && off+int64(n) < start+runBytes {
			in := off + int64(n) - start
			chunk := p[n:min(len(p), n+int(runBytes-in))]
			m, err := f.fsys.r.ReadAt(chunk, f.fsys.g.ClusterOffset(r.first)+in)
			n += m
			if err != nil {
				return n, fmt.Errorf("fat: read %q at byte %d: %w", f.info.d.name, off+int64(n), err)
			}
		}
		start += runBytes
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

// dir is an open directory.
type dir struct {
	info fileInfo
	ents []dirent
	pos  int
}

func (d *dir) Stat() (fs.FileInfo, error) { return d.info, nil }
func (d *dir) Close() error               { return nil }
func (d *dir) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.info.d.name, Err: errors.New("is a directory")}
}

func (d *dir) ReadDir(n int) ([]fs.DirEntry, error) {
	rest := d.ents[d.pos:]
	if n > 0 {
		if len(rest) == 0 {
			return nil, io.EOF
		}
		rest = rest[:min(n, len(rest))]
	}
	d.pos += len(rest)
	out := make([]fs.DirEntry, len(rest))
	for i, e := range rest {
		out[i] = fs.FileInfoToDirEntry(fileInfo{e})
	}
	return out, nil
}
