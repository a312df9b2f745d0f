package agent

import (
	"context"
	"io"
	"math"

	"github.com/ingotdev/ingot/appliance/logs"
	"github.com/ingotdev/ingot/mgmt"
)

// LogSource is a log RingLines serves: a logs.Sink, whose followers read
// the lines their ring evicted unread from the log file, or a bare
// logs.Ring.
type LogSource interface {
	Tail(n int) []logs.Line
	Follow(n int) *logs.Follower
}

// RingLines serves a log with the semantics of Logs.Logs: the last n
// lines (n < 0: all the ring holds, 0: none), then with follow every new
// line. Stage1's Logs implementation looks the log up by name and hands
// it here. A follower reads the ring in batches in the handler's own
// goroutine (logs.Follower): with a goroutine and a channel operation per
// line in between, 100 followers of a service logging 2,000 lines/s cost
// a TCG guest a fifth of its CPU in scheduling alone (bench/agentload).
func RingLines(ring LogSource, n int, follow bool) LogStream {
	if follow {
		if n < 0 {
			n = math.MaxInt
		}
		return &ringStream{f: ring.Follow(n)}
	}
	var tail []logs.Line
	switch {
	case n < 0:
		tail = ring.Tail(0)
	case n > 0:
		tail = ring.Tail(n)
	}
	lines := make([]mgmt.LogLine, len(tail))
	for i, l := range tail {
		lines[i] = LogLine(l)
	}
	return &lineSlice{lines: lines}
}

// ringStream follows a ring.
type ringStream struct {
	f   *logs.Follower
	out []mgmt.LogLine // reused by Next
}

func (s *ringStream) Next(ctx context.Context) ([]mgmt.LogLine, error) {
	batch, err := s.f.Next(ctx)
	if err != nil {
		return nil, err
	}
	s.out = s.out[:0]
	for _, l := range batch {
		s.out = append(s.out, LogLine(l))
	}
	return s.out, nil
}

// lineSlice is a stream of lines known in advance: one batch, then the
// end.
type lineSlice struct {
	lines []mgmt.LogLine
	done  bool
}

func (s *lineSlice) Next(ctx context.Context) ([]mgmt.LogLine, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.done || len(s.lines) == 0 {
		return nil, io.EOF
	}
	s.done = true
	return s.lines, nil
}

// LogLine converts a logs.Line for the protocol.
func LogLine(l logs.Line) mgmt.LogLine {
	return mgmt.LogLine{Seq: l.Seq, Time: l.Time, Stream: l.Stream.String(), Text: l.Text}
}
