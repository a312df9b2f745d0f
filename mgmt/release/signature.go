package release

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ingotdev/ingot/packer/format/releasekey"
)

// The cosign signature format ("simple signing"), as cosign writes and
// reads it: a manifest under SignatureTag whose layers are payloads of
// SimpleSigningMediaType, each with its base64 ASN.1 ECDSA signature over
// the payload's SHA-256 in SignatureAnnotation.
const (
	SimpleSigningMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
	SignatureAnnotation    = "dev.cosignproject.cosign/signature"
	// SignatureType is the payload's critical.type.
	SignatureType = "cosign container image signature"
)

// Payload is the signed document: it names the repository and the digest
// of the manifest (here: the release's index) it vouches for.
type Payload struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
	Optional map[string]any `json:"optional"`
}

// NewPayload returns the payload that signs digest in repository repo
// (the repository's full name, e.g. "registry.example:5000/fleet/app"),
// encoded as cosign encodes it.
func NewPayload(repo string, digest v1.Hash) ([]byte, error) {
	var p Payload
	p.Critical.Identity.DockerReference = repo
	p.Critical.Image.DockerManifestDigest = digest.String()
	p.Critical.Type = SignatureType
	return json.Marshal(p)
}

// SignatureTag returns the tag of the signature of the manifest digest:
// "sha256-<hex>.sig".
func SignatureTag(digest v1.Hash) string {
	return digest.Algorithm + "-" + digest.Hex + ".sig"
}

// SignPayload signs payload as cosign does: ECDSA over its SHA-256, ASN.1
// encoded, returned as base64 for SignatureAnnotation.
func SignPayload(rand interface{ Read([]byte) (int, error) }, key *ecdsa.PrivateKey, payload []byte) (string, error) {
	sum := sha256.Sum256(payload)
	sig, err := ecdsa.SignASN1(rand, key, sum[:])
	if err != nil {
		return "", fmt.Errorf("release: sign: %w", err)
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// checkPayload checks one signature layer's payload and signature: the
// signature must verify with one of keys, and the payload must be a cosign
// simple-signing payload for want.
func checkPayload(payload []byte, b64sig string, keys []*ecdsa.PublicKey, want v1.Hash) error {
	if b64sig == "" {
		return fmt.Errorf("no %s annotation", SignatureAnnotation)
	}
	sig, err := base64.StdEncoding.DecodeString(b64sig)
	if err != nil {
		return fmt.Errorf("annotation %s: not base64: %w", SignatureAnnotation, err)
	}
	sum := sha256.Sum256(payload)
	verified := false
	for _, k := range keys {
		if ecdsa.VerifyASN1(k, sum[:], sig) {
			verified = true
			break
		}
	}
	if !verified {
		return fmt.Errorf("the signature does not verify with any of the %d configured public keys", len(keys))
	}
	var p Payload
	if err := json.Unmarshal(payload, &p); err != nil {
		return fmt.Errorf("signed payload: %w", err)
	}
	if p.Critical.Type != SignatureType {
		return fmt.Errorf("signed payload: critical.type is %q, want %q", p.Critical.Type, SignatureType)
	}
	if got := p.Critical.Image.DockerManifestDigest; got != want.String() {
		return fmt.Errorf("signed payload: critical.image.docker-manifest-digest is %q, not the release's %s", got, want)
	}
	return nil
}

// ParsePublicKey reads a public key file (releasekey.Parse); name is for
// errors.
func ParsePublicKey(data []byte, name string) (*ecdsa.PublicKey, error) {
	k, err := releasekey.Parse(data, name)
	if err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	return k, nil
}

// MarshalPublicKey encodes k as a public key file (releasekey.Marshal).
func MarshalPublicKey(k *ecdsa.PublicKey) ([]byte, error) { return releasekey.Marshal(k) }

// LoadPublicKeys reads the public key files at paths.
func LoadPublicKeys(paths ...string) ([]*ecdsa.PublicKey, error) {
	if len(paths) == 0 {
		return nil, errors.New("release: no public keys given")
	}
	var keys []*ecdsa.PublicKey
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("release: %w", err)
		}
		k, err := ParsePublicKey(data, p)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}
