package agent

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ingotdev/ingot/appliance/logs"
)

// TestRingLinesHoldsABatch checks that a follower that has not read yet
// finds a batch of lines ready, so the logs handler sends them in one
// flush instead of one write per line (see ringLinesBuffer), and that the
// batch changes nothing about what is delivered: every line, once, in
// order.
func TestRingLinesHoldsABatch(t *testing.T) {
	const total = 1000
	ring := logs.NewRing(1 << 20)
	for i := 1; i <= total; i++ {
		ring.Append(time.Unix(0, 0), logs.Stdout, fmt.Sprint(i))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := RingLines(ctx, ring, -1, true)
	if cap(out) < 2 {
		t.Fatalf("RingLines channel holds %d lines; want a batch", cap(out))
	}
	// Nobody reads: the sender fills the buffer and waits. The deadline
	// is for a sender that never does, not a measure of speed.
	for deadline := time.Now().Add(time.Minute); len(out) < cap(out); {
		if time.Now().After(deadline) {
			t.Fatalf("RingLines holds %d of %d lines ready after a minute", len(out), cap(out))
		}
		time.Sleep(time.Millisecond)
	}
	for i := 1; i <= total; i++ {
		l := <-out
		if l.Text != fmt.Sprint(i) || l.Seq != uint64(i) {
			t.Fatalf("line %d: got seq %d %q", i, l.Seq, l.Text)
		}
	}
	ring.Append(time.Unix(0, 0), logs.Stderr, "new")
	if l := <-out; l.Text != "new" || l.Stream != "stderr" {
		t.Errorf("followed line: got %+v", l)
	}
	cancel()
	for range out {
	}
}
