package release

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
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
