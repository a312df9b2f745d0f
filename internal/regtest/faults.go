package regtest

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// Fault is what FaultProxy does to one request for a blob.
type Fault int

const (
	// Pass forwards the request.
	Pass Fault = iota
	// ServerError answers 503 without asking the registry.
	ServerError
	// Reset closes the client's connection without an answer.
	Reset
	// Truncate forwards the answer but cuts its body in half and closes
	// the connection.
	Truncate
	// Corrupt forwards the answer with one byte of its body flipped.
	Corrupt
)

// FaultProxy is a reverse proxy in front of a plain-HTTP registry that
// injects faults into blob downloads (GET /v2/…/blobs/…), chosen per
// request by a function the test sets. Manifests pass untouched.
type FaultProxy struct {
	// Host is the proxy's host:port.
	Host string

	mu     sync.Mutex
	choose func(n int, path string) Fault
	blobs  int
	counts map[Fault]int
}

// StartFaultProxy starts a proxy for the registry at host, stopped when
// the test ends. It passes everything until SetFaults is called.
func StartFaultProxy(t testing.TB, host string) *FaultProxy {
	t.Helper()
	target := &url.URL{Scheme: "http", Host: host}
	p := &FaultProxy{counts: map[Fault]int{}}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = nil
	rp.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		// The registry is down: what a load balancer in front of it says.
		w.WriteHeader(http.StatusBadGateway)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.Host = l.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The registry's redirects and Location headers name the proxy.
		r.Host = host
		f := p.fault(r)
		switch f {
		case ServerError:
			http.Error(w, "injected fault", http.StatusServiceUnavailable)
			return
		case Reset:
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					if tc, ok := c.(*net.TCPConn); ok {
						tc.SetLinger(0)
					}
					c.Close()
					return
				}
			}
			http.Error(w, "injected fault", http.StatusServiceUnavailable)
			return
		case Truncate, Corrupt:
			rec := &bodyRecorder{header: http.Header{}, status: http.StatusOK}
			rp.ServeHTTP(rec, r)
			body := rec.body.Bytes()
			for k, v := range rec.header {
				w.Header()[k] = v
			}
			if f == Corrupt && len(body) > 0 {
				body = append([]byte(nil), body...)
				body[len(body)/2] ^= 0xff
				w.WriteHeader(rec.status)
				w.Write(body)
				return
			}
			w.WriteHeader(rec.status)
			w.Write(body[:len(body)/2])
			if hj, ok := w.(http.Hijacker); ok {
				if c, buf, err := hj.Hijack(); err == nil {
					buf.Flush()
					c.Close()
				}
			}
			return
		}
		rp.ServeHTTP(w, r)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return p
}

// SetFaults sets the function that picks the fault of the nth blob
// request (counting from 1) for path; nil passes everything.
func (p *FaultProxy) SetFaults(choose func(n int, path string) Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.choose = choose
}

// Injected counts the faults of kind f injected so far.
func (p *FaultProxy) Injected(f Fault) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[f]
}

func (p *FaultProxy) fault(r *http.Request) Fault {
	if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/") {
		return Pass
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blobs++
	if p.choose == nil {
		return Pass
	}
	f := p.choose(p.blobs, r.URL.Path)
	p.counts[f]++
	return f
}

// bodyRecorder keeps a proxied answer in memory so it can be altered.
type bodyRecorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bodyRecorder) Header() http.Header         { return b.header }
func (b *bodyRecorder) WriteHeader(status int)      { b.status = status }
func (b *bodyRecorder) Write(p []byte) (int, error) { return b.body.Write(p) }

var _ io.Writer = (*bodyRecorder)(nil)
