package clock

import (
	"encoding/binary"
	"net"
	"sync"
	"testing"
	"time"
)

// ntpServer is a small SNTP server for the tests: it answers every client
// request with its own clock plus skew, as a stratum-2 server.
type ntpServer struct {
	conn net.PacketConn
	skew time.Duration
	wg   sync.WaitGroup

	mu       sync.Mutex
	requests int
}

// startNTPServer listens on addr ("127.0.0.1:0" for any port) until the
// test ends or stop is called.
func startNTPServer(t *testing.T, addr string, skew time.Duration) *ntpServer {
	t.Helper()
	conn, err := net.ListenPacket("udp4", addr)
	if err != nil {
		t.Fatalf("NTP test server: %v", err)
	}
	s := &ntpServer{conn: conn, skew: skew}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(s.stop)
	return s
}

func (s *ntpServer) port() int { return s.conn.LocalAddr().(*net.UDPAddr).Port }

func (s *ntpServer) addr() string { return s.conn.LocalAddr().String() }

func (s *ntpServer) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

func (s *ntpServer) stop() {
	s.conn.Close()
	s.wg.Wait()
}

func (s *ntpServer) serve() {
	defer s.wg.Done()
	buf := make([]byte, 512)
	for {
		n, peer, err := s.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		received := time.Now().Add(s.skew)
		if n < packetBytes || buf[0]&7 != modeClient {
			continue
		}
		s.mu.Lock()
		s.requests++
		s.mu.Unlock()
		resp := make([]byte, packetBytes)
		resp[0] = 0<<6 | ntpVersion<<3 | modeServer
		resp[offStratum] = 2
		copy(resp[offOrigin:offOrigin+8], buf[offTransmit:offTransmit+8])
		binary.BigEndian.PutUint64(resp[offReceive:], ntpTimestamp(received))
		binary.BigEndian.PutUint64(resp[offTransmit:], ntpTimestamp(time.Now().Add(s.skew)))
		_, _ = s.conn.WriteTo(resp, peer)
	}
}

// ntpTimestamp converts t to an NTP timestamp (era 0 or 1).
func ntpTimestamp(t time.Time) uint64 {
	secs := uint64(t.Unix()+ntpEpochOffset) & 0xffffffff
	frac := (uint64(t.Nanosecond()) << 32) / 1e9
	return secs<<32 | frac
}
