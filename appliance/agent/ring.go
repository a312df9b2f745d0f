package agent

import (
	"context"
	"math"

	"github.com/ingotdev/ingot/appliance/logs"
	"github.com/ingotdev/ingot/mgmt"
)

// ringLinesBuffer is how many converted lines RingLines holds ready for
// the handler. The logs handler flushes whenever no line is ready, so
// with an unbuffered channel it found none after nearly every line (the
// producing goroutines had not run yet) and paid one write, TLS record
// and vsock or TCP packet per line and follower; 100 followers of a
// service logging 2,000 lines/s then cost the agent more than a TCG guest
// has (bench/agentload). Buffered, a follower that falls behind finds a
// batch ready and sends it in one flush. It costs about 8 KiB per
// follower (the texts are shared with the ring).
const ringLinesBuffer = 128

// RingLines serves a logs.Ring with the semantics of Logs.Logs: the last n
// lines (n < 0: all the ring holds, 0: none), then with follow every new
// line until ctx ends. Stage1's Logs implementation looks the ring up by
// name and hands it here.
func RingLines(ctx context.Context, ring *logs.Ring, n int, follow bool) <-chan mgmt.LogLine {
	out := make(chan mgmt.LogLine, ringLinesBuffer)
	var in <-chan logs.Line
	if follow {
		if n < 0 {
			n = math.MaxInt
		}
		in = ring.Follow(ctx, n)
	} else {
		var tail []logs.Line
		switch {
		case n < 0:
			tail = ring.Tail(0)
		case n > 0:
			tail = ring.Tail(n)
		}
		ch := make(chan logs.Line, len(tail))
		for _, l := range tail {
			ch <- l
		}
		close(ch)
		in = ch
	}
	go func() {
		defer close(out)
		for l := range in {
			select {
			case out <- LogLine(l):
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// LogLine converts a logs.Line for the protocol.
func LogLine(l logs.Line) mgmt.LogLine {
	return mgmt.LogLine{Seq: l.Seq, Time: l.Time, Stream: l.Stream.String(), Text: l.Text}
}
