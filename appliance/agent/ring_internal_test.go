package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/ingotdev/ingot/appliance/logs"
)

// TestRingLinesBatches checks that a follower that has fallen behind gets
// the lines waiting for it in batches, so the logs handler writes and
// flushes many at once, and that batching changes nothing about what is
// delivered: every line, once, in order, then the lines that follow.
func TestRingLinesBatches(t *testing.T) {
	const total = 1000
	ring := logs.NewRing(1 << 20)
	for i := 1; i <= total; i++ {
		ring.Append(time.Unix(0, 0), logs.Stdout, fmt.Sprint(i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // for a stream that never returns
	defer cancel()
	s := RingLines(ring, -1, true)
	next, batches := 1, 0
	for next <= total {
		batch, err := s.Next(ctx)
		if err != nil {
			t.Fatalf("after line %d: %v", next-1, err)
		}
		batches++
		for _, l := range batch {
			if l.Text != fmt.Sprint(next) || l.Seq != uint64(next) {
				t.Fatalf("line %d: got seq %d %q", next, l.Seq, l.Text)
			}
			next++
		}
	}
	if batches > total/100 {
		t.Errorf("%d lines came in %d batches; want batches of many lines", total, batches)
	}
	ring.Append(time.Unix(0, 0), logs.Stderr, "new")
	if batch, err := s.Next(ctx); err != nil || len(batch) != 1 || batch[0].Text != "new" || batch[0].Stream != "stderr" {
		t.Errorf("followed line: got %+v, %v", batch, err)
	}
	cancel()
	if _, err := s.Next(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Next after the request ended: %v, want context.Canceled", err)
	}
}

// TestRingLinesTail checks the streams that do not follow: the last n
// lines in one batch and then the end, and nothing at all for n = 0.
func TestRingLinesTail(t *testing.T) {
	ring := logs.NewRing(1 << 20)
	for i := 1; i <= 10; i++ {
		ring.Append(time.Unix(0, 0), logs.Stdout, fmt.Sprint(i))
	}
	ctx := context.Background()
	for _, tc := range []struct {
		n    int
		want string
	}{{3, "[8 9 10]"}, {-1, "[1 2 3 4 5 6 7 8 9 10]"}, {0, "[]"}} {
		s := RingLines(ring, tc.n, false)
		var got []string
		for {
			batch, err := s.Next(ctx)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("n=%d: %v", tc.n, err)
			}
			for _, l := range batch {
				got = append(got, l.Text)
			}
		}
		if fmt.Sprint(got) != tc.want {
			t.Errorf("n=%d: got %v, want %s", tc.n, got, tc.want)
		}
	}
}
