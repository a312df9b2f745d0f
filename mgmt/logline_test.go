package mgmt

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// TestLogLineAppendNDJSON: the hand-written encoding is byte for byte what
// encoding/json (without HTML escaping) writes, for every kind of text.
func TestLogLineAppendNDJSON(t *testing.T) {
	texts := []string{
		"", "tick 42", `quote " and backslash \`, "tab\tnewline\ncr\r", "\b\f\x00\x01\x1f\x7f",
		"<html> & 'apos'", "héllo wörld ✓ 日本", "bad utf8 \xff\xfe end", "\xe2\x82", "line sep \u2028 para sep \u2029",
		"emoji 😀 and \U0010FFFF",
	}
	times := []time.Time{
		time.Date(2026, 12, 5, 1, 2, 3, 456789000, time.UTC),
		time.Date(2026, 12, 5, 1, 2, 3, 0, time.FixedZone("X", 3600)),
		{},
	}
	for i, text := range texts {
		l := LogLine{Seq: uint64(i * 1000003), Time: times[i%len(times)], Stream: []string{"stdout", "stderr", "system"}[i%3], Text: text}
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(l); err != nil {
			t.Fatal(err)
		}
		if got := l.AppendNDJSON(nil); !bytes.Equal(got, want.Bytes()) {
			t.Errorf("AppendNDJSON(%q) =\n%s\nencoding/json:\n%s", text, got, want.Bytes())
		}
		var back LogLine
		if err := json.Unmarshal(l.AppendNDJSON(nil), &back); err != nil {
			t.Errorf("AppendNDJSON(%q) does not decode: %v", text, err)
		}
	}
}

func BenchmarkLogLineAppendNDJSON(b *testing.B) {
	l := LogLine{Seq: 123456, Time: time.Now(), Stream: "stdout", Text: "tick 123456 hello from the service"}
	var buf []byte
	for b.Loop() {
		buf = l.AppendNDJSON(buf[:0])
	}
}

func BenchmarkLogLineEncodingJSON(b *testing.B) {
	l := LogLine{Seq: 123456, Time: time.Now(), Stream: "stdout", Text: "tick 123456 hello from the service"}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for b.Loop() {
		buf.Reset()
		enc.Encode(l)
	}
}
