package syslog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

var errBadFrame = errors.New("not an octet-counted frame")

// Pos is a place in the spool: a segment and a byte offset in it.
type Pos struct {
	Seg uint64
	Off int64
}

func (p Pos) less(q Pos) bool { return p.Seg < q.Seg || (p.Seg == q.Seg && p.Off < q.Off) }

const (
	segSuffix = ".seg"
	stateName = "state"
	// segmentsPerSpool: a segment is at most this part of the bound, so
	// dropping the oldest loses a small share of the spool.
	segmentsPerSpool = 16
)

// Spool is a bounded queue of octet-counted frames in segment files of one
// directory, kept across reboots. One writer appends (Append, Sync); one
// reader reads (Read) and acknowledges (Ack). It is safe for concurrent
// use.
type Spool struct {
	dir      string
	maxBytes int64
	segBytes int64

	mu sync.Mutex
	// segs are the segment numbers on disk, oldest first, with sizes.
	segs  []uint64
	sizes map[uint64]int64
	total int64
	cur   *os.File // the newest segment, open for appending
	ack   Pos
	// dropped counts lines removed unsent since the reader last took the
	// count (Read reports it once, before the lines after the gap).
	dropped uint64
	// droppedTotal counts every line ever dropped.
	droppedTotal uint64
	stateDirty   bool
}

// OpenSpool opens (creating) the spool in dir with a bound of maxBytes on
// its segment files. Appends always go to a new segment: the last one of an
// earlier boot may end in a torn frame, which Read skips.
func OpenSpool(dir string, maxBytes int64) (*Spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("syslog: spool: %w", err)
	}
	s := &Spool{dir: dir, maxBytes: maxBytes, segBytes: max(maxBytes/segmentsPerSpool, 4<<10), sizes: map[uint64]int64{}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("syslog: spool: %w", err)
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), segSuffix)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		n, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return nil, fmt.Errorf("syslog: spool: %w", err)
		}
		s.segs = append(s.segs, n)
		s.sizes[n] = info.Size()
		s.total += info.Size()
	}
	slices.Sort(s.segs)
	s.readState()
	if len(s.segs) > 0 && s.ack.less(Pos{Seg: s.segs[0]}) {
		s.ack = Pos{Seg: s.segs[0]}
	}
	next := uint64(1)
	if len(s.segs) > 0 {
		next = s.segs[len(s.segs)-1] + 1
	}
	if err := s.newSegmentLocked(next); err != nil {
		return nil, err
	}
	if len(s.segs) == 1 {
		s.ack = Pos{Seg: next}
	}
	return s, nil
}

func (s *Spool) segPath(n uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%016d%s", n, segSuffix))
}

// readState reads "SEG OFF DROPPED": where the reader stands and the
// lines dropped it has not reported. A missing or unreadable state starts
// at the oldest segment.
func (s *Spool) readState() {
	b, err := os.ReadFile(filepath.Join(s.dir, stateName))
	if err != nil {
		return
	}
	f := strings.Fields(string(b))
	if len(f) != 3 {
		return
	}
	seg, err1 := strconv.ParseUint(f[0], 10, 64)
	off, err2 := strconv.ParseInt(f[1], 10, 64)
	dropped, err3 := strconv.ParseUint(f[2], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || off < 0 {
		return
	}
	s.ack, s.dropped = Pos{Seg: seg, Off: off}, dropped
}

// SaveState writes the reader's position for the next boot (temporary
// file and rename), when it changed.
func (s *Spool) SaveState() error {
	s.mu.Lock()
	if !s.stateDirty {
		s.mu.Unlock()
		return nil
	}
	b := fmt.Appendf(nil, "%d %d %d\n", s.ack.Seg, s.ack.Off, s.dropped)
	s.stateDirty = false
	s.mu.Unlock()
	tmp := filepath.Join(s.dir, stateName+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("syslog: spool state: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, stateName)); err != nil {
		return fmt.Errorf("syslog: spool state: %w", err)
	}
	return nil
}

func (s *Spool) newSegmentLocked(n uint64) error {
	f, err := os.OpenFile(s.segPath(n), os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("syslog: spool: %w", err)
	}
	if s.cur != nil {
		// Appends are synced per batch; the segment left behind is
		// complete, so a failed sync here shows at the next Sync too.
		_ = s.cur.Sync()
		s.cur.Close()
	}
	s.cur = f
	if _, ok := s.sizes[n]; !ok {
		s.segs = append(s.segs, n)
		s.sizes[n] = 0
	}
	return nil
}

func (s *Spool) curSeg() uint64 { return s.segs[len(s.segs)-1] }

// Append writes frames (whole octet-counted frames, lines in order, count
// of them) at the end of the spool. To stay within the bound it first
// removes the oldest segments, counting their unsent lines as dropped.
func (s *Spool) Append(frames []byte, lines int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return errors.New("syslog: spool closed")
	}
	n := int64(len(frames))
	if s.sizes[s.curSeg()] > 0 && s.sizes[s.curSeg()]+n > s.segBytes {
		if err := s.newSegmentLocked(s.curSeg() + 1); err != nil {
			return err
		}
	}
	for s.total+n > s.maxBytes && len(s.segs) > 1 {
		if err := s.dropOldestLocked(); err != nil {
			return err
		}
	}
	if s.total+n > s.maxBytes {
		// Only the new segment is left and the batch alone is too big:
		// the caller's batches are smaller than a segment, so this is a
		// bound far below the line size.
		return fmt.Errorf("syslog: spool: %d bytes do not fit in %d", n, s.maxBytes)
	}
	w, err := s.cur.Write(frames)
	s.sizes[s.curSeg()] += int64(w)
	s.total += int64(w)
	if err != nil {
		return fmt.Errorf("syslog: spool: %w", err)
	}
	return nil
}

// dropOldestLocked removes the oldest segment; its lines past the
// reader's position are counted as dropped.
func (s *Spool) dropOldestLocked() error {
	seg := s.segs[0]
	if s.ack.Seg <= seg {
		from := int64(0)
		if s.ack.Seg == seg {
			from = s.ack.Off
		}
		lines, err := countFrames(s.segPath(seg), from)
		if err != nil {
			return err
		}
		s.dropped += lines
		s.droppedTotal += lines
		s.ack = Pos{Seg: seg + 1}
		s.stateDirty = true
	}
	return s.removeOldestLocked()
}

func (s *Spool) removeOldestLocked() error {
	seg := s.segs[0]
	if err := os.Remove(s.segPath(seg)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("syslog: spool: %w", err)
	}
	s.total -= s.sizes[seg]
	delete(s.sizes, seg)
	s.segs = s.segs[1:]
	return nil
}

// countFrames counts the whole frames in a segment from an offset.
func countFrames(path string, from int64) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("syslog: spool: %w", err)
	}
	if from > int64(len(b)) {
		return 0, nil
	}
	b = b[from:]
	var n uint64
	for len(b) > 0 {
		_, size, err := ParseFrame(b)
		if err != nil || size == 0 {
			break
		}
		n++
		b = b[size:]
	}
	return n, nil
}

