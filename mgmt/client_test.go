package mgmt

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestNewClientTargets(t *testing.T) {
	tests := []struct {
		target, want string // want: "" for success, else a substring of the error
		opts         []ClientOption
	}{
		{"vsock://3:1024", "", nil},
		{"unix:///run/vm.sock?port=1024", "", nil},
		{"tcp://127.0.0.1:7443", "", nil},
		{"https://10.0.0.2:7443", "fingerprint", nil},
		{"https://10.0.0.2:7443", "64 hex", []ClientOption{WithCertSHA256("abc")}},
		{"https://10.0.0.2:7443", "", []ClientOption{WithCertSHA256(strings.Repeat("ab", 32))}},
		{"https://10.0.0.2", "https://HOST:PORT", []ClientOption{WithCertSHA256(strings.Repeat("ab", 32))}},
		{"unix:///run/vm.sock", "port", nil},
		{"http://x:1", "unknown scheme", nil},
	}
	for _, tt := range tests {
		_, err := NewClient(tt.target, "tok", tt.opts...)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("NewClient(%q) = %v, want success", tt.target, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("NewClient(%q) = %v, want an error mentioning %q", tt.target, err, tt.want)
		}
	}
	if _, err := NewClient("tcp://127.0.0.1:1", " \n"); err == nil {
		t.Error("NewClient with an empty token succeeded")
	}
}

// tlsAgent is an httptest TLS server answering /v1/status for token "tok".
func tlsAgent(t *testing.T) (*httptest.Server, string) {
	t.Helper()
	certPEM, keyPEM, pin, err := GenerateCertificate("hello", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(HeaderAuthorization) != "Bearer tok" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		io.WriteString(w, `{"build_id":"x1","uptime_s":1.5}`)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, pin
}

func TestPinnedTLS(t *testing.T) {
	srv, pin := tlsAgent(t)
	target := "https://" + srv.Listener.Addr().String()
	ctx := context.Background()

	c, err := NewClient(target, "tok", WithCertSHA256(strings.ToUpper(pin)))
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Status(ctx)
	if err != nil || s.BuildID != "x1" || s.Uptime() != 1500*time.Millisecond {
		t.Fatalf("Status over pinned TLS = %+v, %v", s, err)
	}

	wrong := strings.Repeat("0", 64)
	c, err = NewClient(target, "tok", WithCertSHA256(wrong))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status(ctx); err == nil || !strings.Contains(err.Error(), "does not match the pinned") {
		t.Errorf("Status with a wrong pin = %v, want a pin mismatch", err)
	}
}

func TestAPIErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case PathStatus:
			w.WriteHeader(http.StatusUnauthorized)
		case ServicePath("x", ActionRestart):
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":"service \"x\": no such service: not found"}`)
		case PathCommit:
			w.WriteHeader(http.StatusConflict)
			io.WriteString(w, "plain text reason\n")
		case PathRollback:
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	c, err := NewClient("tcp://"+srv.Listener.Addr().String(), "tok")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tests := []struct {
		name string
		call func() error
		kind error
		text string
	}{
		{"401", func() error { _, err := c.Status(ctx); return err }, ErrUnauthorized, "unauthorized: wrong or missing token"},
		{"404 with a JSON body", func() error { _, err := c.Restart(ctx, "x"); return err }, ErrNotFound, `agent: service "x": no such service: not found (HTTP 404)`},
		{"409 with a text body", func() error { _, err := c.Commit(ctx); return err }, ErrConflict, "agent: plain text reason (HTTP 409)"},
		{"500 without a body", func() error { _, err := c.Rollback(ctx); return err }, nil, "agent: Internal Server Error (HTTP 500)"},
	}
	for _, tt := range tests {
		err := tt.call()
		var ae *APIError
		if !errors.As(err, &ae) || err.Error() != tt.text || (tt.kind != nil && !errors.Is(err, tt.kind)) {
			t.Errorf("%s: error %v, want APIError %q of kind %v", tt.name, err, tt.text, tt.kind)
		}
	}
}

func TestUpdateRootChecksEcho(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		io.WriteString(w, `{"slot":"b","bytes":`+strconv.FormatInt(n, 10)+`,"sha256":"`+strings.Repeat("0", 64)+`"}`)
	}))
	defer srv.Close()
	c, err := NewClient("tcp://"+srv.Listener.Addr().String(), "tok")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.UpdateRoot(context.Background(), strings.NewReader("abcd"), 4, strings.Repeat("1", 64), Root{Arch: "amd64"}, nil)
	if err == nil || !strings.Contains(err.Error(), "agent wrote 4 bytes with sha256 000") {
		t.Errorf("UpdateRoot with a wrong echo = %v, want a mismatch error", err)
	}
	if _, err := c.UpdateRoot(context.Background(), strings.NewReader("abcd"), 4, "xyz", Root{Arch: "amd64"}, nil); err == nil {
		t.Error("UpdateRoot with a malformed sha256 succeeded")
	}
}

// TestDialPinned: Client.Dial gives a raw connection, TLS done with the
// pin checked, over which the caller speaks HTTP itself (ingot ui); the
// token is not sent on it.
func TestDialPinned(t *testing.T) {
	srv, pin := tlsAgent(t)
	target := "https://" + srv.Listener.Addr().String()
	ctx := context.Background()
	c, err := NewClient(target, "tok", WithCertSHA256(pin))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := c.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Without a token the fake agent answers 401: Dial added none.
	io.WriteString(conn, "GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	b, _ := io.ReadAll(conn)
	if !strings.HasPrefix(string(b), "HTTP/1.1 401") {
		t.Errorf("raw request over Dial = %q, want the agent's 401", b)
	}
	c, err = NewClient(target, "tok", WithCertSHA256(strings.Repeat("0", 64)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Dial(ctx); err == nil || !strings.Contains(err.Error(), "does not match the pinned") {
		t.Errorf("Dial with a wrong pin = %v, want a pin mismatch", err)
	}
}
