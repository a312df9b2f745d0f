// Package progress prints the progress of a long transfer (an update's
// root, a release's blobs) as lines "PREFIX: SENT / TOTAL (PCT%) RATE MB/s",
// at most one every Every, so that a log or a terminal shows it alike.
package progress

import (
	"fmt"
	"io"
	"time"

	"github.com/ingotdev/ingot/builder/config"
)

// Every is how often a Meter prints a line while bytes flow.
const Every = 500 * time.Millisecond

// Meter counts the bytes of one transfer of Total bytes. It is not safe
// for concurrent use.
type Meter struct {
	w      io.Writer
	prefix string
	total  int64
	n      int64
	start  time.Time
	last   time.Time
	// printed is n at the last line printed.
	printed int64
}

// New starts a Meter printing to w, each line starting with prefix.
func New(w io.Writer, prefix string, total int64) *Meter {
	return &Meter{w: w, prefix: prefix, total: total, start: time.Now()}
}

// Set says n bytes are done, and prints a line if Every has passed.
func (m *Meter) Set(n int64) {
	m.n = n
	if time.Since(m.last) < Every {
		return
	}
	m.last = time.Now()
	m.print()
}

// Add says n more bytes are done (see Set).
func (m *Meter) Add(n int64) { m.Set(m.n + n) }

// Done reports the bytes done so far.
func (m *Meter) Done() int64 { return m.n }

// Finish prints the last line unless the last one printed said it all.
func (m *Meter) Finish() {
	if m.printed != m.n || m.n == 0 {
		m.print()
	}
}

func (m *Meter) print() {
	pct := 100.0
	if m.total > 0 {
		pct = 100 * float64(m.n) / float64(m.total)
	}
	rate := float64(m.n) / 1e6 / max(time.Since(m.start).Seconds(), 1e-9)
	m.printed = m.n
	fmt.Fprintf(m.w, "%s: %s / %s (%3.0f%%) %.1f MB/s\n", m.prefix, config.FormatSize(m.n), config.FormatSize(m.total), pct, rate)
}
