// Package syslog sends the appliance's log lines to a remote syslog
// receiver (ingot.yaml's logs.remote) as RFC 5424 messages: over TLS or
// TCP with octet-counting framing (RFC 6587, RFC 5425), or one message per
// UDP datagram (RFC 5426).
//
// A Forwarder never blocks the one who logs: Forward only queues the line
// in memory. Its writer appends the queue, in order, to a spool of segment
// files on perm (fsync'd per batch, bounded: when full the oldest segment
// goes, and a counted "N lines dropped" message takes the place of its
// lines). Its sender reads the spool from the last point the receiver is
// taken to have (the acknowledged position, kept in the spool's state file
// across reboots) and writes it to the receiver; when the connection ends,
// it connects again and sends from that point. A line counts as received
// once the connection outlived it by ConfirmDelay; lines sent within that
// delay before a connection ended are sent again, so a receiver that goes
// away loses no line and may see the last moments' lines twice.
package syslog

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Facility and severities of RFC 5424, section 6.2.1.
const (
	facilityDaemon = 3

	SeverityWarning = 4
	SeverityNotice  = 5
	SeverityInfo    = 6
)

// StructuredDataID names ingot's structured data element: the private
// enterprise number 32473 is the one RFC 5612 reserves for documentation,
// since ingot has none of its own.
const StructuredDataID = "ingot@32473"

// Limits of RFC 5424's header fields (section 6).
const (
	maxHostnameBytes = 255
	maxAppNameBytes  = 48
)

// Message is one log line as a syslog message.
type Message struct {
	Time     time.Time
	Severity int
	Hostname string
	// AppName is the source: a service's name, or "init".
	AppName string
	// MsgID says which stream the line came from: stdout, stderr, system.
	MsgID string
	// BuildID and BootID go into the structured data.
	BuildID, BootID string
	Text            string
}

// Append appends m in RFC 5424's syntax:
//
//	<PRI>1 TIMESTAMP HOSTNAME APP-NAME - MSGID [ingot@32473 build="…" boot="…"] TEXT
//
// Header fields are cut to their limits and anything outside printable
// ASCII in them becomes '_'; the text is kept as it is, with invalid
// UTF-8 replaced.
func (m Message) Append(b []byte) []byte {
	b = append(b, '<')
	b = strconv.AppendInt(b, int64(facilityDaemon*8+m.Severity), 10)
	b = append(b, ">1 "...)
	b = m.Time.UTC().AppendFormat(b, "2006-01-02T15:04:05.000000Z")
	b = append(b, ' ')
	b = appendHeader(b, m.Hostname, maxHostnameBytes)
	b = append(b, ' ')
	b = appendHeader(b, m.AppName, maxAppNameBytes)
	b = append(b, " - "...)
	b = appendHeader(b, m.MsgID, 32)
	b = append(b, " ["...)
	b = append(b, StructuredDataID...)
	b = appendParam(b, "build", m.BuildID)
	b = appendParam(b, "boot", m.BootID)
	b = append(b, ']')
	if m.Text != "" {
		b = append(b, ' ')
		b = append(b, []byte(toValidUTF8(m.Text))...)
	}
	return b
}

// appendHeader writes a header field: "-" when empty, else at most max
// bytes of printable US-ASCII (33..126).
func appendHeader(b []byte, s string, max int) []byte {
	if s == "" {
		return append(b, '-')
	}
	if len(s) > max {
		s = s[:max]
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 33 || c > 126 {
			c = '_'
		}
		b = append(b, c)
	}
	return b
}

// appendParam writes ` name="value"`, escaping '"', '\' and ']' as
// RFC 5424 section 6.3.3 requires.
func appendParam(b []byte, name, value string) []byte {
	b = append(b, ' ')
	b = append(b, name...)
	b = append(b, '=', '"')
	for _, r := range toValidUTF8(value) {
		if r == '"' || r == '\\' || r == ']' {
			b = append(b, '\\')
		}
		b = utf8.AppendRune(b, r)
	}
	return append(b, '"')
}

func toValidUTF8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// AppendFrame appends msg with RFC 6587's octet-counting framing:
// "LEN SP MSG".
func AppendFrame(b, msg []byte) []byte {
	b = strconv.AppendInt(b, int64(len(msg)), 10)
	b = append(b, ' ')
	return append(b, msg...)
}

// maxFrameDigits bounds the length prefix a reader accepts.
const maxFrameDigits = 7

// ParseFrame reads one octet-counted frame at the start of b and returns
// the message and the frame's whole length; n == 0 means b holds no whole
// frame yet, and err a prefix that is not a frame.
func ParseFrame(b []byte) (msg []byte, n int, err error) {
	i := 0
	for i < len(b) && i <= maxFrameDigits && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	if i == len(b) {
		return nil, 0, nil
	}
	if i == 0 || i > maxFrameDigits || b[i] != ' ' || (b[0] == '0') {
		return nil, 0, errBadFrame
	}
	size, _ := strconv.Atoi(string(b[:i]))
	if len(b) < i+1+size {
		return nil, 0, nil
	}
	return b[i+1 : i+1+size], i + 1 + size, nil
}
