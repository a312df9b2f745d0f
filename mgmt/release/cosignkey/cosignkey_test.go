package cosignkey

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	k, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	file, err := EncryptPrivateKey(k, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(file)
	if block == nil || block.Type != PrivateKeyPEMType {
		t.Fatalf("PEM block %+v, want type %q", block, PrivateKeyPEMType)
	}
	// The document cosign's reader expects: scrypt 2^16/8/1, secretbox,
	// a 32-byte salt and a 24-byte nonce.
	var doc encrypted
	if err := json.Unmarshal(block.Bytes, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.KDF.Name != "scrypt" || doc.KDF.Params != (kdfParams{N: 65536, R: 8, P: 1}) || len(doc.KDF.Salt) != 32 ||
		doc.Cipher.Name != "nacl/secretbox" || len(doc.Cipher.Nonce) != 24 {
		t.Errorf("document %+v", doc)
	}
	if !strings.Contains(string(block.Bytes), `"params":{"N":65536,"r":8,"p":1}`) {
		t.Errorf("params not spelled as cosign spells them: %s", block.Bytes)
	}
	got, err := DecryptPrivateKey(file, []byte("pw"), "k")
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(k) {
		t.Error("decrypted key differs")
	}
	// The older PEM type reads the same.
	legacy := pem.EncodeToMemory(&pem.Block{Type: LegacyPrivateKeyPEMType, Bytes: block.Bytes})
	if got, err := DecryptPrivateKey(legacy, []byte("pw"), "k"); err != nil || !got.Equal(k) {
		t.Errorf("legacy PEM type: %v", err)
	}
}

func TestRefuses(t *testing.T) {
	k, _ := Generate()
	file, err := EncryptPrivateKey(k, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecryptPrivateKey(file, []byte("wrong"), "release.key"); !errors.Is(err, ErrWrongPassword) || !strings.Contains(err.Error(), "release.key") {
		t.Errorf("wrong password: %v", err)
	}
	block, _ := pem.Decode(file)
	edit := func(from, to string) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: block.Type, Bytes: bytes.Replace(block.Bytes, []byte(from), []byte(to), 1)})
	}
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		// A huge N would make a key file cost gigabytes to try.
		{"scrypt N", edit(`"N":65536`, `"N":1048576`), "kdf.params"},
		{"kdf", edit(`"name":"scrypt"`, `"name":"pbkdf2"`), `kdf.name "pbkdf2"`},
		{"cipher", edit(`"name":"nacl/secretbox"`, `"name":"aes"`), `cipher.name "aes"`},
		{"PEM type", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: block.Bytes}), `PEM block "EC PRIVATE KEY"`},
		{"no PEM", []byte("hello"), "no PEM block"},
	} {
		if _, err := DecryptPrivateKey(tc.data, []byte("pw"), "release.key"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}