// Sync flushes what Append wrote to the disk.
func (s *Spool) Sync() error {
	s.mu.Lock()
	f := s.cur
	s.mu.Unlock()
	if f == nil {
		return nil
	}
	if err := f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("syslog: spool: %w", err)
	}
	return nil
}

// Batch is what Read returns: whole frames, where they end, and how many
// lines were dropped just before them (to be reported first).
type Batch struct {
	Frames  []byte
	Lines   int
	Next    Pos
	Dropped uint64
}

// Acked returns the reader's acknowledged position.
func (s *Spool) Acked() Pos {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ack
}

// Read returns up to about maxBytes of whole frames from pos on. A
// position the spool no longer holds (dropped) reads from the oldest
// segment. At the end of a segment that is not the newest, it goes on in
// the next one; a torn frame at the end of an old segment is skipped.
func (s *Spool) Read(pos Pos, maxBytes int) (Batch, error) {
	s.mu.Lock()
	if pos.less(s.ack) {
		pos = s.ack
	}
	b := Batch{Dropped: s.dropped, Next: pos}
	s.dropped = 0
	if b.Dropped > 0 {
		s.stateDirty = true
	}
	segs := slices.Clone(s.segs)
	sizes := make(map[uint64]int64, len(segs))
	for _, n := range segs {
		sizes[n] = s.sizes[n]
	}
	s.mu.Unlock()
	if len(segs) > 0 && pos.Seg < segs[0] {
		pos = Pos{Seg: segs[0]}
		b.Next = pos
	}
	for i, seg := range segs {
		if seg < pos.Seg {
			continue
		}
		if seg > pos.Seg {
			pos = Pos{Seg: seg}
		}
		last := i == len(segs)-1
		size := sizes[seg]
		if pos.Off >= size {
			if last {
				break
			}
			b.Next = Pos{Seg: segs[i+1]}
			continue
		}
		buf, err := readAt(s.segPath(seg), pos.Off, min(int64(maxBytes-len(b.Frames)), size-pos.Off))
		if errors.Is(err, os.ErrNotExist) {
			continue // dropped meanwhile
		}
		if err != nil {
			return b, err
		}
		var used int
		for used < len(buf) {
			_, n, err := ParseFrame(buf[used:])
			if err != nil || n == 0 {
				break
			}
			used += n
			b.Lines++
		}
		if used == 0 && len(buf) > 0 && !last && int64(len(buf)) == size-pos.Off {
			// A torn frame ends an old segment.
			b.Next = Pos{Seg: segs[i+1]}
			pos = b.Next
			continue
		}
		b.Frames = append(b.Frames, buf[:used]...)
		b.Next = Pos{Seg: seg, Off: pos.Off + int64(used)}
		if len(b.Frames) >= maxBytes || pos.Off+int64(used) < size {
			break
		}
		if !last {
			b.Next = Pos{Seg: segs[i+1]}
			pos = b.Next
		}
	}
	return b, nil
}

func readAt(path string, off, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, n)
	m, err := f.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("syslog: spool: %w", err)
	}
	return buf[:m], nil
}

// Ack records that the receiver has everything before pos, and removes
// the segments that are wholly before it. An older pos than the current
// one is ignored (the writer may have dropped past it).
func (s *Spool) Ack(pos Pos) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ack.less(pos) {
		return nil
	}
	s.ack = pos
	s.stateDirty = true
	for len(s.segs) > 1 && s.segs[0] < pos.Seg {
		if err := s.removeOldestLocked(); err != nil {
			return err
		}
	}
	return nil
}

// Stats reports the bytes held and the lines dropped since the spool was
// opened.
func (s *Spool) Stats() (bytes int64, dropped uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total, s.droppedTotal
}

// Close syncs and closes the newest segment and saves the state.
func (s *Spool) Close() error {
	s.mu.Lock()
	f := s.cur
	s.cur = nil
	s.mu.Unlock()
	var errs []error
	if f != nil {
		errs = append(errs, f.Sync(), f.Close())
	}
	errs = append(errs, s.SaveState())
	return errors.Join(errs...)
}
