package certpin

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
)

// tokenKeyInfo separates the token-derived key from any other use of the
// token; a new derivation gets a new label.
const tokenKeyInfo = "ingot/agent-vsock-key/v1"

// TokenKey derives the agent's vsock identity from the management token
// (surrounding whitespace trimmed, as in the token file): an Ed25519 key
// from HKDF-SHA256 of the token. The builder puts the private key into
// the image (root only), the agent serves TLS with it on vsock, and a
// client that holds the token checks the agent's public key before it
// sends the token. A process that binds the agent's vsock port first has
// no such key, so it never sees the token. The key reveals nothing of the
// token beyond what its SHA-256 in appliance.json already does.
func TokenKey(token string) (ed25519.PrivateKey, error) {
	token = strings.TrimSpace(token)
	if token == "" {
		return nil, fmt.Errorf("certpin: empty management token")
	}
	seed, err := hkdf.Key(sha256.New, []byte(token), nil, tokenKeyInfo, ed25519.SeedSize)
	if err != nil {
		return nil, fmt.Errorf("certpin: token key: %w", err)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// TokenKeyPEM is TokenKey as a PKCS #8 "PRIVATE KEY" PEM block, the form
// the image holds.
func TokenKeyPEM(token string) ([]byte, error) {
	key, err := TokenKey(token)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("certpin: token key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
