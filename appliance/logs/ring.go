// Package logs keeps what services and ingot-init print: a bounded
// in-memory ring of timestamped lines per source that readers can tail and
// follow, a file with size-based rotation so logs survive a reboot, and an
// asynchronous console writer that a slow serial port cannot stall. A Sink
// ties the three together for one source.
package logs

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Stream says where a line came from.
type Stream uint8

// Streams.
const (
	Stdout Stream = iota + 1
	Stderr
	// System lines are written by ingot-init about the source (started,
	// exited, restarting) or are init's own log.
	System
)

// String returns "stdout", "stderr" or "system".
func (s Stream) String() string {
	switch s {
	case Stdout:
		return "stdout"
	case Stderr:
		return "stderr"
	case System:
		return "system"
	}
	return fmt.Sprintf("stream(%d)", uint8(s))
}

// Line is one line of output, without its newline.
type Line struct {
	// Seq numbers the lines of a ring from 1; Follow's notes about dropped
	// lines have Seq 0.
	Seq    uint64
	Time   time.Time
	Stream Stream
	Text   string
}

// lineOverheadBytes is charged per line on top of its text, so that a
// flood of empty lines is bounded too. It approximates the Line header.
const lineOverheadBytes = 64

// compactMinLines is how many evicted slots may pile up at the front of the
// slice before they are reclaimed.
const compactMinLines = 1024

// Ring holds the most recent lines of one source within a byte budget.
// It is safe for concurrent use.
type Ring struct {
	mu       sync.Mutex
	maxBytes int
	lines    []Line // lines[head:] are live, oldest first
	head     int
	bytes    int
	nextSeq  uint64
	// changed is closed and replaced on every append, waking followers.
	changed chan struct{}
	// now and after are the clock of Follow's wake-up spacing
	// (time.Now and time.After; tests replace them).
	now   func() time.Time
	after func(time.Duration) <-chan time.Time
}

// NewRing returns a ring that keeps at most maxBytes (text plus a fixed
// per-line overhead); it keeps at least the newest line, truncated to fit.
func NewRing(maxBytes int) *Ring {
	if maxBytes < lineOverheadBytes+1 {
		maxBytes = lineOverheadBytes + 1
	}
	return &Ring{maxBytes: maxBytes, nextSeq: 1, changed: make(chan struct{}), now: time.Now, after: time.After}
}

// Append adds a line and returns it as stored (with Seq set, and Text
// truncated if it alone exceeded the ring).
func (r *Ring) Append(t time.Time, stream Stream, text string) Line {
	if max := r.maxBytes - lineOverheadBytes; len(text) > max {
		text = text[:max]
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	l := Line{Seq: r.nextSeq, Time: t, Stream: stream, Text: text}
	r.nextSeq++
	size := len(text) + lineOverheadBytes
	for r.bytes+size > r.maxBytes && r.head < len(r.lines) {
		r.bytes -= len(r.lines[r.head].Text) + lineOverheadBytes
		r.lines[r.head] = Line{} // drop the string for the collector
		r.head++
	}
	if r.head >= compactMinLines && r.head*2 >= len(r.lines) {
		n := copy(r.lines, r.lines[r.head:])
		clear(r.lines[n:])
		r.lines = r.lines[:n]
		r.head = 0
	}
	r.lines = append(r.lines, l)
	r.bytes += size
	close(r.changed)
	r.changed = make(chan struct{})
	return l
}

// Len returns the number of lines held.
func (r *Ring) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.lines) - r.head
}

// Bytes returns the budget in use.
func (r *Ring) Bytes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bytes
}

// Tail returns copies of the last n lines, oldest first; n <= 0 means all.
func (r *Ring) Tail(n int) []Line {
	r.mu.Lock()
	defer r.mu.Unlock()
	live := r.lines[r.head:]
	if n > 0 && n < len(live) {
		live = live[len(live)-n:]
	}
	return append([]Line(nil), live...)
}

// Since returns up to max lines with Seq > seq (max <= 0: all) and how many
// lines after seq were already evicted.
func (r *Ring) Since(seq uint64, max int) (lines []Line, dropped uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	lines, dropped, _ = r.sinceLocked(nil, seq, max)
	return lines, dropped
}

