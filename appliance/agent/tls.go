package agent

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// ListenTLS wraps a TCP listener in TLS with the agent's self-signed
// certificate (PEM, as mgmt.GenerateCertificate makes it). Clients pin the
// certificate's SHA-256 instead of checking a chain, so nothing else is
// configured; TLS 1.3 only, since both ends are ingot.
func ListenTLS(l net.Listener, certPEM, keyPEM []byte) (net.Listener, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("agent: TLS certificate: %w", err)
	}
	return tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}), nil
}

// tokenCertValidity is the validity of the certificate made around the
// vsock key. Clients check the key, not the dates, so it only has to be
// well-formed; a century keeps an appliance with a wrong clock reachable.
const tokenCertValidity = 100 * 365 * 24 * time.Hour

// ListenTokenTLS wraps the vsock listener in TLS with the agent's
// token-derived key (PEM, PKCS #8 Ed25519, as certpin.TokenKeyPEM makes
// it). The client derives the same public key from its token and accepts
// no other, so it sends the token only to the holder of this key. The
// certificate around the key is made here, self-signed; only its key is
// checked.
func ListenTokenTLS(l net.Listener, keyPEM []byte) (net.Listener, error) {
	b, _ := pem.Decode(keyPEM)
	if b == nil || b.Type != "PRIVATE KEY" {
		return nil, errors.New("agent: vsock key: no PRIVATE KEY PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("agent: vsock key: %w", err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("agent: vsock key: a %T, want Ed25519", k)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "ingot agent"},
		NotBefore:    now.Add(-tokenCertValidity),
		NotAfter:     now.Add(tokenCertValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("agent: vsock certificate: %w", err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}), nil
}
