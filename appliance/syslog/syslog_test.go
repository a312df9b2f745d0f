package syslog

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ingotdev/ingot/appliance/logs"
	"github.com/ingotdev/ingot/packer/format/spec"
)

var t0 = time.Date(2026, 12, 4, 18, 0, 0, 123456000, time.UTC)

func TestMessageFormat(t *testing.T) {
	m := Message{Time: t0, Severity: SeverityInfo, Hostname: "hello", AppName: "web", MsgID: "stdout",
		BuildID: `b"1]\`, BootID: "boot-1", Text: "hi there \xff"}
	got := string(m.Append(nil))
	want := `<30>1 2026-12-04T18:00:00.123456Z hello web - stdout [ingot@32473 build="b\"1\]\\" boot="boot-1"] hi there ` + "\uFFFD"
	if got != want {
		t.Errorf("Append =\n%s\nwant\n%s", got, want)
	}
	empty := string(Message{Time: t0, Severity: SeverityNotice, AppName: "a b"}.Append(nil))
	if want := `<29>1 2026-12-04T18:00:00.123456Z - a_b - - [ingot@32473 build="" boot=""]`; empty != want {
		t.Errorf("Append(empty fields) = %s, want %s", empty, want)
	}
	frame := AppendFrame(nil, []byte("abc"))
	if string(frame) != "3 abc" {
		t.Errorf("AppendFrame = %q", frame)
	}
	msg, n, err := ParseFrame(append(frame, "5 xy"...))
	if string(msg) != "abc" || n != 5 || err != nil {
		t.Errorf("ParseFrame = %q, %d, %v", msg, n, err)
	}
	if _, n, err := ParseFrame([]byte("5 xy")); n != 0 || err != nil {
		t.Errorf("ParseFrame(partial) = %d, %v; want 0, nil", n, err)
	}
	if _, _, err := ParseFrame([]byte("x5 xy")); err == nil {
		t.Errorf("ParseFrame(garbage) = nil error")
	}
}

// frames builds n frames "line-i" numbered from first.
func frames(first, n int) []byte {
	var b []byte
	for i := first; i < first+n; i++ {
		b = AppendFrame(b, []byte(fmt.Sprintf("line-%06d", i)))
	}
	return b
}

func readAll(t *testing.T, s *Spool) (msgs []string, dropped uint64) {
	t.Helper()
	pos := s.Acked()
	for {
		b, err := s.Read(pos, 1000)
		if err != nil {
			t.Fatal(err)
		}
		dropped += b.Dropped
		for rest := b.Frames; len(rest) > 0; {
			m, n, err := ParseFrame(rest)
			if err != nil || n == 0 {
				t.Fatalf("bad frame in %q", rest)
			}
			msgs = append(msgs, string(m))
			rest = rest[n:]
		}
		if b.Next == pos {
			return msgs, dropped
		}
		pos = b.Next
		if err := s.Ack(pos); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSpoolBoundDropsOldestAndCounts(t *testing.T) {
	dir := t.TempDir()
	const bound = 64 << 10
	s, err := OpenSpool(dir, bound)
	if err != nil {
		t.Fatal(err)
	}
	const total = 20000
	for i := 0; i < total; i += 10 {
		if err := s.Append(frames(i, 10), 10); err != nil {
			t.Fatal(err)
		}
		if b, _ := s.Stats(); b > bound {
			t.Fatalf("after %d lines the spool holds %d bytes, over its bound %d", i+10, b, bound)
		}
		if size := dirBytes(t, dir); size > bound {
			t.Fatalf("after %d lines the segment files hold %d bytes, over the bound %d", i+10, size, bound)
		}
	}
	msgs, dropped := readAll(t, s)
	if uint64(len(msgs))+dropped != total || dropped == 0 {
		t.Fatalf("read %d lines and %d dropped, want %d in all with some dropped", len(msgs), dropped, total)
	}
	// What is left is the newest lines, in order, with no gap.
	for i, m := range msgs {
		if want := fmt.Sprintf("line-%06d", int(dropped)+i); m != want {
			t.Fatalf("line %d = %q, want %q", i, m, want)
		}
	}
	if _, d := s.Stats(); d != dropped {
		t.Errorf("Stats dropped = %d, want %d", d, dropped)
	}
	s.Close()
}

func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), segSuffix) {
			info, _ := e.Info()
			n += info.Size()
		}
	}
	return n
}

// TestSpoolSurvivesReopen is a reboot: lines not acknowledged before it
// are read after it, in order, and a frame a power cut tore is skipped.
func TestSpoolSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	s.Append(frames(0, 100), 100)
	b, err := s.Read(s.Acked(), 20*17) // about 20 lines
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(b.Next); err != nil {
		t.Fatal(err)
	}
	acked := b.Lines
	s.Close()
	// A torn frame at the end of the last segment.
	segs, _ := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	f, _ := os.OpenFile(segs[len(segs)-1], os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("17 line-0")
	f.Close()

	s, err = OpenSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	s.Append(frames(100, 10), 10)
	msgs, dropped := readAll(t, s)
	if dropped != 0 || len(msgs) != 110-acked {
		t.Fatalf("after reopening read %d lines (%d dropped), want %d", len(msgs), dropped, 110-acked)
	}
	for i, m := range msgs {
		if want := fmt.Sprintf("line-%06d", acked+i); m != want {
			t.Fatalf("line %d = %q, want %q", i, m, want)
		}
	}
	s.Close()
}

// testPKI is a CA and a server certificate for 127.0.0.1 signed by it.
type testPKI struct {
	pool *x509.CertPool
	cert tls.Certificate
}

func newPKI(t *testing.T) testPKI {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "receiver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return testPKI{pool: pool, cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}}
}

// receiver is a TLS syslog receiver that records the messages it reads.
type receiver struct {
	mu    sync.Mutex
	msgs  []string
	l     net.Listener
	conns []net.Conn
	wg    sync.WaitGroup
}

func startReceiver(t *testing.T, addr string, cert tls.Certificate) *receiver {
	t.Helper()
	var l net.Listener
	var err error
	for i := 0; i < 50; i++ { // the port of a stopped receiver may linger
		l, err = tls.Listen("tcp", addr, &tls.Config{Certificates: []tls.Certificate{cert}})
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{l: l}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.conns = append(r.conns, c)
			r.mu.Unlock()
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.read(c)
			}()
		}
	}()
	return r
}

func (r *receiver) read(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		lenText, err := br.ReadString(' ')
		if err != nil {
			return
		}
		n, err := strconv.Atoi(strings.TrimSuffix(lenText, " "))
		if err != nil {
			return
		}
		msg := make([]byte, n)
		if _, err := io.ReadFull(br, msg); err != nil {
			return
		}
		r.mu.Lock()
		r.msgs = append(r.msgs, string(msg))
		r.mu.Unlock()
	}
}

// stop closes the listener and every connection, as a receiver that
// exits does.
func (r *receiver) stop() {
	r.l.Close()
	r.mu.Lock()
	for _, c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

func (r *receiver) messages() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...)
}

var seqRE = regexp.MustCompile(`tick (\d+)$`)

// checkSequence wants every number 1..n once in order of first arrival;
// it returns how many arrived twice (sent again after a reconnect).
func checkSequence(t *testing.T, msgs []string, n int) (again int) {
	t.Helper()
	next := 1
	seen := map[int]bool{}
	for _, m := range msgs {
		sm := seqRE.FindStringSubmatch(m)
		if sm == nil {
			continue
		}
		i, _ := strconv.Atoi(sm[1])
		if seen[i] {
			again++
			continue
		}
		if i != next {
			t.Fatalf("got tick %d, want %d next (a line lost or reordered)", i, next)
		}
		seen[i] = true
		next++
	}
	if next != n+1 {
		t.Fatalf("got ticks up to %d, want %d", next-1, n)
	}
	return again
}

// TestForwarderOutage: the receiver goes away for a while and comes
// back; the lines logged meanwhile are spooled and arrive in order, none
// lost, and the logger never waited.
func TestForwarderOutage(t *testing.T) {
	pki := newPKI(t)
	rec := startReceiver(t, "127.0.0.1:0", pki.cert)
	addr := rec.l.Addr().String()
	remote, err := spec.ParseRemote("syslog+tls://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := OpenSpool(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	fw, err := New(Config{Remote: remote, RootCAs: pki.pool, Hostname: "hello", BuildID: "b1", BootID: "boot1", Spool: sp, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fw.Run(ctx) }()

	n := 0
	tick := func(count int) {
		for i := 0; i < count; i++ {
			n++
			fw.Forward("hello", logs.Line{Time: time.Now(), Stream: logs.Stdout, Text: fmt.Sprintf("tick %d", n)})
			time.Sleep(5 * time.Millisecond)
		}
	}
	tick(100)
	waitFor(t, func() bool { return len(rec.messages()) >= 100 })
	rec.stop()
	before := rec.messages()
	tick(300) // the receiver is away
	if fw.Stats().Connected {
		t.Errorf("Stats().Connected while the receiver is away")
	}
	rec2 := startReceiver(t, addr, pki.cert)
	tick(100)
	waitFor(t, func() bool { return checkQuiet(rec2.messages(), 500) })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	rec2.stop()
	all := append(before, rec2.messages()...)
	again := checkSequence(t, all, 500)
	t.Logf("%d lines sent again after the reconnect", again)
	if m := all[0]; !strings.Contains(m, " hello hello - stdout [ingot@32473 build=\"b1\" boot=\"boot1\"] tick 1") {
		t.Errorf("first message = %q, want hostname, app-name and structured data", m)
	}
}

func checkQuiet(msgs []string, n int) bool {
	return len(msgs) > 0 && strings.HasSuffix(msgs[len(msgs)-1], fmt.Sprintf("tick %d", n))
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestForwarderRefusesUnknownReceiver performs the attack: something that
// is not the configured receiver (its certificate is from another CA)
// answers at the receiver's address. The forwarder must not send it a
// single line.
func TestForwarderRefusesUnknownReceiver(t *testing.T) {
	good, evil := newPKI(t), newPKI(t)
	var got sync.Mutex
	var plaintext []byte
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{evil.cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				got.Lock()
				plaintext = append(plaintext, b...)
				got.Unlock()
			}()
		}
	}()
	remote, _ := spec.ParseRemote("syslog+tls://" + l.Addr().String())
	sp, err := OpenSpool(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var logMu sync.Mutex
	var logged []string
	fw, err := New(Config{Remote: remote, RootCAs: good.pool, Spool: sp, Logf: func(f string, a ...any) {
		logMu.Lock()
		logged = append(logged, fmt.Sprintf(f, a...))
		logMu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fw.Run(ctx) }()
	fw.Forward("hello", logs.Line{Time: time.Now(), Stream: logs.Stdout, Text: "secret line"})
	waitFor(t, func() bool {
		logMu.Lock()
		defer logMu.Unlock()
		return len(logged) > 0
	})
	cancel()
	<-done
	got.Lock()
	defer got.Unlock()
	if strings.Contains(string(plaintext), "secret") || fw.Stats().Sent != 0 {
		t.Errorf("the impostor received %q (sent %d), want nothing", plaintext, fw.Stats().Sent)
	}
	logMu.Lock()
	defer logMu.Unlock()
	if !strings.Contains(logged[0], "certificate") {
		t.Errorf("log = %q, want the certificate error", logged)
	}
	if _, err := New(Config{Remote: remote, Spool: sp}); err == nil {
		t.Errorf("New(tls without a CA) succeeded, want an error")
	}
}

// TestForwarderSpoolFull: far more lines than the spool holds arrive
// while the receiver is away. The oldest go, and the receiver gets one
// message counting them, then the newest lines in order: every line is
// either received or counted.
func TestForwarderSpoolFull(t *testing.T) {
	pki := newPKI(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nobody listens yet
	remote, _ := spec.ParseRemote("syslog+tls://" + addr)
	sp, err := OpenSpool(t.TempDir(), spec.MinSpoolBytes)
	if err != nil {
		t.Fatal(err)
	}
	fw, err := New(Config{Remote: remote, RootCAs: pki.pool, Hostname: "h", Spool: sp})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fw.Run(ctx) }()
	const total = 3000
	for i := 1; i <= total; i++ {
		fw.Forward("hello", logs.Line{Time: time.Now(), Stream: logs.Stdout, Text: fmt.Sprintf("tick %d", i)})
		if i%100 == 0 {
			time.Sleep(20 * time.Millisecond) // let the writer keep up with the queue
		}
	}
	waitFor(t, func() bool { return fw.Stats().Dropped > 0 })
	if st := fw.Stats(); st.SpoolBytes > spec.MinSpoolBytes {
		t.Errorf("spool holds %d bytes, over its bound %d", st.SpoolBytes, spec.MinSpoolBytes)
	}
	rec := startReceiver(t, addr, pki.cert)
	waitFor(t, func() bool { return checkQuiet(rec.messages(), total) })
	cancel()
	<-done
	rec.stop()
	var dropped, first, received int
	dropRE := regexp.MustCompile(`logs: (\d+) lines dropped \(the spool on perm was full\)$`)
	for _, m := range rec.messages() {
		if d := dropRE.FindStringSubmatch(m); d != nil {
			if received > 0 {
				t.Errorf("the drop note came after %d lines, want it before the lines after the gap", received)
			}
			dropped, _ = strconv.Atoi(d[1])
			continue
		}
		if sm := seqRE.FindStringSubmatch(m); sm != nil {
			n, _ := strconv.Atoi(sm[1])
			if first == 0 {
				first = n
			}
			if n != first+received {
				t.Fatalf("got tick %d, want %d", n, first+received)
			}
			received++
		}
	}
	if dropped == 0 || first != dropped+1 || dropped+received != total || uint64(dropped) != fw.Stats().Dropped {
		t.Errorf("dropped %d (stats %d), then ticks %d..%d; want every one of %d ticks received or counted",
			dropped, fw.Stats().Dropped, first, first+received-1, total)
	}
}

// TestForwardNeverBlocks: with nothing taking lines off the queue (the
// writer stalled), Forward still returns at once; what does not fit is
// counted, and the writer reports the count before the next line.
func TestForwardNeverBlocks(t *testing.T) {
	remote, _ := spec.ParseRemote("syslog+udp://127.0.0.1:9")
	sp, err := OpenSpool(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	fw, err := New(Config{Remote: remote, Spool: sp})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < DefaultQueueLines+10; i++ { // would hang here if Forward waited
		fw.Forward("hello", logs.Line{Time: t0, Stream: logs.Stdout, Text: "x"})
	}
	if d := fw.Stats().Dropped; d != 10 {
		t.Errorf("Stats().Dropped = %d, want the 10 lines that did not fit", d)
	}
	sp.Close()
}

// TestForwarderUDP sends one RFC 5424 message per datagram.
func TestForwarderUDP(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	remote, _ := spec.ParseRemote("syslog+udp://" + pc.LocalAddr().String())
	sp, err := OpenSpool(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	fw, err := New(Config{Remote: remote, Hostname: "h", Spool: sp})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fw.Run(ctx) }()
	for i := 1; i <= 3; i++ {
		fw.Forward("hello", logs.Line{Time: t0, Stream: logs.Stderr, Text: fmt.Sprintf("tick %d", i)})
	}
	buf := make([]byte, 2048)
	for i := 1; i <= 3; i++ {
		pc.SetReadDeadline(time.Now().Add(30 * time.Second))
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf(`<30>1 2026-12-04T18:00:00.123456Z h hello - stderr [ingot@32473 build="" boot=""] tick %d`, i)
		if got := string(buf[:n]); got != want {
			t.Errorf("datagram %d = %q, want %q", i, got, want)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
