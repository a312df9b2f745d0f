package clock

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ingotdev/ingot/packer/format/spec"
)

func TestQueryMeasuresOffset(t *testing.T) {
	for _, skew := range []time.Duration{0, 3 * time.Second, -25 * 365 * 24 * time.Hour, 70 * 365 * 24 * time.Hour} {
		srv := startNTPServer(t, "127.0.0.1:0", skew)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		s, err := Query(ctx, srv.addr())
		cancel()
		if err != nil {
			t.Fatalf("skew %v: %v", skew, err)
		}
		// The error is at most the round trip on loopback; a second bounds
		// it far above any scheduling delay.
		if d := s.Offset - skew; d > time.Second || d < -time.Second {
			t.Errorf("skew %v: offset %v, want it within 1 s of the skew", skew, s.Offset)
		}
		if s.Stratum != 2 || s.Server != srv.addr() {
			t.Errorf("skew %v: sample %+v, want stratum 2 from %s", skew, s, srv.addr())
		}
	}
}

func TestQueryNoServer(t *testing.T) {
	// A bound socket that never answers.
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err = Query(ctx, conn.LocalAddr().String())
	if err == nil || !strings.Contains(err.Error(), "no answer") || !strings.Contains(err.Error(), conn.LocalAddr().String()) {
		t.Errorf("Query of a silent server = %v, want no answer naming the server", err)
	}
}

// answer builds a server answer to req.
func answer(req []byte, mutate func(b []byte)) []byte {
	b := make([]byte, packetBytes)
	b[0] = ntpVersion<<3 | modeServer
	b[offStratum] = 1
	copy(b[offOrigin:], req[offTransmit:offTransmit+8])
	now := time.Now()
	binary.BigEndian.PutUint64(b[offReceive:], ntpTimestamp(now))
	binary.BigEndian.PutUint64(b[offTransmit:], ntpTimestamp(now))
	if mutate != nil {
		mutate(b)
	}
	return b
}

func TestParseResponseRejects(t *testing.T) {
	req := make([]byte, packetBytes)
	req[0] = ntpVersion<<3 | modeClient
	copy(req[offTransmit:], "nonce123")
	now := time.Now()
	if _, err := parseResponse(req, answer(req, nil), now, now); err != nil {
		t.Fatalf("a good answer: %v", err)
	}
	for _, c := range []struct {
		name   string
		mutate func(b []byte)
		want   string
	}{
		{"short", nil, "bytes"},
		{"forged origin", func(b []byte) { copy(b[offOrigin:], "other!!!") }, "does not echo"},
		{"client mode", func(b []byte) { b[0] = ntpVersion<<3 | modeClient }, "mode 3"},
		{"kiss of death", func(b []byte) { b[offStratum] = 0; copy(b[12:], "RATE") }, "kiss-o'-death \"RATE\""},
		{"stratum 16", func(b []byte) { b[offStratum] = 16 }, "not synchronized"},
		{"leap 3", func(b []byte) { b[0] |= 3 << 6 }, "leap indicator 3"},
		{"version 7", func(b []byte) { b[0] = 7<<3 | modeServer }, "version 7"},
		{"no transmit time", func(b []byte) { binary.BigEndian.PutUint64(b[offTransmit:], 0) }, "no transmit time"},
	} {
		b := answer(req, c.mutate)
		if c.name == "short" {
			b = b[:40]
		}
		_, err := parseResponse(req, b, now, now)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: parseResponse = %v, want an error with %q", c.name, err, c.want)
		}
	}
}

func TestNTPTimeEras(t *testing.T) {
	for _, want := range []time.Time{
		time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 12, 4, 18, 0, 0, 500_000_000, time.UTC),
		time.Date(2036, 2, 7, 6, 28, 16, 0, time.UTC), // era 1 begins
		time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC),
	} {
		got := ntpTime(ntpTimestamp(want))
		if d := got.Sub(want); d > time.Microsecond || d < -time.Microsecond {
			t.Errorf("ntpTime(ntpTimestamp(%v)) = %v", want, got)
		}
	}
}

// fakeSystem stands in for the system clock: an offset from the real one
// that setTime changes.
type fakeSystem struct {
	mu     sync.Mutex
	offset time.Duration
	sets   []time.Time
	err    error
}

func (f *fakeSystem) set(t time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.sets = append(f.sets, t)
	f.offset = time.Until(t)
	return nil
}

func (f *fakeSystem) setCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.sets)
}

