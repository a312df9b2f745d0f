package builder

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/packer/format/certpin"
)

// tlsIdentity is the management listener's certificate and key as they go
// into the image, and the certificate's pin for appliance.json.
type tlsIdentity struct {
	certPEM, keyPEM []byte
	pin             string
}

// loadTLS reads the certificate and key the management TCP listener of
// target serves, or returns nil when target has no TCP listener. The pair
// must match, so a mix-up is found at build time, not by a client that
// cannot connect to a device in the field.
func loadTLS(cfg *config.Config, target config.Target) (*tlsIdentity, error) {
	addr := cfg.ManagementTCP(target)
	if addr == "" {
		return nil, nil
	}
	m := cfg.Management
	certPEM, err := os.ReadFile(m.TLSCertFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("builder: management over TCP (%s) on %s needs a TLS certificate, and %s does not exist (`ingot cert -C %s` writes one; or set management.tls_cert)", addr, target, m.TLSCertFile, cfg.Dir)
	}
	if err != nil {
		return nil, fmt.Errorf("builder: management TLS certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(m.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("builder: management TLS key (management.tls_key): %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("builder: management TLS certificate %s and key %s: %w", m.TLSCertFile, m.TLSKeyFile, err)
	}
	// The served certificate is the first one, which is what clients pin.
	return &tlsIdentity{certPEM: certPEM, keyPEM: keyPEM, pin: certpin.OfDER(pair.Certificate[0])}, nil
}

// vsockKey is the key the agent serves TLS with on vsock, derived from the
// management token (certpin.TokenKey), or nil when target has no vsock.
// Every VM image carries one: a client that holds the token checks the
// agent's key before it sends the token, so a process that took the
// agent's vsock port never sees it.
func vsockKey(cfg *config.Config, target config.Target) ([]byte, error) {
	if !target.IsVM() || cfg.Management.VsockPort == 0 {
		return nil, nil
	}
	tok, err := cfg.Token()
	if err != nil {
		return nil, fmt.Errorf("builder: %w", err)
	}
	key, err := certpin.TokenKeyPEM(tok)
	if err != nil {
		return nil, fmt.Errorf("builder: management vsock key: %w", err)
	}
	return key, nil
}

// loadLogsCA reads logs.ca, the CA certificate the syslog receiver's
// certificate must chain to, and checks that it holds at least one
// certificate; nil without one.
func loadLogsCA(cfg *config.Config) ([]byte, error) {
	if cfg.Logs.CAFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(cfg.Logs.CAFile)
	if err != nil {
		return nil, fmt.Errorf("builder: logs.ca: %w", err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("builder: logs.ca: %s holds no PEM certificate", cfg.Logs.CAFile)
	}
	return b, nil
}
