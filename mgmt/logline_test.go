package mgmt

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// TestLogLineEncoderTexts: the hand-written encoding is byte for byte what
// encoding/json (without HTML escaping) writes, for every kind of text.
func TestLogLineEncoderTexts(t *testing.T) {
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
		if got := new(LogLineEncoder).Append(nil, l); !bytes.Equal(got, want.Bytes()) {
			t.Errorf("Append(%q) =\n%s\nencoding/json:\n%s", text, got, want.Bytes())
		}
		var back LogLine
		if err := json.Unmarshal(new(LogLineEncoder).Append(nil, l), &back); err != nil {
			t.Errorf("Append(%q) does not decode: %v", text, err)
		}
	}
}

// TestLogLineEncoder: an encoder that formats a second's date, time of
// day and zone once writes every line of a run as encoding/json does:
// lines within one second and across seconds, minutes and days, with and
// without a fraction (and fractions with trailing zeros), in other zones
// for the same instant, and at the edges of the four-digit years.
func TestLogLineEncoder(t *testing.T) {
	base := time.Date(2026, 12, 31, 23, 59, 58, 0, time.UTC)
	east := time.FixedZone("E", 5*3600+30*60)
	var times []time.Time
	for _, d := range []time.Duration{0, 1, 10, 120 * time.Millisecond, 999999999, time.Second, time.Second + 500*time.Millisecond,
		2 * time.Second, 2*time.Second + 1000, 3 * time.Second, 61 * time.Second, 24 * time.Hour} {
		times = append(times, base.Add(d), base.Add(d).In(east), base.Add(d))
	}
	times = append(times, time.Time{}, time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC), time.Unix(1e9, 5).In(time.FixedZone("W", -7*3600)))
	var e LogLineEncoder
	for i, tm := range times {
		l := LogLine{Seq: uint64(i), Time: tm, Stream: "stdout", Text: "tick"}
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(l); err != nil {
			t.Fatal(err)
		}
		if got := e.Append(nil, l); !bytes.Equal(got, want.Bytes()) {
			t.Errorf("line %d (%v): encoder wrote\n%s\nencoding/json:\n%s", i, tm, got, want.Bytes())
		}
	}
}

func BenchmarkLogLineEncoder(b *testing.B) {
	l := LogLine{Seq: 123456, Time: time.Now(), Stream: "stdout", Text: "tick 123456 hello from the service"}
	var e LogLineEncoder
	var buf []byte
	for b.Loop() {
		buf = e.Append(buf[:0], l)
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