// sinceLocked appends to dst up to max lines with Seq > seq (max <= 0:
// all) and returns it, how many lines after seq were already evicted, and
// the channel the next append closes.
func (r *Ring) sinceLocked(dst []Line, seq uint64, max int) ([]Line, uint64, <-chan struct{}) {
	live := r.lines[r.head:]
	var dropped uint64
	if len(live) > 0 {
		if first := live[0].Seq; first > seq+1 {
			dropped = first - seq - 1
			seq = first - 1
		}
		live = live[min(uint64(len(live)), seq+1-live[0].Seq):]
	} else if r.nextSeq > seq+1 {
		dropped = r.nextSeq - seq - 1
	}
	if max > 0 && len(live) > max {
		live = live[:max]
	}
	return append(dst, live...), dropped, r.changed
}

// followBatch bounds the lines a follower copies under the lock at once.
const followBatch = 256

// followWakeInterval is the least time between two batches a follower
// takes: one woken sooner waits out the rest and then takes all that
// arrived meanwhile in one batch. Every append wakes every follower,
// so without it a source printing 2,000 lines/s woke each follower (and
// its reader down to the network write) 2,000 times a second, each wake
// taking the lock the writer needs; with 100 followers under TCG they
// fell so far behind that lines were evicted unread (bench/agentload).
// A line after a quiet spell is not delayed.
const followWakeInterval = 20 * time.Millisecond

// A Follower reads the lines of a ring in order, a batch at a time, in
// the goroutine that calls Next: following costs no goroutine and no
// channel operation per line. A follower that falls so far behind that
// lines are evicted before it reads them gets a System line with Seq 0
// saying how many it missed; the writers never wait for it. A Follower is
// not safe for concurrent use; every reader makes its own. A Sink's
// followers read lines evicted unread from the log file instead
// (Sink.Follow).
type Follower struct {
	r     *Ring
	seq   uint64    // the last line taken
	last  time.Time // when lines were last taken
	batch []Line    // reused by Next
	// evicted, when set, reads lines the ring no longer holds from
	// elsewhere (Sink.Follow: the log file), as File.ReadSince does.
	evicted func(dst []Line, seq uint64, max int) ([]Line, error)
}

// Follow returns a follower whose first batch starts with the last n
// lines the ring holds (n <= 0: with the next line appended).
func (r *Ring) Follow(n int) *Follower {
	r.mu.Lock()
	defer r.mu.Unlock()
	f := &Follower{r: r, seq: r.nextSeq - 1}
	if n > 0 {
		live := r.lines[r.head:]
		if len(live) > n {
			live = live[len(live)-n:]
		}
		if len(live) > 0 {
			f.seq = live[0].Seq - 1
		}
	}
	return f
}

// droppedNote is the line that tells a follower it missed n lines.
func droppedNote(n uint64) Line {
	return Line{Time: time.Now(), Stream: System, Text: fmt.Sprintf("logs: %d lines dropped (reader too slow)", n)}
}

// Next waits for lines after those it returned before and returns up to
// followBatch of them, oldest first, preceded by the note about missed
// lines if any were. New lines come at most every followWakeInterval, so
// a busy source's lines arrive in batches. The slice is valid until the
// next call. When ctx ends, Next returns its error.
func (f *Follower) Next(ctx context.Context) ([]Line, error) {
	r := f.r
	for {
		r.mu.Lock()
		lines, dropped, changed := r.sinceLocked(f.batch[:0], f.seq, followBatch)
		r.mu.Unlock()
		if dropped > 0 && f.evicted != nil {
			// Read outside the ring's lock, after the ring's lines (kept
			// for the case the file has none); lines found there stand
			// for the evicted ones, and the ring's are taken next time.
			if old, err := f.evicted(lines[len(lines):], f.seq, int(min(dropped, followBatch))); err == nil && len(old) > 0 {
				dropped = old[0].Seq - f.seq - 1
				lines = append(lines[:0], old...) // to the front, so the buffer keeps its size
			}
		}
		f.batch = lines
		if len(lines) > 0 || dropped > 0 {
			f.last = r.now()
			f.seq += dropped
			if len(lines) > 0 {
				f.seq = lines[len(lines)-1].Seq
			}
			if dropped > 0 {
				f.batch = slices.Insert(lines, 0, droppedNote(dropped))
			}
			return f.batch, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if wait := followWakeInterval - r.now().Sub(f.last); wait > 0 {
			select {
			case <-r.after(wait):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
}
