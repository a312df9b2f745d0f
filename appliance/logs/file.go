package logs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultFileBytes is the size at which a log file is rotated.
const DefaultFileBytes = 4 << 20

// File is an append-only log file rotated by size: when a write would take
// it past maxBytes it is renamed to path + ".1" (replacing the previous
// one) and a new file is started, so a source uses at most 2*maxBytes.
// It is safe for concurrent use.
//
// A File remembers where the lines written to it since it was opened lie,
// by their ring Seq, in the file and in its rotated predecessor: a
// follower that fell behind its ring reads the lines the ring evicted from
// here (ReadSince).
type File struct {
	mu       sync.Mutex
	path     string
	maxBytes int64
	f        *os.File
	size     int64
	// cur indexes the lines of path written through this File; prev,
	// those of path + ".1" since its rotation by this File.
	cur, prev fileIndex
}

// fileIndexEvery is how many lines one index entry covers at most: a
// reader seeking a line reads no more than this many lines before it.
const fileIndexEvery = 256

// fileIndex finds lines of one log file by Seq: a mark where each run of
// consecutive Seqs starts, and one every fileIndexEvery lines within a
// run. A log file of 4 MiB needs a few KiB of marks.
type fileIndex struct {
	ino   uint64 // the file's inode, to tell it from a later file at its path
	marks []fileMark
}

// A fileMark says that the lines first..last lie in the file one after
// the other from byte off.
type fileMark struct {
	first, last uint64
	off         int64
}

// add records that line seq was written whole at off.
func (x *fileIndex) add(seq uint64, off int64) {
	if n := len(x.marks); n > 0 {
		m := &x.marks[n-1]
		if seq == m.last+1 && seq-m.first < fileIndexEvery {
			m.last = seq
			return
		}
	}
	x.marks = append(x.marks, fileMark{first: seq, last: seq, off: off})
}

// find returns the mark of the first line after seq the file holds.
func (x *fileIndex) find(seq uint64) (fileMark, bool) {
	i := sort.Search(len(x.marks), func(i int) bool { return x.marks[i].last > seq })
	if i == len(x.marks) {
		return fileMark{}, false
	}
	return x.marks[i], true
}

// OpenFile opens (appending) or creates the log file at path, mode 0640.
func OpenFile(path string, maxBytes int64) (*File, error) {
	f, size, ino, err := openAppend(path)
	if err != nil {
		return nil, err
	}
	return &File{path: path, maxBytes: maxBytes, f: f, size: size, cur: fileIndex{ino: ino}}, nil
}

// openAppend never follows a symbolic link at path: a log directory may be
// reachable by a service (a volume), and init appends as root.
func openAppend(path string) (*os.File, int64, uint64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o640)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("logs: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, 0, fmt.Errorf("logs: %w", err)
	}
	return f, st.Size(), inode(st), nil
}

// inode returns the inode number of a file os.Stat described, 0 if
// unknown.
func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// Path returns the file's path.
func (f *File) Path() string { return f.path }

// Format renders a line as it is stored in a file:
// "2006-01-02T15:04:05.000000Z stdout text\n", time in UTC. A newline
// inside the text is stored as a space, so that every line of a file is
// one line of the log.
func Format(l Line) []byte {
	b := make([]byte, 0, 36+len(l.Text))
	b = l.Time.UTC().AppendFormat(b, timeLayout)
	b = append(b, ' ')
	b = append(b, l.Stream.String()...)
	b = append(b, ' ')
	start := len(b)
	b = append(b, l.Text...)
	for i := start; i < len(b); i++ {
		if b[i] == '\n' {
			b[i] = ' '
		}
	}
	return append(b, '\n')
}

// timeLayout is the time of a line in a log file.
const timeLayout = "2006-01-02T15:04:05.000000Z"

// Write appends a line, rotating first if it would not fit.
func (f *File) Write(l Line) error {
	b := Format(l)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.f == nil {
		return fmt.Errorf("logs: %s: closed", f.path)
	}
	if f.size > 0 && f.size+int64(len(b)) > f.maxBytes {
		if err := f.rotate(); err != nil {
			return err
		}
	}
	off := f.size
	n, err := f.f.Write(b)
	f.size += int64(n)
	if err != nil {
		return fmt.Errorf("logs: %s: %w", f.path, err)
	}
	if l.Seq > 0 {
		f.cur.add(l.Seq, off)
	}
	return nil
}

