package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
)

// RouteUnauthenticated is the route a request is counted under when it
// was refused before routing (no or wrong token).
const RouteUnauthenticated = "unauthenticated"

// WithRequestCounter calls count once per answered request with the route
// pattern that served it ("GET /v1/status"; "/" for an unknown path;
// RouteUnauthenticated) and the status code sent. count must not block.
func WithRequestCounter(count func(route string, code int)) Option {
	return func(a *Agent) { a.count = count }
}

// counted wraps next so that every request is counted by route and code.
func (a *Agent) counted(next http.Handler) http.Handler {
	if a.count == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &codeWriter{ResponseWriter: w}
		next.ServeHTTP(cw, r)
		route := r.Pattern // set by the ServeMux that routed it
		if route == "" {
			route = RouteUnauthenticated
		}
		code := cw.code
		if code == 0 {
			code = http.StatusOK
		}
		a.count(route, code)
	})
}

// codeWriter remembers the status code a handler sent.
type codeWriter struct {
	http.ResponseWriter
	code int
}

func (w *codeWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *codeWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush and deadlines.
func (w *codeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Protect wraps h (another endpoint of the appliance, such as its
// metrics) in the agent's bearer-token check, its connection-free 401 and
// its request counting, for the token whose SHA-256 is tokenSHA256 (hex):
// checked as the management token is, but another token, so that one
// that travels in clear (metrics over plain HTTP) opens nothing else.
func (a *Agent) Protect(pattern, tokenSHA256 string, h http.Handler) (http.Handler, error) {
	sum, err := hex.DecodeString(tokenSHA256)
	if err != nil || len(sum) != sha256.Size {
		return nil, fmt.Errorf("agent: protect %s: token hash %q is not a hex SHA-256", pattern, tokenSHA256)
	}
	return a.counted(a.authenticateWith(sum, only(pattern, h))), nil
}

// Open wraps h in the agent's request counting only, for an endpoint
// served without a token (metrics with auth: none).
func (a *Agent) Open(pattern string, h http.Handler) http.Handler {
	return a.counted(only(pattern, h))
}

// only routes pattern to h and answers anything else 404, under the
// pattern "/".
func only(pattern string, h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(pattern, h)
	mux.Handle("/", http.NotFoundHandler())
	return mux
}
