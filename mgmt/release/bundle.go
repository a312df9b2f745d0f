package release

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// The Sigstore bundle format, as `cosign sign --new-bundle-format` writes
// it for a container image (cosign 2.6.5, run by mgmt/publish's interop
// tests): an OCI referrer of the signed manifest (found through the
// referrers API or its fallback tag sha256-<hex>) whose artifactType and
// one layer are BundleMediaType. The layer is a bundle whose DSSE
// envelope carries an in-toto statement of CosignSignPredicateType naming
// the signed digest as its subject; the envelope's signature is ECDSA
// over the SHA-256 of the envelope's pre-authentication encoding
// (dssePAE).
const (
	BundleMediaType = "application/vnd.dev.sigstore.bundle.v0.3+json"
	// InTotoPayloadType is the DSSE payloadType of an in-toto statement.
	InTotoPayloadType = "application/vnd.in-toto+json"
	// InTotoStatementType is the statement's _type.
	InTotoStatementType = "https://in-toto.io/Statement/v1"
	// CosignSignPredicateType is the predicateType of a plain signature;
	// any other predicate is an attestation about the image, not a
	// signature of it, and is not accepted as one.
	CosignSignPredicateType = "https://sigstore.dev/cosign/sign/v1"
)

// Bounds on bundles, before they are parsed.
const (
	// MaxBundleBytes bounds a bundle blob (a Rekor entry with its
	// inclusion proof adds a few KiB to the envelope).
	MaxBundleBytes = 256 << 10
	// MaxBundles bounds how many bundle referrers, and how many
	// signatures in one envelope, are tried (as MaxSignatureLayers).
	MaxBundles = 16
)

// sigstoreBundle is the part of a Sigstore bundle that Verify reads. The
// verification material (a key hint, a certificate, transparency log
// entries) is not used: the signature must verify with one of the
// configured keys, which is all a key-based cosign verification checks.
type sigstoreBundle struct {
	MediaType        string          `json:"mediaType"`
	DSSEEnvelope     *dsseEnvelope   `json:"dsseEnvelope"`
	MessageSignature json.RawMessage `json:"messageSignature"`
}

// dsseEnvelope is a DSSE envelope; []byte fields are standard base64 in
// JSON, as the bundle's protobuf JSON encoding writes them.
type dsseEnvelope struct {
	Payload     []byte `json:"payload"`
	PayloadType string `json:"payloadType"`
	Signatures  []struct {
		Sig   []byte `json:"sig"`
		KeyID string `json:"keyid"`
	} `json:"signatures"`
}

// inTotoStatement is the signed statement of a bundle.
type inTotoStatement struct {
	Type    string `json:"_type"`
	Subject []struct {
		Name   string            `json:"name"`
		Digest map[string]string `json:"digest"`
	} `json:"subject"`
	PredicateType string `json:"predicateType"`
}

// dssePAE is DSSE's pre-authentication encoding of a payload, the bytes
// an envelope's signatures sign: "DSSEv1 <len type> <type> <len body> <body>".
func dssePAE(payloadType string, payload []byte) []byte {
	b := []byte("DSSEv1 " + strconv.Itoa(len(payloadType)) + " " + payloadType + " " + strconv.Itoa(len(payload)) + " ")
	return append(b, payload...)
}

