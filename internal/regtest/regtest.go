// Package regtest starts a real OCI registry for tests: Debian's
// docker-registry (distribution 2.8, installed by scripts/setup.sh) on a
// loopback port with its storage in a temporary directory, stopped when
// the test ends; over plain HTTP (Start) or over TLS with htpasswd basic
// authentication (StartTLS).
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
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
	// With StartTLS: the CA that signed the server's certificate (PEM
	// file, and a directory holding it as ca.crt for skopeo's
	// --cert-dir), its pool, and the user and password.
	CAFile, CertDir string
	CAPool          *x509.CertPool
	User, Password  string
}

// Start runs the registry over plain HTTP on a free loopback port and
// returns its host:port.
func Start(t testing.TB) string {
	t.Helper()
	return start(t, false).Host
}

// StartTLS runs the registry over TLS (a certificate for 127.0.0.1 from a
// new CA) with htpasswd basic authentication of one user.
func StartTLS(t testing.TB) *Registry {
	t.Helper()
	return start(t, true)
}

func start(t testing.TB, secure bool) *Registry {
	if _, err := exec.LookPath(Binary); err != nil {
		t.Fatalf("%s not found (scripts/setup.sh installs the docker-registry package): %v", Binary, err)
	}
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Registry{Host: l.Addr().String()}
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
`, strconv.Quote(filepath.Join(dir, "storage")), r.Host)
	client := http.DefaultClient
	if secure {
		certFile, keyFile := writeCerts(t, r, dir)
		r.User, r.Password = "ingot", "registry password"
		hash, err := bcrypt.GenerateFromPassword([]byte(r.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(r.User+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		conf += fmt.Sprintf(`  tls:
    certificate: %s
    key: %s
auth:
  htpasswd:
    realm: regtest
    path: %s
`, strconv.Quote(certFile), strconv.Quote(keyFile), strconv.Quote(htpasswd))
		client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: r.CAPool}}}
	}
	confPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(Binary, "serve", confPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", Binary, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logFile.Name()); err == nil {
				t.Logf("%s log:\n%s", Binary, b)
			}
		}
	})
	scheme := "http"
	if secure {
		scheme = "https"
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyWait)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+r.Host+"/v2/", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			// 401: up, and asking for the credentials.
			if resp.StatusCode == http.StatusOK || (secure && resp.StatusCode == http.StatusUnauthorized) {
				return r
			}
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(logFile.Name())
			t.Fatalf("%s exited before it served: %v\n%s", Binary, waitErr, b)
		case <-ctx.Done():
			t.Fatalf("%s did not answer %s://%s/v2/ within %s (last: %v)", Binary, scheme, r.Host, readyWait, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// writeCerts makes a CA and a server certificate for 127.0.0.1 signed by
// it, writes them into dir and fills in r's CA fields.
func writeCerts(t testing.TB, r *Registry, dir string) (certFile, keyFile string) {
	t.Helper()
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "regtest CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	r.CertDir = filepath.Join(dir, "certs")
	r.CAFile = filepath.Join(r.CertDir, "ca.crt")
	certFile, keyFile = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if err := os.MkdirAll(r.CertDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for path, data := range map[string][]byte{
		r.CAFile: caPEM,
		certFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyFile:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r.CAPool = x509.NewCertPool()
	r.CAPool.AddCert(ca)
	return certFile, keyFile
}
