package pullrig

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
)

// CountingProxy is a reverse proxy in front of a plain-HTTP registry that
// counts the bytes of the answers it served, the requests, the GET /v2/
// pings and the registry's error answers (429 and 5xx).
type CountingProxy struct {
	// Host is the proxy's host:port; devices pull from Host/repo:tag.
	Host                              string
	srv                               *http.Server
	served, requests, pings, errorAns atomic.Int64
}

// Counts is what a CountingProxy counted since its last Reset.
type Counts struct {
	// Served is the bytes of the answers' bodies: manifests, blobs and
	// error bodies.
	Served   int64
	Requests int64
	// Pings counts GET /v2/: a client's check of the API version and of
	// how to authenticate.
	Pings int64
	// ErrorAnswers counts answers 429 and 5xx.
	ErrorAnswers int64
}

// StartCountingProxy serves a counting reverse proxy to the registry at
// registryHost on a free loopback port until Close.
func StartCountingProxy(registryHost string) (*CountingProxy, error) {
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: registryHost})
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// One idle connection to the registry per device at most: a fleet
	// pulls at once, and connections closed after each request would
	// pile up in TIME_WAIT.
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 1024, 1024
	rp.Transport = tr
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("pullrig: counting proxy: %w", err)
	}
	p := &CountingProxy{Host: l.Addr().String()}
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		if r.URL.Path == "/v2/" {
			p.pings.Add(1)
		}
		r.Host = registryHost
		rp.ServeHTTP(&countingWriter{ResponseWriter: w, p: p}, r)
	})}
	go p.srv.Serve(l)
	return p, nil
}

// Reset sets every count to zero.
func (p *CountingProxy) Reset() {
	p.served.Store(0)
	p.requests.Store(0)
	p.errorAns.Store(0)
	p.pings.Store(0)
}

// Counts returns the counts since the last Reset.
func (p *CountingProxy) Counts() Counts {
	return Counts{Served: p.served.Load(), Requests: p.requests.Load(), Pings: p.pings.Load(), ErrorAnswers: p.errorAns.Load()}
}

// Close stops the proxy.
func (p *CountingProxy) Close() error { return p.srv.Close() }

type countingWriter struct {
	http.ResponseWriter
	p *CountingProxy
}

func (w *countingWriter) WriteHeader(status int) {
	if status == http.StatusTooManyRequests || status >= 500 {
		w.p.errorAns.Add(1)
	}
	w.ResponseWriter.WriteHeader(status)
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *countingWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.p.served.Add(int64(n))
	return n, err
}
