package mgmt

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// A LogLineEncoder appends log lines as lines of the logs stream
// (ContentTypeNDJSON): the JSON object encoding/json writes for each
// without HTML escaping, and a newline. The agent writes every line to
// every follower; encoding/json's reflection, time.Time.MarshalJSON and
// the compaction of its result were most of the agent's CPU time with 100
// followers (bench/agentload), and then time formatting was most of what
// was left, so the encoder formats the date, time of day and zone once
// per second (and location). The zero value is ready to use; it is not
// safe for concurrent use.
type LogLineEncoder struct {
	sec int64
	loc *time.Location
	// whole is the second sec in loc as RFC 3339 without fraction:
	// "2006-01-02T15:04:05" and the zone; nil when nothing is cached.
	whole []byte
}

// Append appends l and a newline.
func (e *LogLineEncoder) Append(b []byte, l LogLine) []byte {
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, l.Seq, 10)
	b = append(b, `,"time":"`...)
	b = e.appendTime(b, l.Time)
	b = append(b, `","stream":`...)
	b = appendJSONString(b, l.Stream)
	b = append(b, `,"text":`...)
	b = appendJSONString(b, l.Text)
	return append(b, "}\n"...)
}

// dateTimeLen is the length of "2006-01-02T15:04:05".
const dateTimeLen = 19

// appendTime appends t as time.RFC3339Nano.
func (e *LogLineEncoder) appendTime(b []byte, t time.Time) []byte {
	if sec, loc := t.Unix(), t.Location(); e.whole == nil || sec != e.sec || loc != e.loc {
		if y := t.Year(); y < 0 || y > 9999 {
			e.whole = nil
			return t.AppendFormat(b, time.RFC3339Nano) // not four digits: no shortcut
		}
		e.whole = t.AppendFormat(e.whole[:0], time.RFC3339)
		e.sec, e.loc = sec, loc
	}
	b = append(b, e.whole[:dateTimeLen]...)
	if ns := t.Nanosecond(); ns != 0 {
		var frac [10]byte // '.' and nine digits, trailing zeros dropped
		frac[0] = '.'
		for i := 9; i >= 1; i-- {
			frac[i] = byte('0' + ns%10)
			ns /= 10
		}
		n := len(frac)
		for frac[n-1] == '0' {
			n--
		}
		b = append(b, frac[:n]...)
	}
	return append(b, e.whole[dateTimeLen:]...)
}

// appendJSONString appends s as a JSON string as encoding/json writes it
// without HTML escaping: quotes, backslashes and control characters
// escaped, invalid UTF-8 as U+FFFD, U+2028 and U+2029 escaped.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
