package logs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ingotdev/ingot/internal/vmtest"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)

func texts(lines []Line) []string {
	var s []string
	for _, l := range lines {
		s = append(s, l.Text)
	}
	return s
}

func TestRingWrapAround(t *testing.T) {
	const keep = 10
	r := NewRing(keep * (lineOverheadBytes + 7))
	for i := 1; i <= 25; i++ {
		r.Append(t0, Stdout, fmt.Sprintf("line-%02d", i))
	}
	if got := r.Len(); got != keep {
		t.Errorf("Len() = %d, want %d", got, keep)
	}
	if got, max := r.Bytes(), keep*(lineOverheadBytes+7); got > max {
		t.Errorf("Bytes() = %d, want <= %d", got, max)
	}
	got := r.Tail(3)
	if want := []string{"line-23", "line-24", "line-25"}; fmt.Sprint(texts(got)) != fmt.Sprint(want) || got[0].Seq != 23 {
		t.Errorf("Tail(3) = %q (first seq %d), want %q from seq 23", texts(got), got[0].Seq, want)
	}
	if got := r.Tail(0); len(got) != keep || got[0].Text != "line-16" {
		t.Errorf("Tail(0) = %q, want line-16..line-25", texts(got))
	}
	lines, dropped := r.Since(5, 2)
	if dropped != 10 || fmt.Sprint(texts(lines)) != "[line-16 line-17]" {
		t.Errorf("Since(5, 2) = %q, %d; want [line-16 line-17], 10 dropped", texts(lines), dropped)
	}
	lines, dropped = r.Since(24, 0)
	if dropped != 0 || fmt.Sprint(texts(lines)) != "[line-25]" {
		t.Errorf("Since(24, 0) = %q, %d; want [line-25], 0", texts(lines), dropped)
	}
	if lines, _ := r.Since(25, 0); len(lines) != 0 {
		t.Errorf("Since(25, 0) = %q, want none", texts(lines))
	}
}

func TestRingCompactsAndTruncates(t *testing.T) {
	r := NewRing(100 * (lineOverheadBytes + 4))
	for i := 0; i < 20000; i++ {
		r.Append(t0, Stdout, fmt.Sprintf("%04d", i%10000))
	}
	if got := r.Tail(1)[0]; got.Seq != 20000 || got.Text != "9999" {
		t.Errorf("Tail(1) = %+v, want seq 20000 text 9999", got)
	}
	if got := r.Len(); got != 100 {
		t.Errorf("Len() = %d, want 100", got)
	}
	if cap(r.lines) > 10*compactMinLines {
		t.Errorf("backing array grew to %d lines; compaction should bound it", cap(r.lines))
	}
	small := NewRing(lineOverheadBytes + 10)
	l := small.Append(t0, Stderr, strings.Repeat("x", 100))
	if len(l.Text) != 10 || small.Len() != 1 {
		t.Errorf("Append(100 bytes) into a 10-byte ring stored %d bytes, %d lines; want 10, 1", len(l.Text), small.Len())
	}
}

