package manage

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ingotdev/ingot/appliance/agent"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/certpin"
	"github.com/ingotdev/ingot/packer/format/spec"
)

const testToken = "0123456789abcdef0123456789abcdef-manage"

type statusInfo struct{}

func (statusInfo) Status() mgmt.Status { return mgmt.Status{BuildID: "b-1"} }

// fakeVsock hands out loopback TCP listeners for "vsock ports": the first
// busy calls fail as a port another process holds would (EADDRINUSE).
type fakeVsock struct {
	mu    sync.Mutex
	busy  int
	calls int
	addr  string
	last  net.Listener
}

func (f *fakeVsock) listen(port uint32) (listener, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.busy > 0 {
		f.busy--
		return nil, fmt.Errorf("vsock listen on port %d: %w", port, syscall.EADDRINUSE)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f.addr, f.last = l.Addr().String(), l
	return l, nil
}

func (f *fakeVsock) state() (calls int, addr string, last net.Listener) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls, f.addr, f.last
}

func testOptions(t *testing.T, f *fakeVsock) options {
	t.Helper()
	key, err := certpin.TokenKeyPEM(testToken)
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(t.TempDir(), "vsock-key.pem")
	if err := os.WriteFile(keyPath, key, 0o600); err != nil {
		t.Fatal(err)
	}
	return options{listen: f.listen, vsockKeyPath: keyPath}
}

// status asks the agent behind f's current listener, checking the key as
// mgmt's client does.
func status(f *fakeVsock) (mgmt.Status, error) {
	key, err := certpin.TokenKey(testToken)
	if err != nil {
		return mgmt.Status{}, err
	}
	pub := key.Public()
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			_, addr, _ := f.state()
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, VerifyConnection: func(cs tls.ConnectionState) error {
			if k, ok := cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey); !ok || !k.Equal(pub) {
				return fmt.Errorf("not the token's key")
			}
			return nil
		}},
	}
	req, _ := http.NewRequest(http.MethodGet, "https://agent"+mgmt.PathStatus, nil)
	req.Header.Set(mgmt.HeaderAuthorization, mgmt.BearerPrefix+testToken)
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return mgmt.Status{}, err
	}
	defer resp.Body.Close()
	var st mgmt.Status
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// TestBindAllBindsAtSetup checks that the vsock endpoint is bound, with
// TLS, when the setup returns: stage1 starts the services only after that
// (stage1's TestSetupBeforeServices), so none can hold the port first.
func TestBindAllBindsAtSetup(t *testing.T) {
	f := &fakeVsock{}
	eps, err := testOptions(t, f).endpoints(spec.Management{VsockPort: 1024})
	if err != nil {
		t.Fatal(err)
	}
	if bound(eps) {
		t.Fatal("endpoints bound before bindAll")
	}
	bindAll(eps, t.Logf)
	if !bound(eps) {
		t.Fatal("the vsock endpoint is not bound after bindAll")
	}
	if _, ok := eps[0].current().(interface{ Addr() net.Addr }); !ok || eps[0].current() == f.last {
		t.Error("the vsock listener is not wrapped in TLS")
	}
	eps[0].current().Close()
}

// TestServeBindsAgain performs the rest of attack 1 on the agent's side:
// the port is held by someone else when the agent first binds, and later
// the bound listener fails. Each time the agent binds again, instead of
// giving up for the rest of the boot.
func TestServeBindsAgain(t *testing.T) {
	f := &fakeVsock{busy: 2}
	eps, err := testOptions(t, f).endpoints(spec.Management{VsockPort: 1024})
	if err != nil {
		t.Fatal(err)
	}
	bindAll(eps, t.Logf)
	if bound(eps) {
		t.Fatal("bound although the port was busy")
	}
	sum := sha256.Sum256([]byte(testToken))
	a, err := agent.New(agent.Deps{Info: statusInfo{}}, hex.EncodeToString(sum[:]))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		serve(ctx, a, eps[0], t.Logf)
	}()
	defer func() {
		cancel()
		<-done
	}()

	waitStatus := func(what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			st, err := status(f)
			if err == nil && st.BuildID == "b-1" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no agent within 10s: %v", what, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitStatus("after two busy binds")
	calls, _, first := f.state()
	if calls != 3 {
		t.Errorf("listen calls = %d, want 3 (two refused, one bound)", calls)
	}

	// The listener fails under the agent: it binds a new one.
	first.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, _, l := f.state(); l != first {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the agent did not bind again after its listener failed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	waitStatus("after the listener failed")
	if !bound(eps) {
		t.Error("bound = false while serving")
	}
}
