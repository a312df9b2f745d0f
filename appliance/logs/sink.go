package logs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// MaxLineBytes is the longest line ReadFrom keeps whole; longer ones are
// split, so a program printing without newlines cannot grow memory.
const MaxLineBytes = 16 << 10

// Sink is the log of one source (a service, or init itself): every line
// goes to its ring, to the console prefixed with the source's name, and to
// its file once one is attached. It is safe for concurrent use.
type Sink struct {
	name    string
	ring    *Ring
	console *Console

	mu          sync.Mutex
	file        *File
	fileFailing bool // an error was reported and no write has worked since
	forwarder   Forwarder
}

// Forwarder sends a source's lines elsewhere (a remote syslog). Forward
// must not block: it is called while the source's output is captured.
type Forwarder interface {
	Forward(source string, l Line)
}

// SetForwarder sends every later line to f as well (nil stops).
func (s *Sink) SetForwarder(f Forwarder) {
	s.mu.Lock()
	s.forwarder = f
	s.mu.Unlock()
}

// NewSink returns the sink for source name; console may be nil.
func NewSink(name string, ring *Ring, console *Console) *Sink {
	return &Sink{name: name, ring: ring, console: console}
}

// Name returns the source's name.
func (s *Sink) Name() string { return s.name }

// Ring returns the in-memory log.
func (s *Sink) Ring() *Ring { return s.ring }

// SetFile attaches f (nil detaches); the previous file is closed.
func (s *Sink) SetFile(f *File) error {
	s.mu.Lock()
	old := s.file
	s.file, s.fileFailing = f, false
	s.mu.Unlock()
	if old != nil && old != f {
		return old.Close()
	}
	return nil
}

// Tail returns the last n lines the ring holds (n <= 0: all).
func (s *Sink) Tail(n int) []Line { return s.ring.Tail(n) }

// Follow returns a follower of the ring (Ring.Follow) that reads lines
// the ring has evicted before it read them from the log file, when the
// file holds them, instead of skipping them.
func (s *Sink) Follow(n int) *Follower {
	f := s.ring.Follow(n)
	f.evicted = s.readEvicted
	return f
}

// readEvicted reads lines after seq from the file (File.ReadSince).
func (s *Sink) readEvicted(dst []Line, seq uint64, max int) ([]Line, error) {
	s.mu.Lock()
	file := s.file
	s.mu.Unlock()
	if file == nil {
		return dst, nil
	}
	return file.ReadSince(dst, seq, max)
}

// Line records one line of output.
func (s *Sink) Line(stream Stream, text string) {
	s.console.Print(s.name, text)
	s.mu.Lock()
	defer s.mu.Unlock()
	// Appended under the lock, so that the file has the lines in the
	// ring's order, which ReadSince relies on.
	l := s.ring.Append(time.Now(), stream, text)
	if s.forwarder != nil {
		s.forwarder.Forward(s.name, l)
	}
	if s.file == nil {
		return
	}
	err := s.file.Write(l)
	switch {
	case err != nil && !s.fileFailing:
		// Reported once, to the console only: writing it to the ring and
		// file would loop through the failing file.
		s.fileFailing = true
		s.console.Print(s.name, fmt.Sprintf("log file: %v (further errors not shown)", err))
	case err == nil:
		s.fileFailing = false
	}
}

// Printf records a System line.
func (s *Sink) Printf(format string, args ...any) {
	s.Line(System, fmt.Sprintf(format, args...))
}

// ReadFrom records r's output as lines of the given stream until EOF and
// returns nil then (or the read error). A final line without a newline is
// recorded too; "\r\n" endings lose the "\r".
func (s *Sink) ReadFrom(stream Stream, r io.Reader) error {
	br := bufio.NewReaderSize(r, MaxLineBytes)
	for {
		b, err := br.ReadSlice('\n')
		if len(b) > 0 {
			text := b
			if text[len(text)-1] == '\n' {
				text = text[:len(text)-1]
				if len(text) > 0 && text[len(text)-1] == '\r' {
					text = text[:len(text)-1]
				}
			}
			s.Line(stream, string(text))
		}
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF):
			return nil
		default:
			return err
		}
	}
}

// Close detaches and closes the file.
func (s *Sink) Close() error { return s.SetFile(nil) }
