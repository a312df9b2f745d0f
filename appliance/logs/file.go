package logs

import (
	"errors"
	"fmt"
	"os"
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
type File struct {
	mu       sync.Mutex
	path     string
	maxBytes int64
	f        *os.File
	size     int64
}

// OpenFile opens (appending) or creates the log file at path, mode 0640.
func OpenFile(path string, maxBytes int64) (*File, error) {
	f, size, err := openAppend(path)
	if err != nil {
		return nil, err
	}
	return &File{path: path, maxBytes: maxBytes, f: f, size: size}, nil
}

// openAppend never follows a symbolic link at path: a log directory may be
// reachable by a service (a volume), and init appends as root.
func openAppend(path string) (*os.File, int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o640)
	if err != nil {
		return nil, 0, fmt.Errorf("logs: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("logs: %w", err)
	}
	return f, st.Size(), nil
}

// Path returns the file's path.
func (f *File) Path() string { return f.path }

// Format renders a line as it is stored in a file:
// "2006-01-02T15:04:05.000000Z stdout text\n", time in UTC.
func Format(l Line) []byte {
	b := make([]byte, 0, 36+len(l.Text))
	b = l.Time.UTC().AppendFormat(b, "2006-01-02T15:04:05.000000Z")
	b = append(b, ' ')
	b = append(b, l.Stream.String()...)
	b = append(b, ' ')
	b = append(b, l.Text...)
	return append(b, '\n')
}

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
	n, err := f.f.Write(b)
	f.size += int64(n)
	if err != nil {
		return fmt.Errorf("logs: %s: %w", f.path, err)
	}
	return nil
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
	nf, size, err := openAppend(f.path)
	if err != nil {
		return err
	}
	f.f, f.size = nf, size
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
	const layout = "2006-01-02T15:04:05.000000Z"
	raw := Line{Stream: System, Text: s}
	if len(s) < len(layout)+1 || s[len(layout)] != ' ' {
		return raw
	}
	t, err := time.Parse(layout, s[:len(layout)])
	if err != nil {
		return raw
	}
	stream, text, _ := strings.Cut(s[len(layout)+1:], " ")
	for _, st := range []Stream{Stdout, Stderr, System} {
		if stream == st.String() {
			return Line{Time: t, Stream: st, Text: text}
		}
	}
	return raw
}