// checkBundle checks one Sigstore bundle: one of its envelope's
// signatures must verify with one of keys, and only then is the statement
// read, which must be a cosign signature (not another attestation) with
// want among its subjects.
func checkBundle(data []byte, keys []*ecdsa.PublicKey, want v1.Hash) error {
	var b sigstoreBundle
	if err := json.Unmarshal(data, &b); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	if b.MediaType != BundleMediaType {
		return fmt.Errorf("bundle: mediaType %q, want %s", b.MediaType, BundleMediaType)
	}
	if b.DSSEEnvelope == nil {
		if b.MessageSignature != nil {
			return errors.New("bundle: a messageSignature (a signed blob), not a DSSE envelope of an image signature")
		}
		return errors.New("bundle: no dsseEnvelope")
	}
	env := b.DSSEEnvelope
	if env.PayloadType != InTotoPayloadType {
		return fmt.Errorf("bundle: dsseEnvelope.payloadType %q, want %s", env.PayloadType, InTotoPayloadType)
	}
	if len(env.Signatures) == 0 {
		return errors.New("bundle: dsseEnvelope has no signatures")
	}
	if len(env.Signatures) > MaxBundles {
		return fmt.Errorf("bundle: dsseEnvelope has %d signatures, more than %d", len(env.Signatures), MaxBundles)
	}
	sum := sha256.Sum256(dssePAE(env.PayloadType, env.Payload))
	verified := false
	for _, s := range env.Signatures {
		for _, k := range keys {
			verified = verified || ecdsa.VerifyASN1(k, sum[:], s.Sig)
		}
	}
	if !verified {
		return fmt.Errorf("bundle: none of the envelope's %d signatures verifies with any of the %d configured public keys", len(env.Signatures), len(keys))
	}
	var st inTotoStatement
	if err := json.Unmarshal(env.Payload, &st); err != nil {
		return fmt.Errorf("bundle: signed statement: %w", err)
	}
	if st.Type != InTotoStatementType {
		return fmt.Errorf("bundle: signed statement: _type %q, want %s", st.Type, InTotoStatementType)
	}
	if st.PredicateType != CosignSignPredicateType {
		return fmt.Errorf("bundle: signed statement: predicateType %q is not a signature (%s)", st.PredicateType, CosignSignPredicateType)
	}
	for _, s := range st.Subject {
		if s.Digest[want.Algorithm] == want.Hex {
			return nil
		}
	}
	return fmt.Errorf("bundle: signed statement: no subject has digest %s", want)
}

// errNoBundles is checkBundles' answer when no Sigstore bundle refers to
// the index.
var errNoBundles = errors.New("no Sigstore bundle refers to the index")

// checkBundles looks for Sigstore bundles referring to r's index and
// accepts r when one of them verifies (checkBundle). Without any bundle
// it returns errNoBundles.
func (r *Release) checkBundles(keys []*ecdsa.PublicKey) error {
	subject := r.Repository.Digest(r.Digest.String())
	idx, err := remote.Referrers(subject, r.ropts...)
	if err != nil {
		return fmt.Errorf("referrers of %s: %w", subject, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return fmt.Errorf("referrers of %s: %w", subject, err)
	}
	var errs []error
	tried := 0
	for i, desc := range im.Manifests {
		if desc.ArtifactType != BundleMediaType {
			continue
		}
		if tried++; tried > MaxBundles {
			errs = append(errs, fmt.Errorf("referrers[%d] and later: more than %d bundles, the rest are not tried", i, MaxBundles))
			break
		}
		err := r.checkBundleManifest(desc, keys)
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("referrers[%d] (%s): %w", i, desc.Digest, err))
	}
	if len(errs) == 0 {
		return errNoBundles
	}
	return fmt.Errorf("Sigstore bundles refused: %w", errors.Join(errs...))
}

// checkBundleManifest fetches the bundle manifest desc by digest and
// checks its bundle layer.
func (r *Release) checkBundleManifest(desc v1.Descriptor, keys []*ecdsa.PublicKey) error {
	raw, err := getManifest(r.Repository.Digest(desc.Digest.String()), r.ropts)
	if err != nil {
		return err
	}
	if got := sha256Hash(raw); got != desc.Digest {
		return fmt.Errorf("the registry sent a manifest with digest %s", got)
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return err
	}
	if m.Subject == nil || m.Subject.Digest != r.Digest {
		return fmt.Errorf("the manifest's subject is not %s", r.Digest)
	}
	var layer *v1.Descriptor
	for i := range m.Layers {
		if m.Layers[i].MediaType == BundleMediaType {
			if layer != nil {
				return fmt.Errorf("more than one %s layer", BundleMediaType)
			}
			layer = &m.Layers[i]
		}
	}
	if layer == nil {
		return fmt.Errorf("no %s layer", BundleMediaType)
	}
	data, err := r.readBlob(*layer, MaxBundleBytes)
	if err != nil {
		return err
	}
	return checkBundle(data, keys, r.Digest)
}
