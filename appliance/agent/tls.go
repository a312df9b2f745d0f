package agent

import (
	"crypto/tls"
	"fmt"
	"net"
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
