package certpin

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
)

func TestOfPEM(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pin"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	want := hex.EncodeToString(sum[:])
	if got := OfDER(der); got != want {
		t.Errorf("OfDER = %s, want %s", got, want)
	}
	// A key block before the certificate is passed over.
	data := append(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	if got, err := OfPEM(data); err != nil || got != want {
		t.Errorf("OfPEM = %s, %v; want %s", got, err, want)
	}
	for name, bad := range map[string][]byte{
		"no block":   []byte("not pem"),
		"not x509":   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")}),
		"only a key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}),
	} {
		if _, err := OfPEM(bad); err == nil || !strings.HasPrefix(err.Error(), "certpin: ") {
			t.Errorf("%s: OfPEM error = %v, want a certpin error", name, err)
		}
	}
}

func TestTokenKey(t *testing.T) {
	a, err := TokenKey("secret\n")
	if err != nil {
		t.Fatal(err)
	}
	b, err := TokenKey("  secret")
	if err != nil {
		t.Fatal(err)
	}
	if !a.Equal(b) {
		t.Error("TokenKey depends on surrounding whitespace; the token file's newline must not matter")
	}
	c, err := TokenKey("secreT")
	if err != nil {
		t.Fatal(err)
	}
	if a.Equal(c) {
		t.Error("TokenKey(secret) = TokenKey(secreT)")
	}
	if _, err := TokenKey(" \n"); err == nil {
		t.Error("TokenKey(blank) = nil error")
	}
	p1, err := TokenKeyPEM("secret")
	if err != nil {
		t.Fatal(err)
	}
	p2, _ := TokenKeyPEM("secret")
	if string(p1) != string(p2) || !strings.Contains(string(p1), "PRIVATE KEY") {
		t.Errorf("TokenKeyPEM is not a stable PEM key:\n%s\n%s", p1, p2)
	}
}