func TestRestoreMovesForwardOnly(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, ".ingot-clock")
	var sys fakeSystem
	var logged []string
	c := New(spec.Clock{}, func(f string, a ...any) { logged = append(logged, f) }, WithSavePath(path), WithSetTime(sys.set))
	if err := c.Restore(); err != nil {
		t.Fatalf("Restore without a file: %v", err)
	}
	future := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	if err := os.WriteFile(path, []byte(future.Format(time.RFC3339Nano)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.Restore(); err != nil {
		t.Fatal(err)
	}
	if len(sys.sets) != 1 || !sys.sets[0].Equal(future) {
		t.Errorf("Restore of a later saved time set %v, want [%v]", sys.sets, future)
	}
	if st := c.Status(); !st.Restored.Equal(future) || st.Synced {
		t.Errorf("status after Restore = %+v, want restored %v and not synced", st, future)
	}
	past := time.Now().Add(-48 * time.Hour)
	if err := os.WriteFile(path, []byte(past.Format(time.RFC3339Nano)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.Restore(); err != nil || len(sys.sets) != 1 {
		t.Errorf("Restore of an earlier saved time: err %v, sets %v; want the clock left alone", err, sys.sets)
	}
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.Restore(); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("Restore of garbage = %v, want an error naming %s", err, path)
	}
	if len(sys.sets) != 1 {
		t.Errorf("garbage set the clock: %v", sys.sets)
	}
}

func TestSaveRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, ".ingot-clock")
	c := New(spec.Clock{}, t.Logf, WithSavePath(path))
	before := time.Now()
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var saved time.Time
	if err := saved.UnmarshalText([]byte(strings.TrimSpace(string(b)))); err != nil {
		t.Fatalf("saved %q: %v", b, err)
	}
	if saved.Before(before.Round(0)) || saved.After(time.Now()) {
		t.Errorf("saved %v, want the time of Save (after %v)", saved, before)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("saved file mode %v (%v), want 0600", fi.Mode(), err)
	}
	// No perm: nothing to save to, and no error.
	if err := New(spec.Clock{}, t.Logf, WithSavePath(filepath.Join(dir, "missing", "x"))).Save(); err != nil {
		t.Errorf("Save without its directory = %v, want nil", err)
	}
}

// TestRunSyncsAndGates runs the client against a server that first does
// not answer: Synced says why and the gate's channel wakes a waiter at
// the sync; the clock is stepped by the server's offset.
func TestRunSyncsAndGates(t *testing.T) {
	var sys fakeSystem
	var mu sync.Mutex
	answering := false
	query := func(ctx context.Context, server string) (Sample, error) {
		mu.Lock()
		defer mu.Unlock()
		if server != "ntp.test:123" {
			return Sample{}, errors.New("wrong server " + server)
		}
		if !answering {
			return Sample{}, errors.New("ntp ntp.test:123: no answer")
		}
		return Sample{Server: server, Offset: time.Hour, Stratum: 1}, nil
	}
	c := New(spec.Clock{NTP: []string{"ntp.test"}}, t.Logf, WithQuery(query), WithSetTime(sys.set), WithSavePath(""))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	// Wait until the first attempt failed and says why.
	var why string
	var changed <-chan struct{}
	for {
		var synced bool
		synced, why, changed = c.Synced()
		if synced {
			t.Fatal("synced with no answer")
		}
		if strings.Contains(why, "no answer") {
			break
		}
		<-changed
	}
	if st := c.Status(); st.Synced || !strings.Contains(st.Error, "ntp.test:123: no answer") {
		t.Errorf("status before any answer = %+v, want not synced with the server's error", st)
	}
	mu.Lock()
	answering = true
	mu.Unlock()
	for {
		synced, _, ch := c.Synced()
		if synced {
			break
		}
		<-ch
	}
	select {
	case <-changed:
	default:
		t.Error("the sync did not close the channel Synced returned before it")
	}
	st := c.Status()
	if !st.Synced || st.Server != "ntp.test:123" || st.OffsetSeconds != 3600 || st.Error != "" || st.LastSync.IsZero() {
		t.Errorf("status after the sync = %+v, want synced from ntp.test:123 with offset 3600 s", st)
	}
	if sys.setCount() != 1 || sys.offset < 59*time.Minute {
		t.Errorf("clock set %d times to %v ahead, want once, an hour ahead", sys.setCount(), sys.offset)
	}
}

// TestSmallOffsetNotStepped: an offset under StepThreshold is a sync, but
// the clock is left alone.
func TestSmallOffsetNotStepped(t *testing.T) {
	var sys fakeSystem
	query := func(ctx context.Context, server string) (Sample, error) {
		return Sample{Server: server, Offset: StepThreshold / 2, Stratum: 1}, nil
	}
	c := New(spec.Clock{NTP: []string{"10.0.2.2:1234"}}, t.Logf, WithQuery(query), WithSetTime(sys.set), WithSavePath(""))
	if err := c.sync(t.Context(), time.Now()); err != nil {
		t.Fatal(err)
	}
	if synced, _, _ := c.Synced(); !synced || sys.setCount() != 0 {
		t.Errorf("synced %v, clock set %d times; want synced and not set", synced, sys.setCount())
	}
}

func TestSetTimeFailureIsNotASync(t *testing.T) {
	sys := fakeSystem{err: errors.New("operation not permitted")}
	query := func(ctx context.Context, server string) (Sample, error) {
		return Sample{Server: server, Offset: time.Hour, Stratum: 1}, nil
	}
	c := New(spec.Clock{NTP: []string{"a"}}, t.Logf, WithQuery(query), WithSetTime(sys.set), WithSavePath(""))
	if err := c.sync(t.Context(), time.Now()); err == nil {
		t.Fatal("sync with a failing clock_settime succeeded")
	}
	if synced, why, _ := c.Synced(); synced || !strings.Contains(why, "operation not permitted") {
		t.Errorf("Synced = %v, %q; want not synced, saying why", synced, why)
	}
}

func TestNTPOff(t *testing.T) {
	c := New(spec.Clock{}, t.Logf, WithSavePath(""))
	if synced, why, _ := c.Synced(); synced || !strings.Contains(why, "NTP is off") {
		t.Errorf("Synced with no servers = %v, %q; want not synced: NTP is off", synced, why)
	}
}
