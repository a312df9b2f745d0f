// Package regtest starts a real OCI registry for tests: Debian's
// docker-registry (distribution 2.8, installed by scripts/setup.sh) on a
// loopback port with its storage in a temporary directory, stopped when
// the test ends; over plain HTTP (Start, StartHTTP) or over TLS with
// htpasswd basic authentication (StartTLS). A test can stop the registry
// and start it again on the same port with the same storage (Stop,
// Restart), and reach its blob files (BlobPath). Programs that are not
// tests (bench/fleet) start one with Launch.
package regtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Binary is the registry's executable, as the Debian package installs it.
const Binary = "docker-registry"

// readyWait bounds how long the registry may take to answer /v2/; it
// only guards against a registry that never comes up.
const readyWait = 2 * time.Minute

// Registry is a running registry.
type Registry struct {
	// Host is host:port.
	Host string
	// Storage is the registry's storage directory (its filesystem
	// driver's rootdirectory).
	Storage string
	// With StartTLS: the CA that signed the server's certificate (PEM
	// file, and a directory holding it as ca.crt for skopeo's
	// --cert-dir), its pool, and the user and password.
	CAFile, CertDir string
	CAPool          *x509.CertPool
	User, Password  string

	dir, confPath, logPath string
	secure                 bool
	client                 *http.Client

	mu   sync.Mutex
	proc *process // nil while stopped
}

// process is one run of the registry's executable.
type process struct {
	cmd     *exec.Cmd
	log     *os.File
	exited  chan struct{}
	waitErr error
}

// Start runs the registry over plain HTTP on a free loopback port and
// returns its host:port.
func Start(t testing.TB) string {
	t.Helper()
	return StartHTTP(t).Host
}

// StartHTTP runs the registry over plain HTTP on a free loopback port.
func StartHTTP(t testing.TB) *Registry {
	t.Helper()
	return start(t, false)
}

// StartTLS runs the registry over TLS (a certificate for 127.0.0.1 from a
// new CA) with htpasswd basic authentication of one user.
func StartTLS(t testing.TB) *Registry {
	t.Helper()
	return start(t, true)
}

func start(t testing.TB, secure bool) *Registry {
	t.Helper()
	if _, err := exec.LookPath(Binary); err != nil {
		t.Fatalf("%s not found (scripts/setup.sh installs the docker-registry package): %v", Binary, err)
	}
	r, err := configure(t.TempDir(), secure)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.Stop()
		if t.Failed() {
			if b, err := os.ReadFile(r.logPath); err == nil {
				t.Logf("%s log:\n%s", Binary, b)
			}
		}
	})
	if err := r.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r
}

// Launch runs the registry over plain HTTP on a free loopback port with
// its configuration, log and storage in dir, for programs that are not
// tests; Stop ends it.
func Launch(ctx context.Context, dir string) (*Registry, error) {
	if _, err := exec.LookPath(Binary); err != nil {
		return nil, fmt.Errorf("%s not found (scripts/setup.sh installs the docker-registry package): %w", Binary, err)
	}
	r, err := configure(dir, false)
	if err != nil {
		return nil, err
	}
	if err := r.Restart(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// configure picks a free loopback port and writes the registry's
// configuration (and, when secure, its certificates and htpasswd file)
// into dir.
func configure(dir string, secure bool) (*Registry, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("regtest: %w", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("regtest: %w", err)
	}
	r := &Registry{Host: l.Addr().String(), Storage: filepath.Join(dir, "storage"), dir: dir, secure: secure,
		confPath: filepath.Join(dir, "config.yml"), logPath: filepath.Join(dir, "registry.log"), client: &http.Client{}}
	l.Close()
	conf := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, strconv.Quote(r.Storage), r.Host)
	if secure {
		certFile, keyFile, err := writeCerts(r, dir)
		if err != nil {
			return nil, fmt.Errorf("regtest: certificates: %w", err)
		}
		r.User, r.Password = "ingot", "registry password"
		hash, err := bcrypt.GenerateFromPassword([]byte(r.Password), bcrypt.MinCost)
		if err != nil {
			return nil, fmt.Errorf("regtest: htpasswd: %w", err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(r.User+":"+string(hash)+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("regtest: %w", err)
		}
		conf += fmt.Sprintf(`  tls:
    certificate: %s
    key: %s
auth:
  htpasswd:
    realm: regtest
    path: %s
`, strconv.Quote(certFile), strconv.Quote(keyFile), strconv.Quote(htpasswd))
		r.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: r.CAPool}}}
	}
	if err := os.WriteFile(r.confPath, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("regtest: %w", err)
	}
	return r, nil
}

// Restart starts the registry again after Stop, on the same port with the
// same storage, and waits until it answers; it does nothing while the
// registry runs.
func (r *Registry) Restart(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil {
		return nil
	}
	logFile, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("regtest: %w", err)
	}
	p := &process{cmd: exec.Command(Binary, "serve", r.confPath), log: logFile, exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("regtest: start %s: %w", Binary, err)
	}
	go func() { p.waitErr = p.cmd.Wait(); close(p.exited) }()
	if err := r.waitReady(ctx, p); err != nil {
		p.stop()
		b, _ := os.ReadFile(r.logPath)
		return fmt.Errorf("regtest: %w\n%s", err, b)
	}
	r.proc = p
	return nil
}

// waitReady waits until the registry answers GET /v2/ (with 401 when it
// asks for credentials).
func (r *Registry) waitReady(ctx context.Context, p *process) error {
	scheme := "http"
	if r.secure {
		scheme = "https"
	}
	ctx, cancel := context.WithTimeout(ctx, readyWait)
	defer cancel()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+r.Host+"/v2/", nil)
		if err != nil {
			return err
		}
		resp, err := r.client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || (r.secure && resp.StatusCode == http.StatusUnauthorized) {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited before it served: %v", Binary, p.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer %s://%s/v2/ within %s (last: %v)", Binary, scheme, r.Host, readyWait, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop kills the registry, as a crash or a pulled plug would, and waits
// for it to exit; Restart starts it again. It does nothing while the
// registry is stopped.
func (r *Registry) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil {
		r.proc.stop()
		r.proc = nil
	}
}

func (p *process) stop() {
	p.cmd.Process.Kill()
	<-p.exited
	p.log.Close()
}

// BlobPath is the file in which the registry's storage holds the blob
// with digest d ("sha256:<hex>"), as distribution's filesystem driver
// lays it out.
func (r *Registry) BlobPath(d string) (string, error) {
	hexDigest, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hexDigest) != 64 {
		return "", errors.New("regtest: blob digest " + strconv.Quote(d) + ": want sha256:<64 hex digits>")
	}
	return filepath.Join(r.Storage, "docker", "registry", "v2", "blobs", "sha256", hexDigest[:2], hexDigest, "data"), nil
}

// writeCerts makes a CA and a server certificate for 127.0.0.1 signed by
// it, writes them into dir and fills in r's CA fields.
func writeCerts(r *Registry, dir string) (certFile, keyFile string, err error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "regtest CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return "", "", err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return "", "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return "", "", err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	r.CertDir = filepath.Join(dir, "certs")
	r.CAFile = filepath.Join(r.CertDir, "ca.crt")
	certFile, keyFile = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if err := os.MkdirAll(r.CertDir, 0o755); err != nil {
		return "", "", err
	}
	for path, data := range map[string][]byte{
		r.CAFile: caPEM,
		certFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyFile:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return "", "", err
		}
	}
	r.CAPool = x509.NewCertPool()
	r.CAPool.AddCert(ca)
	return certFile, keyFile, nil
}
