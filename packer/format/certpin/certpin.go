// Package certpin is the one definition of the management certificate's
// pin: the lowercase hex SHA-256 of the certificate's DER encoding. The
// builder records it, the CLI and the update client check TLS peers
// against it, and the agent serves the certificate it names. On vsock,
// where no certificate is configured, the agent's key is derived from the
// management token instead (TokenKey), so a client can check it too.
package certpin

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
)

// OfDER returns the pin of a DER-encoded certificate.
func OfDER(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// OfPEM returns the pin of the first CERTIFICATE block in PEM data, after
// checking that the block parses as a certificate.
func OfPEM(certPEM []byte) (string, error) {
	for {
		var b *pem.Block
		b, certPEM = pem.Decode(certPEM)
		if b == nil {
			return "", errors.New("certpin: no CERTIFICATE block in the PEM data")
		}
		if b.Type == "CERTIFICATE" {
			if _, err := x509.ParseCertificate(b.Bytes); err != nil {
				return "", fmt.Errorf("certpin: certificate: %w", err)
			}
			return OfDER(b.Bytes), nil
		}
	}
}
