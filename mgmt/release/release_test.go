package release

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestPayloadFormat pins the payload bytes: cosign verifies the signature
// over exactly these bytes and reads these field names.
func TestPayloadFormat(t *testing.T) {
	d := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}
	got, err := NewPayload("registry.example:5000/fleet/app", d)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"critical":{"identity":{"docker-reference":"registry.example:5000/fleet/app"},` +
		`"image":{"docker-manifest-digest":"sha256:` + d.Hex + `"},"type":"cosign container image signature"},"optional":null}`
	if string(got) != want {
		t.Errorf("payload\n%s\nwant\n%s", got, want)
	}
	if tag := SignatureTag(d); tag != "sha256-"+d.Hex+".sig" {
		t.Errorf("SignatureTag = %s", tag)
	}
}

func TestCheckPayload(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	d := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("cd", 32)}
	p, _ := NewPayload("r/x", d)
	sig, err := SignPayload(rand.Reader, k, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkPayload(p, sig, []*ecdsa.PublicKey{&k.PublicKey}, d); err != nil {
		t.Errorf("good signature: %v", err)
	}
	other := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ef", 32)}
	for _, tc := range []struct {
		name         string
		payload, sig string
		want         v1.Hash
		err          string
	}{
		{"no signature", string(p), "", d, "no dev.cosignproject.cosign/signature annotation"},
		{"not base64", string(p), "!!", d, "not base64"},
		{"other digest", string(p), sig, other, "not the release's " + other.String()},
		{"changed payload", strings.Replace(string(p), "r/x", "r/y", 1), sig, d, "does not verify"},
	} {
		if err := checkPayload([]byte(tc.payload), tc.sig, []*ecdsa.PublicKey{&k.PublicKey}, tc.want); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.err)
		}
	}
	// A payload of another type, validly signed.
	bad := strings.Replace(string(p), SignatureType, "something else", 1)
	badSig, _ := SignPayload(rand.Reader, k, []byte(bad))
	if err := checkPayload([]byte(bad), badSig, []*ecdsa.PublicKey{&k.PublicKey}, d); err == nil || !strings.Contains(err.Error(), "critical.type") {
		t.Errorf("other type: %v", err)
	}
}

func TestCheckBootFileName(t *testing.T) {
	for _, ok := range []string{"vmlinuz", "overlays/x.dtbo", "cmdline.txt"} {
		if err := CheckBootFileName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "/vmlinuz", "../slot.json", "a/../../b", ".", "a//b", "a\\b", strings.Repeat("a", 256)} {
		if err := CheckBootFileName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestVerifyingReader checks the blob reader's own size and digest checks
// (the registry client checks digests too; this one must not rely on it).
func TestVerifyingReader(t *testing.T) {
	content := []byte("root filesystem bytes")
	desc := v1.Descriptor{Size: int64(len(content)), Digest: sha256Hash(content)}
	read := func(body []byte) ([]byte, error) {
		rc := io.NopCloser(bytes.NewReader(body))
		v := &verifyingReader{rc: rc, lr: io.LimitReader(rc, desc.Size+1), h: sha256.New(), want: desc}
		return io.ReadAll(v)
	}
	if got, err := read(content); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("good blob: %q, %v", got, err)
	}
	other := bytes.Clone(content)
	other[3] ^= 1
	for _, tc := range []struct {
		name string
		body []byte
		want string
	}{
		{"other bytes", other, "the registry sent content with digest sha256:" + sha256Hash(other).Hex},
		{"short", content[:10], "the registry sent 10 of its 21 bytes"},
		{"long", append(bytes.Clone(content), 'x'), "the registry sent more than its 21 bytes"},
	} {
		got, err := read(tc.body)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), desc.Digest.String()) {
			t.Errorf("%s: %v, want an error containing %q and the blob's digest", tc.name, err, tc.want)
		}
		if len(got) > len(content) {
			t.Errorf("%s: returned %d bytes, more than the blob's %d", tc.name, len(got), len(content))
		}
	}
}
