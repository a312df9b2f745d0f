package clock

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// The SNTP packet (RFC 4330, section 4): 48 bytes, big-endian.
const (
	packetBytes = 48
	// Byte 0: leap indicator (2 bits), version (3), mode (3).
	ntpVersion = 4
	modeClient = 3
	modeServer = 4
	// leapUnsynchronized is the leap indicator of a server without time.
	leapUnsynchronized = 3
	// Offsets of the fields a client reads.
	offStratum  = 1
	offOrigin   = 24
	offReceive  = 32
	offTransmit = 40
	// ntpEpochOffset is 1900-01-01 to 1970-01-01 in seconds.
	ntpEpochOffset = 2208988800
	// maxStratum: 16 means unsynchronized; 0 is a kiss-o'-death packet.
	maxStratum = 15
)

// Sample is one answer of an NTP server.
type Sample struct {
	// Server is the address asked ("host:port").
	Server string
	// Offset is what to add to the local clock to get the server's time.
	Offset time.Duration
	// Delay is the round trip, less the server's processing time.
	Delay time.Duration
	// Stratum is the server's distance from a reference clock (1..15).
	Stratum int
}

// Query asks one server ("host:port") for the time, once. The request's
// transmit timestamp is random, not the local time: the answer must echo
// it, so an off-path sender cannot forge one, and the request does not
// reveal the local clock. The local send and receive times are taken
// from this machine's clock around the exchange.
func Query(ctx context.Context, server string) (Sample, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", server)
	if err != nil {
		return Sample{}, fmt.Errorf("ntp %s: %w", server, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(dl); err != nil {
			return Sample{}, fmt.Errorf("ntp %s: %w", server, err)
		}
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()

	req := make([]byte, packetBytes)
	req[0] = ntpVersion<<3 | modeClient
	if _, err := rand.Read(req[offTransmit : offTransmit+8]); err != nil {
		return Sample{}, fmt.Errorf("ntp %s: nonce: %w", server, err)
	}
	t1 := time.Now()
	if _, err := conn.Write(req); err != nil {
		return Sample{}, fmt.Errorf("ntp %s: %w", server, err)
	}
	resp := make([]byte, 2*packetBytes)
	for {
		n, err := conn.Read(resp)
		t4 := time.Now()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
				err = errors.New("no answer")
			}
			return Sample{}, fmt.Errorf("ntp %s: %w", server, err)
		}
		s, err := parseResponse(req, resp[:n], t1, t4)
		if errors.Is(err, errNotOurs) {
			continue // a stale or forged answer; keep waiting for ours
		}
		if err != nil {
			return Sample{}, fmt.Errorf("ntp %s: %w", server, err)
		}
		s.Server = server
		return s, nil
	}
}

var errNotOurs = errors.New("answer does not echo the request")

// parseResponse checks a server's answer to req, sent at local time t1
// and received at t4, and computes the offset and delay (RFC 4330,
// section 5).
func parseResponse(req, b []byte, t1, t4 time.Time) (Sample, error) {
	if len(b) < packetBytes {
		return Sample{}, fmt.Errorf("answer of %d bytes, want at least %d", len(b), packetBytes)
	}
	if string(b[offOrigin:offOrigin+8]) != string(req[offTransmit:offTransmit+8]) {
		return Sample{}, errNotOurs
	}
	leap, version, mode := b[0]>>6, (b[0]>>3)&7, b[0]&7
	stratum := int(b[offStratum])
	switch {
	case mode != modeServer:
		return Sample{}, fmt.Errorf("answer in mode %d, want %d (server)", mode, modeServer)
	case version < 3 || version > ntpVersion:
		return Sample{}, fmt.Errorf("answer of NTP version %d, want 3 or 4", version)
	case stratum == 0:
		return Sample{}, fmt.Errorf("kiss-o'-death %q: the server refuses to answer", b[12:16])
	case stratum > maxStratum:
		return Sample{}, fmt.Errorf("stratum %d: the server is not synchronized", stratum)
	case leap == leapUnsynchronized:
		return Sample{}, errors.New("leap indicator 3: the server is not synchronized")
	}
	t2 := ntpTime(binary.BigEndian.Uint64(b[offReceive:]))
	t3 := ntpTime(binary.BigEndian.Uint64(b[offTransmit:]))
	if binary.BigEndian.Uint64(b[offTransmit:]) == 0 || t3.Before(t2) {
		return Sample{}, errors.New("answer has no transmit time, or one before its receive time")
	}
	// t4 - t1 is measured on the monotonic clock, so a step of the local
	// clock during the exchange does not distort the delay.
	delay := t4.Sub(t1) - t3.Sub(t2)
	if delay < 0 {
		delay = 0
	}
	// offset = ((t2 - t1) + (t3 - t4)) / 2, with wall times; written as
	// t3 + delay/2 - t4 it cannot overflow over decades of offset.
	offset := t3.Add(delay / 2).Sub(t4.Round(0))
	return Sample{Offset: offset, Delay: delay, Stratum: stratum}, nil
}

// ntpTime converts an NTP timestamp (seconds since 1900 and a binary
// fraction). Seconds below 2^31 are taken as the era that starts in 2036,
// so the conversion holds from 1968 to 2104.
func ntpTime(ts uint64) time.Time {
	secs, frac := int64(ts>>32), ts&0xffffffff
	if secs < 1<<31 {
		secs += 1 << 32
	}
	nanos := int64((frac * 1e9) >> 32)
	return time.Unix(secs-ntpEpochOffset, nanos).UTC()
}
