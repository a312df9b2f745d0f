// Package cosignkey reads and writes signing keys in cosign's file format,
// so that `cosign sign --key` and `ingot publish -key` take the same key
// files: an ECDSA P-256 private key, PKCS #8, encrypted with a password
// (scrypt as the key derivation, NaCl secretbox as the cipher, both in a
// JSON document) in a PEM block "ENCRYPTED SIGSTORE PRIVATE KEY" (older
// cosign: "ENCRYPTED COSIGN PRIVATE KEY"), and the public key as a PEM
// "PUBLIC KEY" (release.MarshalPublicKey). The password comes from
// PasswordEnv, as cosign's does.
package cosignkey

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/crypto/scrypt"
)

// PEM block types of an encrypted private key.
const (
	PrivateKeyPEMType       = "ENCRYPTED SIGSTORE PRIVATE KEY"
	LegacyPrivateKeyPEMType = "ENCRYPTED COSIGN PRIVATE KEY"
)

// PasswordEnv is the environment variable that holds a key's password
// (it may be set to the empty string for a key without one).
const PasswordEnv = "COSIGN_PASSWORD"

// The encryption document's names and sizes.
const (
	kdfName    = "scrypt"
	cipherName = "nacl/secretbox"
	saltBytes  = 32
	keyBytes   = 32
	nonceBytes = 24
)

// kdfParams are scrypt's cost parameters.
type kdfParams struct {
	N int `json:"N"`
	R int `json:"r"`
	P int `json:"p"`
}

// The parameter sets cosign writes and reads: 2^15 (old keys), 2^16 (what
// it writes now) and 2^17, each with r 8, p 1. Others are refused, which
// also bounds the memory and time a key file can make a decryption take.
var (
	writeParams   = kdfParams{N: 1 << 16, R: 8, P: 1}
	allowedParams = []kdfParams{{N: 1 << 15, R: 8, P: 1}, writeParams, {N: 1 << 17, R: 8, P: 1}}
)

// encrypted is the JSON document inside the PEM block. []byte fields are
// base64 in JSON.
type encrypted struct {
	KDF struct {
		Name   string    `json:"name"`
		Params kdfParams `json:"params"`
		Salt   []byte    `json:"salt"`
	} `json:"kdf"`
	Cipher struct {
		Name  string `json:"name"`
		Nonce []byte `json:"nonce"`
	} `json:"cipher"`
	Ciphertext []byte `json:"ciphertext"`
}

// Generate makes a new ECDSA P-256 key.
func Generate() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("cosignkey: generate: %w", err)
	}
	return k, nil
}

// EncryptPrivateKey encodes k as an encrypted PEM private key file under
// password.
func EncryptPrivateKey(k *ecdsa.PrivateKey, password []byte) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("cosignkey: %w", err)
	}
	var doc encrypted
	doc.KDF.Name, doc.KDF.Params = kdfName, writeParams
	doc.KDF.Salt = make([]byte, saltBytes)
	doc.Cipher.Name = cipherName
	doc.Cipher.Nonce = make([]byte, nonceBytes)
	if _, err := io.ReadFull(rand.Reader, doc.KDF.Salt); err != nil {
		return nil, fmt.Errorf("cosignkey: salt: %w", err)
	}
	if _, err := io.ReadFull(rand.Reader, doc.Cipher.Nonce); err != nil {
		return nil, fmt.Errorf("cosignkey: nonce: %w", err)
	}
	key, err := scrypt.Key(password, doc.KDF.Salt, writeParams.N, writeParams.R, writeParams.P, keyBytes)
	if err != nil {
		return nil, fmt.Errorf("cosignkey: scrypt: %w", err)
	}
	var boxKey [keyBytes]byte
	var nonce [nonceBytes]byte
	copy(boxKey[:], key)
	copy(nonce[:], doc.Cipher.Nonce)
	doc.Ciphertext = secretbox.Seal(nil, der, &nonce, &boxKey)
	body, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("cosignkey: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: PrivateKeyPEMType, Bytes: body}), nil
}

// ErrWrongPassword is returned (wrapped) when a key does not decrypt.
var ErrWrongPassword = errors.New("wrong password (or a damaged key file)")

// DecryptPrivateKey reads an encrypted PEM private key file (either PEM
// type) and returns its ECDSA P-256 key; name is for errors.
func DecryptPrivateKey(data, password []byte, name string) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("cosignkey: %s: no PEM block", name)
	}
	if block.Type != PrivateKeyPEMType && block.Type != LegacyPrivateKeyPEMType {
		return nil, fmt.Errorf("cosignkey: %s: PEM block %q, want %q", name, block.Type, PrivateKeyPEMType)
	}
	var doc encrypted
	if err := json.Unmarshal(block.Bytes, &doc); err != nil {
		return nil, fmt.Errorf("cosignkey: %s: %w", name, err)
	}
	switch {
	case doc.KDF.Name != kdfName:
		return nil, fmt.Errorf("cosignkey: %s: kdf.name %q, want %q", name, doc.KDF.Name, kdfName)
	case doc.Cipher.Name != cipherName:
		return nil, fmt.Errorf("cosignkey: %s: cipher.name %q, want %q", name, doc.Cipher.Name, cipherName)
	case len(doc.Cipher.Nonce) != nonceBytes:
		return nil, fmt.Errorf("cosignkey: %s: cipher.nonce is %d bytes, want %d", name, len(doc.Cipher.Nonce), nonceBytes)
	}
	allowed := false
	for _, p := range allowedParams {
		allowed = allowed || p == doc.KDF.Params
	}
	if !allowed {
		return nil, fmt.Errorf("cosignkey: %s: kdf.params %+v are not one of cosign's sets %+v", name, doc.KDF.Params, allowedParams)
	}
	key, err := scrypt.Key(password, doc.KDF.Salt, doc.KDF.Params.N, doc.KDF.Params.R, doc.KDF.Params.P, keyBytes)
	if err != nil {
		return nil, fmt.Errorf("cosignkey: %s: scrypt: %w", name, err)
	}
	var boxKey [keyBytes]byte
	var nonce [nonceBytes]byte
	copy(boxKey[:], key)
	copy(nonce[:], doc.Cipher.Nonce)
	der, ok := secretbox.Open(nil, doc.Ciphertext, &nonce, &boxKey)
	if !ok {
		return nil, fmt.Errorf("cosignkey: %s: %w", name, ErrWrongPassword)
	}
	pk, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("cosignkey: %s: %w", name, err)
	}
	k, ok := pk.(*ecdsa.PrivateKey)
	if !ok || k.Curve != elliptic.P256() {
		return nil, fmt.Errorf("cosignkey: %s: a %T key; ingot signs with ECDSA P-256 keys", name, pk)
	}
	return k, nil
}
