package releasekey

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pemKey, err := Marshal(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Parse(pemKey, "release.pub"); err != nil || !got.Equal(&k.PublicKey) {
		t.Errorf("round trip: %v", err)
	}
	k384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der384, _ := x509.MarshalPKIXPublicKey(&k384.PublicKey)
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"P-384", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der384}), "curve P-384"},
		{"type", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der384}), `PEM block "CERTIFICATE"`},
		{"trailing", append(pemKey, "junk"...), "data after the PEM block"},
		{"empty", nil, "no PEM block"},
	} {
		if _, err := Parse(tc.data, "release.pub"); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "release.pub") {
			t.Errorf("%s: %v, want an error containing %q and the file name", tc.name, err, tc.want)
		}
	}
}

func TestFingerprint(t *testing.T) {
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f1, err := Fingerprint(&k1.PublicKey)
	if err != nil || len(f1) != 64 {
		t.Fatalf("Fingerprint = %q, %v", f1, err)
	}
	if f2, _ := Fingerprint(&k2.PublicKey); f2 == f1 {
		t.Error("two keys, one fingerprint")
	}
	// The file's bytes do not matter, the key does.
	data, _ := Marshal(&k1.PublicKey)
	k, err := Parse(append([]byte("\n"), data...), "k")
	if err != nil {
		t.Fatal(err)
	}
	if f, _ := Fingerprint(k); f != f1 {
		t.Errorf("fingerprint of the parsed key %s, want %s", f, f1)
	}
}