func TestRingFollow(t *testing.T) {
	r := NewRing(1 << 20)
	for i := 1; i <= 5; i++ {
		r.Append(t0, Stdout, fmt.Sprint(i))
	}
	f := r.Follow(2)
	go func() {
		for i := 6; i <= 8; i++ {
			r.Append(t0, Stdout, fmt.Sprint(i))
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // for a follower that never returns
	defer cancel()
	var got []string
	for len(got) < 5 {
		batch, err := f.Next(ctx)
		if err != nil {
			t.Fatalf("Follow: got %q, then %v", got, err)
		}
		for _, l := range batch {
			got = append(got, l.Text)
		}
	}
	if want := "[4 5 6 7 8]"; fmt.Sprint(got) != want {
		t.Errorf("Follow(2) = %q, want %s", got, want)
	}
	cancel()
	if _, err := f.Next(ctx); err == nil {
		t.Error("Next after its context ended returned no error")
	}
}

// TestRingFollowBatches checks that a follower takes the lines waiting
// for it in batches of followBatch, every line once and in order.
func TestRingFollowBatches(t *testing.T) {
	r := NewRing(1 << 20)
	f := r.Follow(0)
	const total = 3*followBatch + 7
	for i := 1; i <= total; i++ {
		r.Append(t0, Stdout, fmt.Sprint(i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var sizes []int
	next := 1
	for next <= total {
		batch, err := f.Next(ctx)
		if err != nil {
			t.Fatalf("after line %d: %v", next-1, err)
		}
		sizes = append(sizes, len(batch))
		for _, l := range batch {
			if l.Text != fmt.Sprint(next) || l.Seq != uint64(next) {
				t.Fatalf("got seq %d %q, want line %d", l.Seq, l.Text, next)
			}
			next++
		}
	}
	if want := fmt.Sprint([]int{followBatch, followBatch, followBatch, 7}); fmt.Sprint(sizes) != want {
		t.Errorf("batch sizes %v, want %s", sizes, want)
	}
}

func TestRingFollowSlowReaderGetsDropNote(t *testing.T) {
	r := NewRing(10 * (lineOverheadBytes + 2))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := r.Follow(0)
	// Nobody reads while 30 lines go into a ring of 10: at least 20 are
	// lost.
	for i := 1; i <= 30; i++ {
		r.Append(t0, Stdout, fmt.Sprintf("%02d", i))
	}
	var received, dropped int
	var sawNote bool
	for done := false; !done; {
		batch, err := f.Next(ctx)
		if err != nil {
			t.Fatalf("follower stalled after %d lines: %v", received, err)
		}
		for i, l := range batch {
			if l.Seq == 0 {
				if i != 0 {
					t.Errorf("the note is line %d of its batch, want the first", i)
				}
				sawNote = true
				var n int
				fmt.Sscanf(l.Text, "logs: %d lines dropped", &n)
				dropped += n
				continue
			}
			received++
			done = l.Text == "30"
		}
	}
	if !sawNote || received+dropped != 30 || dropped < 20 {
		t.Errorf("slow follower: received %d, dropped %d (note %v); want a note and 30 lines accounted for", received, dropped, sawNote)
	}
}

func TestFileRotation(t *testing.T) {
	p := filepath.Join(t.TempDir(), "svc.log")
	const maxBytes = 300
	f, err := OpenFile(p, maxBytes)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if err := f.Write(Line{Time: t0, Stream: Stdout, Text: fmt.Sprintf("line %02d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	cur, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(p + ".1")
	if err != nil {
		t.Fatalf("no rotated file: %v", err)
	}
	if len(cur) > maxBytes || len(old) > maxBytes {
		t.Errorf("sizes %d and %d, want both <= %d", len(cur), len(old), maxBytes)
	}
	all := string(old) + string(cur)
	if !strings.HasSuffix(all, "2025-01-02T03:04:05.000006Z stdout line 19\n") {
		t.Errorf("log ends %q, want the last line formatted", all[max(0, len(all)-60):])
	}
	// The two files hold a contiguous tail: every line from the first kept
	// one to the last.
	lines := strings.Split(strings.TrimSuffix(all, "\n"), "\n")
	var first int
	fmt.Sscanf(lines[0][len(lines[0])-2:], "%d", &first)
	for i, l := range lines {
		if want := fmt.Sprintf("line %02d", first+i); !strings.HasSuffix(l, want) {
			t.Errorf("line %d = %q, want suffix %q", i, l, want)
		}
	}
	// Reopening appends.
	f, err = OpenFile(p, maxBytes)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(Line{Time: t0, Stream: System, Text: "again"})
	f.Close()
	if b, _ := os.ReadFile(p); !bytes.HasPrefix(b, cur) || !strings.HasSuffix(string(b), "system again\n") {
		t.Errorf("reopened file = %q, want the old content then the new line", b)
	}
}

// blockingWriter blocks writes until released, like a stalled serial port.
type blockingWriter struct {
	release chan struct{}
	buf     vmtest.Console
}

func (w *blockingWriter) Write(b []byte) (int, error) {
	<-w.release
	return w.buf.Write(b)
}

func TestConsoleDropsInsteadOfBlocking(t *testing.T) {
	w := &blockingWriter{release: make(chan struct{})}
	c := NewConsole(w, 4)
	done := make(chan struct{})
	go func() {
		for i := 0; i < 100; i++ {
			c.Print("svc", fmt.Sprint(i))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Print blocked on a stalled console")
	}
	close(w.release)
	if err := c.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.Print("svc", "after")
	c.Close()
	out := w.buf.String()
	if !strings.Contains(out, "svc: 0\n") || !strings.Contains(out, "lines dropped") || !strings.HasSuffix(out, "svc: after\n") {
		t.Errorf("console output = %q, want the first lines, a drop note, and the last line", out)
	}
}

func TestSinkReadFrom(t *testing.T) {
	var out bytes.Buffer
	c := NewConsole(&out, 0)
	dir := t.TempDir()
	f, err := OpenFile(filepath.Join(dir, "web.log"), DefaultFileBytes)
	if err != nil {
		t.Fatal(err)
	}
	s := NewSink("web", NewRing(1<<20), c)
	s.SetFile(f)
	long := strings.Repeat("y", MaxLineBytes+5)
	in := "hello\r\nworld\n\n" + long + "\nno newline"
	if err := s.ReadFrom(Stderr, strings.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	s.Printf("exited %d", 1)
	s.Close()
	c.Close()
	got := texts(s.Ring().Tail(0))
	want := []string{"hello", "world", "", long[:MaxLineBytes], long[MaxLineBytes:], "no newline", "exited 1"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("ring after ReadFrom = %.80q, want %.80q", got, want)
	}
	if l := s.Ring().Tail(2); l[0].Stream != Stderr || l[1].Stream != System {
		t.Errorf("streams = %v, %v; want stderr, system", l[0].Stream, l[1].Stream)
	}
	if !strings.HasPrefix(out.String(), "web: hello\nweb: world\nweb: \n") {
		t.Errorf("console = %.60q, want prefixed lines", out.String())
	}
	b, _ := os.ReadFile(filepath.Join(dir, "web.log"))
	if n := strings.Count(string(b), "\n"); n != len(want) {
		t.Errorf("file has %d lines, want %d", n, len(want))
	}
	if !strings.HasSuffix(string(b), " system exited 1\n") {
		t.Errorf("file ends %q", b[max(0, len(b)-40):])
	}
}

func TestSinkReportsFileErrorOnce(t *testing.T) {
	var out bytes.Buffer
	c := NewConsole(&out, 0)
	f, err := OpenFile(filepath.Join(t.TempDir(), "x.log"), DefaultFileBytes)
	if err != nil {
		t.Fatal(err)
	}
	f.Close() // every write now fails
	s := NewSink("x", NewRing(1<<20), c)
	s.SetFile(f)
	for i := 0; i < 3; i++ {
		s.Line(Stdout, "a")
	}
	c.Close()
	if n := strings.Count(out.String(), "log file:"); n != 1 {
		t.Errorf("console = %q, want the file error once", out.String())
	}
	if s.Ring().Len() != 3 {
		t.Errorf("ring has %d lines, want 3 despite the file error", s.Ring().Len())
	}
}

func TestReadFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "svc.log")
	if lines, err := ReadFile(p, -1); err != nil || len(lines) != 0 {
		t.Fatalf("ReadFile(missing) = %v, %v; want nothing", lines, err)
	}
	f, err := OpenFile(p, 300)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 12; i++ {
		st := []Stream{Stdout, Stderr, System}[i%3]
		if err := f.Write(Line{Time: t0.Add(time.Duration(i) * time.Second), Stream: st, Text: fmt.Sprintf("line %02d with  spaces", i)}); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	// A write a power cut tore in half.
	tf, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	tf.WriteString("2025-01-02T03:0")
	tf.Close()
	if _, err := os.Stat(p + ".1"); err != nil {
		t.Fatalf("want a rotated file for the test: %v", err)
	}
	all, err := ReadFile(p, -1)
	if err != nil {
		t.Fatal(err)
	}
	last := all[len(all)-1]
	if last.Text != "2025-01-02T03:0" || last.Stream != System || !last.Time.IsZero() {
		t.Errorf("torn line = %+v, want it whole as a system line without time", last)
	}
	all = all[:len(all)-1]
	var first int
	fmt.Sscanf(all[0].Text, "line %d", &first)
	for i, l := range all {
		n := first + i
		want := Line{Seq: uint64(i + 1), Time: t0.Add(time.Duration(n) * time.Second), Stream: []Stream{Stdout, Stderr, System}[n%3], Text: fmt.Sprintf("line %02d with  spaces", n)}
		if !l.Time.Equal(want.Time) || l.Stream != want.Stream || l.Text != want.Text || l.Seq != want.Seq {
			t.Errorf("line %d = %+v, want %+v", i, l, want)
		}
	}
	if all[len(all)-1].Text != "line 11 with  spaces" {
		t.Errorf("last whole line %q, want line 11", all[len(all)-1].Text)
	}
	tail, err := ReadFile(p, 2)
	if err != nil || len(tail) != 2 || tail[0].Text != "line 11 with  spaces" || tail[0].Seq != 1 {
		t.Errorf("ReadFile(n=2) = %+v, %v; want line 11 and the torn line", tail, err)
	}
}

// TestFileRefusesSymlink performs the log-volume attack: a service that can
// write the log directory puts a symbolic link where its log file (or the
// next one after a rotation) will be opened, aiming init's root appends at
// a file of its choosing. The link is never followed.
func TestFileRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "svc.log")
	if err := os.Symlink(victim, path); err != nil {
		t.Fatal(err)
	}
	if f, err := OpenFile(path, 1<<20); err == nil {
		f.Close()
		t.Errorf("OpenFile(symlink) succeeded, want an error")
	}
	// Planted after the open, for the reopen that follows a rotation.
	os.Remove(path)
	f, err := OpenFile(path, 64)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	os.Remove(path)
	if err := os.Symlink(victim, path); err != nil {
		t.Fatal(err)
	}
	line := Line{Time: time.Unix(0, 0), Text: strings.Repeat("x", 40)}
	f.Write(line)
	f.Write(line) // rotates: renames the link to .1, then must not open through a new one
	os.Remove(path)
	os.Symlink(victim, path)
	f.Write(line)
	f.Write(line)
	if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
		t.Errorf("victim file = %q after log writes through a symlink, want it unchanged", b)
	}
}

// TestRingFollowSpacesWakeUps checks that a follower woken within
// followWakeInterval of its last batch waits out the rest and then takes what arrived
// meanwhile as one batch, every line once and in order, and that a line
// after a quiet spell is not held back. The ring's clock is the test's:
// frozen, and advanced by hand.
func TestRingFollowSpacesWakeUps(t *testing.T) {
	r := NewRing(1 << 20)
	now := t0
	var waits []time.Duration
	called := make(chan struct{}, 1)
	fire := make(chan time.Time)
	r.now = func() time.Time { return now }
	r.after = func(d time.Duration) <-chan time.Time {
		waits = append(waits, d)
		called <- struct{}{}
		return fire
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // for a follower that never returns
	defer cancel()
	f := r.Follow(0)
	batches := make(chan []string)
	go func() {
		defer close(batches)
		for {
			batch, err := f.Next(ctx)
			if err != nil {
				return
			}
			var texts []string
			for _, l := range batch {
				texts = append(texts, l.Text)
			}
			batches <- texts
		}
	}()
	expect := func(from, to int) {
		t.Helper()
		var want []string
		for i := from; i <= to; i++ {
			want = append(want, fmt.Sprint(i))
		}
		if got := <-batches; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("batch %q, want lines %d to %d in one", got, from, to)
		}
	}
	r.Append(t0, Stdout, "1") // the first batch: no wait
	expect(1, 1)
	r.Append(t0, Stdout, "2") // woken at once after a batch: it waits
	select {
	case <-called:
	case <-ctx.Done():
		t.Fatal("a follower woken at once after a batch did not wait")
	}
	for i := 3; i <= 50; i++ {
		r.Append(t0, Stdout, fmt.Sprint(i))
	}
	fire <- now
	expect(2, 50)
	if len(waits) != 1 || waits[0] != followWakeInterval {
		t.Errorf("waits %v, want one of %s", waits, followWakeInterval)
	}
	// After a quiet spell a line comes without waiting. (The follower
	// read the clock before it sent the batch, so the test may move it
	// now.)
	now = now.Add(time.Hour)
	r.Append(t0, Stdout, "51")
	expect(51, 51)
	if len(waits) != 1 {
		t.Errorf("waits %v after a quiet spell, want still one", waits)
	}
}

// seqs returns the Seqs and texts of lines, for comparing.
func seqs(lines []Line) string {
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "%d:%s ", l.Seq, l.Text)
	}
	return strings.TrimSpace(b.String())
}

// TestFileReadSince checks that a log file finds the lines written
// through it by Seq: across more than one index entry, across a rotation
// (the rotated file, then the new one), over a gap in the Seqs (a line
// that was never written), and never from a file that took the rotated
// one's place.
func TestFileReadSince(t *testing.T) {
	p := filepath.Join(t.TempDir(), "svc.log")
	// Lines from an earlier boot are not indexed: they have no Seq.
	if err := os.WriteFile(p, []byte("2025-01-02T03:04:05.000006Z stdout from before\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	f, err := OpenFile(p, 24<<10)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const total = 1000
	for seq := uint64(1); seq <= total; seq++ {
		if seq == 700 {
			continue // never written: a gap
		}
		text := fmt.Sprint(seq)
		if seq == 5 {
			text = "two\nlines"
		}
		if err := f.Write(Line{Seq: seq, Time: t0, Stream: Stdout, Text: text}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(p + ".1"); err != nil {
		t.Fatalf("the test wants a rotation: %v", err)
	}
	for _, tc := range []struct {
		seq  uint64
		max  int
		want string
	}{
		{0, 3, "1:1 2:2 3:3"},
		{3, 3, "4:4 5:two lines 6:6"}, // one line of the file per line of the log
		{600, 2, "601:601 602:602"},
		{698, 5, "699:699"},         // the end of a run
		{699, 2, "701:701 702:702"}, // over the gap
		{998, 5, "999:999 1000:1000"},
		{1000, 5, ""},
	} {
		got, err := f.ReadSince(nil, tc.seq, tc.max)
		if err != nil {
			t.Fatalf("ReadSince(%d): %v", tc.seq, err)
		}
		if seqs(got) != tc.want {
			t.Errorf("ReadSince(%d, %d) = %q, want %q", tc.seq, tc.max, seqs(got), tc.want)
		}
		for _, l := range got {
			if !l.Time.Equal(t0.Truncate(time.Microsecond)) || l.Stream != Stdout {
				t.Errorf("line %d read back as %v %v", l.Seq, l.Time, l.Stream)
			}
		}
	}
	// Lines written in the rotated file are found there; once something
	// else takes its place, nothing is read from it.
	f.mu.Lock()
	firstCur := f.cur.marks[0].first
	f.mu.Unlock()
	if firstCur < 3 {
		t.Fatalf("the current file starts at line %d; want the early lines in the rotated one", firstCur)
	}
	if err := os.Rename(p+".1", p+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p+".1", []byte("2025-01-02T03:04:05.000006Z stdout impostor\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if got, err := f.ReadSince(nil, 0, 3); err != nil || len(got) != 0 {
		t.Errorf("ReadSince from a replaced rotated file = %q, %v; want nothing", seqs(got), err)
	}
}

// TestSinkFollowerReadsEvictedLines checks that a follower of a sink with
// a log file that falls behind gets the lines its ring evicted from the
// file, every one once and in order, with no drop note; and that lines
// the file never had (logged before it was attached) are reported as
// dropped, followed by the rest.
func TestSinkFollowerReadsEvictedLines(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sink := NewSink("svc", NewRing(10*(lineOverheadBytes+4)), nil)
	fol := sink.Follow(0)
	for i := 1; i <= 20; i++ {
		sink.Line(Stdout, fmt.Sprint(i)) // before the file: only the ring
	}
	f, err := OpenFile(filepath.Join(t.TempDir(), "svc.log"), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	sink.SetFile(f)
	defer sink.Close()
	const total = 2000
	for i := 21; i <= total; i++ {
		sink.Line(Stdout, fmt.Sprint(i))
	}
	next, notes := uint64(1), 0
	for next <= total {
		batch, err := fol.Next(ctx)
		if err != nil {
			t.Fatalf("after line %d: %v", next-1, err)
		}
		for _, l := range batch {
			if l.Seq == 0 {
				var n uint64
				fmt.Sscanf(l.Text, "logs: %d lines dropped", &n)
				if next != 1 || n != 20 {
					t.Fatalf("note %q before line %d; want one for the 20 lines before the file, first", l.Text, next)
				}
				notes++
				next += n
				continue
			}
			if l.Seq != next || l.Text != fmt.Sprint(next) {
				t.Fatalf("got %d %q, want line %d", l.Seq, l.Text, next)
			}
			next++
		}
	}
	if notes != 1 {
		t.Errorf("%d drop notes, want 1", notes)
	}
}
