// Package releasekey is the format of a release signing public key: a PEM
// "PUBLIC KEY" block holding a PKIX ECDSA P-256 key, as `ingot key new`
// and `cosign generate-key-pair` write it. The builder checks the keys of
// ingot.yaml's update: {keys: [...]} with it and puts them into the image
// under spec.ReleaseKeysDir; the release verifier (mgmt/release) and later
// the appliance read them with it.
package releasekey

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"strings"
)

// PEMType is the PEM block type of a public key file.
const PEMType = "PUBLIC KEY"

// MaxFileBytes bounds a public key file (a P-256 key is 178 bytes).
const MaxFileBytes = 4 << 10

// Parse reads a public key file's content; name is for errors.
func Parse(data []byte, name string) (*ecdsa.PublicKey, error) {
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("public key %s: %d bytes, more than a key file's %d", name, len(data), MaxFileBytes)
	}
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("public key %s: no PEM block", name)
	}
	if block.Type != PEMType {
		return nil, fmt.Errorf("public key %s: PEM block %q, want %q", name, block.Type, PEMType)
	}
	if len(strings.TrimSpace(string(rest))) != 0 {
		return nil, fmt.Errorf("public key %s: data after the PEM block", name)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key %s: %w", name, err)
	}
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key %s: a %T key; ingot verifies ECDSA P-256 keys", name, pub)
	}
	if k.Curve != elliptic.P256() {
		return nil, fmt.Errorf("public key %s: curve %s; ingot verifies ECDSA P-256 keys", name, k.Curve.Params().Name)
	}
	return k, nil
}

// Marshal encodes k as a public key file.
func Marshal(k *ecdsa.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: PEMType, Bytes: der}), nil
}

// Fingerprint is the lowercase hex SHA-256 of k's PKIX encoding: the
// name of its file in the image.
func Fingerprint(k *ecdsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return "", fmt.Errorf("public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}
