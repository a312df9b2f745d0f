package mgmt

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ingotdev/ingot/packer/format/certpin"
)

// vsockToken is the token the clients below hold.
const vsockToken = "0123456789abcdef0123456789abcdef-vsock-auth"

// hybridImpostor stands in for the VMM's hybrid vsock socket with
// whatever holds the guest's port behind it: it answers "CONNECT n" with
// "OK n" and then hands the stream to serve. It keeps every byte a
// client sent, so a test can look for the token in them.
type hybridImpostor struct {
	l        net.Listener
	mu       sync.Mutex
	received bytes.Buffer
}

func newHybridImpostor(t *testing.T, wrap func(net.Listener) net.Listener) (*hybridImpostor, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "vsock.sock")
	ul, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	h := &hybridImpostor{l: ul}
	inner := &handshakeListener{Listener: ul, h: h}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, `{"name":"impostor","build_id":"fake"}`)
		}),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0), // the refused handshakes
	}
	go srv.Serve(wrap(inner))
	t.Cleanup(func() { srv.Close() })
	return h, "unix://" + sock + "?port=1024"
}

func (h *hybridImpostor) saw(s string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return bytes.Contains(h.received.Bytes(), []byte(s))
}

// handshakeListener answers the hybrid vsock handshake and records what
// the client sends afterwards.
type handshakeListener struct {
	net.Listener
	h *hybridImpostor
}

func (l *handshakeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "CONNECT ") {
		c.Close()
		return l.Accept()
	}
	fmt.Fprintf(c, "OK 1024\n")
	return &recordingConn{Conn: c, r: br, h: l.h}, nil
}

type recordingConn struct {
	net.Conn
	r io.Reader
	h *hybridImpostor
}

func (c *recordingConn) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.h.mu.Lock()
	c.h.received.Write(b[:n])
	c.h.mu.Unlock()
	return n, err
}

// tlsWithKey serves TLS with a self-signed certificate around key.
func tlsWithKey(t *testing.T, key ed25519.PrivateKey) func(net.Listener) net.Listener {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ingot agent"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	return func(l net.Listener) net.Listener { return tls.NewListener(l, cfg) }
}

// TestVsockImpostor performs issue 12's attack 1 from the client's side: a
// process in the guest binds the agent's vsock port before the agent and
// waits for `ingot status`. Whatever it speaks, plain HTTP or TLS with a
// key of its own, the client must refuse before the token leaves; only
// the holder of the token-derived key gets a request.
func TestVsockImpostor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	otherKey, err := certpin.TokenKey("not-the-token-but-a-key-the-impostor-made")
	if err != nil {
		t.Fatal(err)
	}
	_, forged, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		wrap func(net.Listener) net.Listener
	}{
		{"plain HTTP", func(l net.Listener) net.Listener { return l }},
		{"TLS with another token's key", tlsWithKey(t, otherKey)},
		{"TLS with a random key", tlsWithKey(t, forged)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			imp, target := newHybridImpostor(t, tc.wrap)
			c, err := NewClient(target, vsockToken)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			st, err := c.Status(ctx)
			if err == nil {
				t.Errorf("Status from an impostor = %+v, nil; want the agent refused", st)
			}
			if tc.name != "plain HTTP" && !errors.Is(err, ErrUnauthorized) {
				t.Errorf("Status from an impostor with a key = %v, want ErrUnauthorized", err)
			}
			if imp.saw(vsockToken) || imp.saw(BearerPrefix) {
				t.Errorf("the impostor on the agent's port received the token (err %v)", err)
			}
		})
	}

	// The agent's own key: the request, and the token, go through.
	key, err := certpin.TokenKey(vsockToken)
	if err != nil {
		t.Fatal(err)
	}
	agent, target := newHybridImpostor(t, tlsWithKey(t, key))
	c, err := NewClient(target, vsockToken+"\n")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if st, err := c.Status(ctx); err != nil || st.BuildID != "fake" {
		t.Errorf("Status from the key holder = %+v, %v; want its answer", st, err)
	}
	if agent.saw(vsockToken) {
		t.Error("the token went over the hybrid socket in the clear")
	}
}
