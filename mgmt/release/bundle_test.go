package release

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestDSSEPAE pins the pre-authentication encoding with the example of
// the DSSE specification.
func TestDSSEPAE(t *testing.T) {
	got := string(dssePAE("http://example.com/HelloWorld", []byte("hello world")))
	if want := "DSSEv1 29 http://example.com/HelloWorld 11 hello world"; got != want {
		t.Errorf("PAE = %q, want %q", got, want)
	}
}

// TestCheckBundleCosignFixture checks a bundle exactly as cosign 2.6.5
// wrote it (`cosign sign --key --tlog-upload=false --new-bundle-format`
// against the test registry; in testdata with the referrer manifest, the
// public key and the signed index digest) with the key it signed with.
func TestCheckBundleCosignFixture(t *testing.T) {
	data := readTestdata(t, "cosign-bundle.json")
	key, err := ParsePublicKey(readTestdata(t, "cosign-bundle.pub"), "cosign-bundle.pub")
	if err != nil {
		t.Fatal(err)
	}
	digest, err := v1.NewHash(strings.TrimSpace(string(readTestdata(t, "cosign-bundle.digest"))))
	if err != nil {
		t.Fatal(err)
	}
	// The referrer manifest cosign pushed with it: the shape
	// checkBundleManifest reads.
	var m v1.Manifest
	if err := json.Unmarshal(readTestdata(t, "cosign-bundle-manifest.json"), &m); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if m.ArtifactType != BundleMediaType || m.Subject == nil || m.Subject.Digest != digest ||
		len(m.Layers) != 1 || m.Layers[0].MediaType != BundleMediaType || m.Layers[0].Digest.Hex != hex.EncodeToString(sum[:]) {
		t.Errorf("cosign's referrer manifest is not shaped as checkBundleManifest expects: %+v", m)
	}

	keys := []*ecdsa.PublicKey{key}
	if err := checkBundle(data, keys, digest); err != nil {
		t.Fatalf("cosign's bundle: %v", err)
	}

	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err := checkBundle(data, []*ecdsa.PublicKey{&other.PublicKey}, digest); err == nil || !strings.Contains(err.Error(), "verifies with any") {
		t.Errorf("another key: %v, want a refusal", err)
	}
	otherDigest := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)}
	if err := checkBundle(data, keys, otherDigest); err == nil || !strings.Contains(err.Error(), "no subject has digest "+otherDigest.String()) {
		t.Errorf("another release's digest: %v, want a refusal", err)
	}
	// The statement changed to name another release, the signature kept.
	var b map[string]any
	if err := json.Unmarshal(data, &b); err != nil {
		t.Fatal(err)
	}
	env := b["dsseEnvelope"].(map[string]any)
	payload, _ := base64.StdEncoding.DecodeString(env["payload"].(string))
	if !strings.Contains(string(payload), digest.Hex) {
		t.Fatalf("cosign's statement does not name %s:\n%s", digest, payload)
	}
	env["payload"] = base64.StdEncoding.EncodeToString([]byte(strings.Replace(string(payload), digest.Hex, otherDigest.Hex, 1)))
	tampered, _ := json.Marshal(b)
	if err := checkBundle(tampered, keys, otherDigest); err == nil || !strings.Contains(err.Error(), "verifies with any") {
		t.Errorf("tampered statement: %v, want a refusal", err)
	}
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bundleFixture builds a bundle shaped like cosign's (see testdata), with
// the parts the test cases vary.
type bundleFixture struct {
	mediaType, payloadType, statementType, predicateType string
	subject                                              v1.Hash
	// sign signs the envelope; nil: DSSE over the PAE with key.
	sign func(payloadType string, payload []byte) []byte
	// sigs is how many times the envelope is signed.
	sigs int
}

