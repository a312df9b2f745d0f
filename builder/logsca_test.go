package builder

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadLogsCA(t *testing.T) {
	cfg := testConfig(t, "  - {name: hello, go: ./cmd/hello}")
	if b, err := loadLogsCA(cfg); b != nil || err != nil {
		t.Errorf("loadLogsCA(no logs:) = %q, %v; want nothing", b, err)
	}
	cfg.Logs.CAFile = filepath.Join(t.TempDir(), "ca.pem")
	if _, err := loadLogsCA(cfg); err == nil || !strings.Contains(err.Error(), "logs.ca") {
		t.Errorf("loadLogsCA(missing file) = %v, want an error naming logs.ca", err)
	}
	if err := os.WriteFile(cfg.Logs.CAFile, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadLogsCA(cfg); err == nil || !strings.Contains(err.Error(), cfg.Logs.CAFile) || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("loadLogsCA(garbage) = %v, want an error naming the file", err)
	}
	if err := os.WriteFile(cfg.Logs.CAFile, []byte(testCertPEM), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := loadLogsCA(cfg); err != nil || string(b) != testCertPEM {
		t.Errorf("loadLogsCA(a certificate) = %d bytes, %v", len(b), err)
	}
}
