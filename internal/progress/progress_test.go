package progress

import (
	"strings"
	"testing"
)

func TestMeter(t *testing.T) {
	var b strings.Builder
	m := New(&b, "push", 4<<20)
	m.Set(1 << 20) // the first call prints
	m.Add(1 << 20) // within Every: quiet
	m.Finish()     // the last line says it all
	m.Finish()     // nothing new
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "push: 1Mi / 4Mi ( 25%)") || !strings.HasPrefix(lines[1], "push: 2Mi / 4Mi ( 50%)") {
		t.Errorf("lines = %q, want 1Mi then 2Mi of 4Mi", lines)
	}
	if m.Done() != 2<<20 {
		t.Errorf("Done = %d", m.Done())
	}
}