func (f bundleFixture) build(t *testing.T, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	statement := `{"_type":"` + f.statementType + `","subject":[{"digest":{"` + f.subject.Algorithm + `":"` + f.subject.Hex + `"}}],"predicateType":"` + f.predicateType + `"}`
	sign := f.sign
	if sign == nil {
		sign = func(pt string, p []byte) []byte {
			sum := sha256.Sum256(dssePAE(pt, p))
			sig, err := ecdsa.SignASN1(rand.Reader, key, sum[:])
			if err != nil {
				t.Fatal(err)
			}
			return sig
		}
	}
	var sigs []string
	for range f.sigs {
		sigs = append(sigs, `{"sig":"`+base64.StdEncoding.EncodeToString(sign(f.payloadType, []byte(statement)))+`"}`)
	}
	return []byte(`{"mediaType":"` + f.mediaType + `","verificationMaterial":{"publicKey":{"hint":"x"}},` +
		`"dsseEnvelope":{"payload":"` + base64.StdEncoding.EncodeToString([]byte(statement)) + `","payloadType":"` + f.payloadType +
		`","signatures":[` + strings.Join(sigs, ",") + `]}}`)
}

// TestCheckBundleRefuses: each case is a bundle that differs from a good
// one in one respect, validly signed by the configured key unless the
// case is about the signature.
func TestCheckBundleRefuses(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keys := []*ecdsa.PublicKey{&key.PublicKey}
	d := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("cd", 32)}
	good := bundleFixture{
		mediaType: BundleMediaType, payloadType: InTotoPayloadType, statementType: InTotoStatementType,
		predicateType: CosignSignPredicateType, subject: d, sigs: 1,
	}
	if err := checkBundle(good.build(t, key), keys, d); err != nil {
		t.Fatalf("good bundle: %v", err)
	}
	// A second, unverifiable signature beside a good one does no harm.
	two := good
	two.sigs = 2
	if err := checkBundle(two.build(t, key), keys, d); err != nil {
		t.Errorf("two signatures: %v", err)
	}

	for _, tc := range []struct {
		name   string
		change func(*bundleFixture)
		err    string
	}{
		// An attestation (an SBOM, a scan result) signed by the release
		// key vouches for a statement about the image, not for the image.
		{"attestation", func(f *bundleFixture) { f.predicateType = "https://spdx.dev/Document" }, "is not a signature"},
		{"other subject", func(f *bundleFixture) { f.subject = v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ef", 32)} }, "no subject has digest"},
		{"subject in another algorithm", func(f *bundleFixture) { f.subject.Algorithm = "sha512" }, "no subject has digest"},
		{"statement type", func(f *bundleFixture) { f.statementType = "https://in-toto.io/Statement/v0.1" }, "_type"},
		{"payload type", func(f *bundleFixture) { f.payloadType = "application/json" }, "payloadType"},
		{"bundle version", func(f *bundleFixture) { f.mediaType = "application/vnd.dev.sigstore.bundle+json;version=0.2" }, "mediaType"},
		{"no signatures", func(f *bundleFixture) { f.sigs = 0 }, "no signatures"},
		{"too many signatures", func(f *bundleFixture) { f.sigs = MaxBundles + 1 }, "more than"},
		// A signature over the statement itself rather than its PAE: the
		// payload type would not be bound.
		{"signature without PAE", func(f *bundleFixture) {
			f.sign = func(_ string, p []byte) []byte {
				sum := sha256.Sum256(p)
				sig, _ := ecdsa.SignASN1(rand.Reader, key, sum[:])
				return sig
			}
		}, "verifies with any"},
		{"signature by another key", func(f *bundleFixture) {
			other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			f.sign = func(pt string, p []byte) []byte {
				sum := sha256.Sum256(dssePAE(pt, p))
				sig, _ := ecdsa.SignASN1(rand.Reader, other, sum[:])
				return sig
			}
		}, "verifies with any"},
	} {
		f := good
		tc.change(&f)
		if err := checkBundle(f.build(t, key), keys, d); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.err)
		}
	}

	for _, tc := range []struct{ name, bundle, err string }{
		{"not JSON", "{", "bundle:"},
		{"message signature", `{"mediaType":"` + BundleMediaType + `","messageSignature":{"signature":"AA=="}}`, "messageSignature"},
		{"no envelope", `{"mediaType":"` + BundleMediaType + `"}`, "no dsseEnvelope"},
	} {
		if err := checkBundle([]byte(tc.bundle), keys, d); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.err)
		}
	}
}
