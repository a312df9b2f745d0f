package builder

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/builder/config"
)

func TestLoadTLS(t *testing.T) {
	cfg := testConfig(t, "  - {name: hello, go: ./cmd/hello}", `management: {tcp: ":7443"}`)
	id, err := loadTLS(cfg, config.TargetVMAmd64)
	if err != nil || id == nil || id.pin != testCertSHA256 {
		t.Fatalf("loadTLS = %+v, %v, want the pin %s", id, err, testCertSHA256)
	}
	noTCP := testConfig(t, "  - {name: hello, go: ./cmd/hello}")
	if id, err := loadTLS(noTCP, config.TargetVMAmd64); id != nil || err != nil {
		t.Errorf("loadTLS(no tcp on a VM) = %+v, %v, want nothing", id, err)
	}

	missing := *cfg
	missing.Management.TLSCertFile = filepath.Join(t.TempDir(), "none.pem")
	if _, err := loadTLS(&missing, config.TargetVMAmd64); err == nil || !strings.Contains(err.Error(), "none.pem does not exist") || !strings.Contains(err.Error(), "ingot cert") {
		t.Errorf("loadTLS(missing certificate) = %v, want an error naming the file and `ingot cert`", err)
	}
	// A key that is not the certificate's.
	otherKey := filepath.Join(t.TempDir(), "other-key.pem")
	if err := os.WriteFile(otherKey, []byte(strings.Replace(testKeyPEM, "M", "N", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	mismatch := *cfg
	mismatch.Management.TLSKeyFile = otherKey
	if _, err := loadTLS(&mismatch, config.TargetVMAmd64); err == nil || !strings.Contains(err.Error(), "other-key.pem") {
		t.Errorf("loadTLS(wrong key) = %v, want an error naming both files", err)
	}
}
