package logs

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// DefaultConsoleQueueLines is how many lines a Console buffers before it
// drops.
const DefaultConsoleQueueLines = 4096

// Console writes "prefix: text" lines to a slow writer (a serial console
// at 115200 baud takes ~1 ms per line) from its own goroutine, so that a
// service printing fast is never blocked by it. When the queue is full
// lines are dropped and counted; the count is printed when there is room.
type Console struct {
	w       io.Writer
	q       chan consoleItem
	dropped atomic.Uint64
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

type consoleItem struct {
	b       []byte
	flushed chan struct{}
}

// NewConsole starts a console writer on w with room for queueLines lines
// (<= 0: DefaultConsoleQueueLines). Close stops it.
func NewConsole(w io.Writer, queueLines int) *Console {
	if queueLines <= 0 {
		queueLines = DefaultConsoleQueueLines
	}
	c := &Console{w: w, q: make(chan consoleItem, queueLines), stop: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	return c
}

func (c *Console) run() {
	defer close(c.done)
	for {
		select {
		case it := <-c.q:
			c.write(it)
		case <-c.stop:
			for {
				select {
				case it := <-c.q:
					c.write(it)
				default:
					return
				}
			}
		}
	}
}

func (c *Console) write(it consoleItem) {
	if n := c.dropped.Swap(0); n > 0 {
		fmt.Fprintf(c.w, "console: %d lines dropped (the console is slower than the output; the logs API has them)\n", n)
	}
	if it.flushed != nil {
		close(it.flushed)
		return
	}
	// A write error on the console has nowhere to be reported.
	_, _ = c.w.Write(it.b)
}

// Print queues "prefix: text\n"; it never blocks. A nil Console discards.
func (c *Console) Print(prefix, text string) {
	if c == nil {
		return
	}
	b := make([]byte, 0, len(prefix)+len(text)+3)
	b = append(b, prefix...)
	b = append(b, ": "...)
	b = append(b, text...)
	b = append(b, '\n')
	select {
	case c.q <- consoleItem{b: b}:
	default:
		c.dropped.Add(1)
	}
}

// Flush waits until every line queued before it is written, or ctx ends.
func (c *Console) Flush(ctx context.Context) error {
	if c == nil {
		return nil
	}
	it := consoleItem{flushed: make(chan struct{})}
	select {
	case c.q <- it:
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-it.flushed:
		return nil
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close writes what is queued and stops the writer goroutine.
func (c *Console) Close() {
	if c == nil {
		return
	}
	c.once.Do(func() { close(c.stop) })
	<-c.done
}
