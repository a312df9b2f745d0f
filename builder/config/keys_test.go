package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/packer/format/releasekey"
)

func writeKey(t *testing.T, path string) *ecdsa.PublicKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	data, err := releasekey.Marshal(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return &k.PublicKey
}

// TestReleaseKeys reads update.keys relative to ingot.yaml's directory.
func TestReleaseKeys(t *testing.T) {
	dir := t.TempDir()
	k1 := writeKey(t, filepath.Join(dir, "release.pub"))
	k2 := writeKey(t, filepath.Join(dir, "next.pub"))
	cfg, err := Parse(filepath.Join(dir, FileName), []byte(minimal+"update: {keys: [release.pub, next.pub]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := cfg.ReleaseKeys()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || !keys[0].Key.Equal(k1) || !keys[1].Key.Equal(k2) || keys[0].File.Path != filepath.Join(dir, "release.pub") {
		t.Fatalf("ReleaseKeys = %+v", keys)
	}
	if fp, _ := releasekey.Fingerprint(k1); keys[0].Fingerprint != fp {
		t.Errorf("fingerprint %s, want %s", keys[0].Fingerprint, fp)
	}
	none, err := Parse(filepath.Join(dir, FileName), []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if keys, err := none.ReleaseKeys(); err != nil || len(keys) != 0 {
		t.Errorf("no update.keys: %v, %v", keys, err)
	}
}

func TestReleaseKeysRefused(t *testing.T) {
	dir := t.TempDir()
	writeKey(t, filepath.Join(dir, "release.pub"))
	if err := os.WriteFile(filepath.Join(dir, "bad.pub"), []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("release.pub", filepath.Join(dir, "again.pub")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		keys, want string
	}{
		{"[missing.pub]", "ingot.yaml:5:17: update.keys[0]: public key " + filepath.Join(dir, "missing.pub") + " does not exist (ingot key new writes one)"},
		{"[release.pub, bad.pub]", `ingot.yaml:5:30: update.keys[1]: public key ` + filepath.Join(dir, "bad.pub") + `: PEM block "CERTIFICATE", want "PUBLIC KEY"`},
		{"[release.pub, again.pub]", "update.keys[1]: public key " + filepath.Join(dir, "again.pub") + " is the key of update.keys[0]"},
	} {
		cfg, err := Parse(filepath.Join(dir, FileName), []byte(minimal+"update: {keys: "+tc.keys+"}\n"))
		if err != nil {
			t.Fatal(err)
		}
		_, err = cfg.ReleaseKeys()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("keys %s: %v, want an error containing %q", tc.keys, err, tc.want)
		}
	}
	for _, tc := range []struct {
		update, want string
	}{
		{"{keys: release.pub}", "update.keys: expected a list"},
		{`{keys: [""]}`, "update.keys[0]"},
		{"{keys: [" + strings.Repeat("a.pub, ", 17) + "]}", "17 keys, at most 16"},
	} {
		_, err := Parse(filepath.Join(dir, FileName), []byte(minimal+"update: "+tc.update+"\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("update: %s: %v, want an error containing %q", tc.update, err, tc.want)
		}
	}
}