// ReadSince appends to dst up to max lines with Seq > seq that were
// written through f since it was opened and that its file or the rotated
// one still holds, starting with the first such line (which may come
// after seq+1 if the file lacks some), oldest first, and returns dst. It
// reads without holding up writers; lines rotated away meanwhile are not
// returned.
func (f *File) ReadSince(dst []Line, seq uint64, max int) ([]Line, error) {
	if max <= 0 {
		return dst, nil
	}
	// A rotation between the look-up and the open moves the current
	// file's lines to the rotated one: the second look finds them there.
	for range 2 {
		f.mu.Lock()
		path, idx := f.path+".1", f.prev
		m, ok := idx.find(seq)
		if !ok {
			path, idx = f.path, f.cur
			m, ok = idx.find(seq)
		}
		f.mu.Unlock()
		if !ok {
			return dst, nil
		}
		file, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if errors.Is(err, os.ErrNotExist) {
			return dst, nil
		}
		if err != nil {
			return dst, fmt.Errorf("logs: %w", err)
		}
		st, err := file.Stat()
		if err != nil {
			file.Close()
			return dst, fmt.Errorf("logs: %w", err)
		}
		if inode(st) != idx.ino {
			file.Close() // another file took its name since the look-up
			continue
		}
		dst, err = readLines(dst, file, m, seq, max)
		file.Close()
		return dst, err
	}
	return dst, nil
}

// readLines appends the lines of m after seq, up to max, from file.
func readLines(dst []Line, file *os.File, m fileMark, seq uint64, max int) ([]Line, error) {
	if _, err := file.Seek(m.off, io.SeekStart); err != nil {
		return dst, fmt.Errorf("logs: %s: %w", file.Name(), err)
	}
	br := bufio.NewReaderSize(file, 32<<10)
	for n := m.first; n <= m.last && max > 0; n++ {
		text, err := br.ReadString('\n')
		if err != nil {
			// Shorter than the index says: the file was cut (by hand, or
			// a full disk); what was read stands.
			return dst, nil
		}
		if n <= seq {
			continue
		}
		l := parseLine(strings.TrimSuffix(text, "\n"))
		l.Seq = n
		dst = append(dst, l)
		max--
	}
	return dst, nil
}

func (f *File) rotate() error {
	if err := f.f.Close(); err != nil {
		f.f = nil
		return fmt.Errorf("logs: %s: %w", f.path, err)
	}
	f.f = nil
	// If the rename fails the file is reopened and keeps growing, which is
	// better than losing lines; the error still reaches the caller once.
	renameErr := os.Rename(f.path, f.path+".1")
	if renameErr == nil {
		f.prev = f.cur
	}
	nf, size, ino, err := openAppend(f.path)
	if err != nil {
		f.cur = fileIndex{}
		return err
	}
	f.f, f.size = nf, size
	if renameErr == nil || ino != f.cur.ino {
		f.cur = fileIndex{ino: ino}
	}
	if renameErr != nil {
		return fmt.Errorf("logs: rotate %s: %w", f.path, renameErr)
	}
	return nil
}

// Sync flushes the file to disk.
func (f *File) Sync() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.f == nil {
		return nil
	}
	return f.f.Sync()
}

// Close closes the file; later writes fail.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.f == nil {
		return nil
	}
	err := f.f.Close()
	f.f = nil
	return err
}

// ReadFile returns the last n lines (n < 0: all) of the log file at path
// and of its rotated predecessor path + ".1", oldest first, numbered from
// 1 in that order: what a source logged across boots. A line that does not
// parse (torn by a power cut) is returned whole as a System line without
// a time. Missing files are empty.
func ReadFile(path string, n int) ([]Line, error) {
	var lines []Line
	for _, p := range []string{path + ".1", path} {
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("logs: %w", err)
		}
		for text := range strings.Lines(string(b)) {
			lines = append(lines, parseLine(strings.TrimSuffix(text, "\n")))
		}
	}
	if n >= 0 && len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i := range lines {
		lines[i].Seq = uint64(i + 1)
	}
	return lines, nil
}

// parseLine reads a line as Format writes it.
func parseLine(s string) Line {
	raw := Line{Stream: System, Text: s}
	if len(s) < len(timeLayout)+1 || s[len(timeLayout)] != ' ' {
		return raw
	}
	t, err := time.Parse(timeLayout, s[:len(timeLayout)])
	if err != nil {
		return raw
	}
	stream, text, _ := strings.Cut(s[len(timeLayout)+1:], " ")
	for _, st := range []Stream{Stdout, Stderr, System} {
		if stream == st.String() {
			return Line{Time: t, Stream: st, Text: text}
		}
	}
	return raw
}
