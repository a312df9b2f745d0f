package builder

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/builder/config"
)

// TestResolveEFILoader: the variable wins and must exist; then the cache,
// then the ingot source's .cache; none found names every place tried; a
// Raspberry Pi needs none.
func TestResolveEFILoader(t *testing.T) {
	dir := t.TempDir()
	cache, src := filepath.Join(dir, "cache"), filepath.Join(dir, "src")
	env := map[string]string{}
	o := options{cacheDir: cache, getenv: func(k string) string { return env[k] }}

	_, err := resolveEFILoader(config.TargetVMAmd64, src, o)
	for _, want := range []string{"INGOT_SYSTEMD_BOOT_DEB_AMD64", filepath.Join(cache, "debs", "systemd-boot-efi-amd64.deb"), filepath.Join(src, ".cache", "debs", "systemd-boot-efi-amd64.deb"), "fetch-deb.sh"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("no package anywhere: %v, want it to name %s", err, want)
		}
	}
	inSrc := filepath.Join(src, ".cache", "debs", "systemd-boot-efi-amd64.deb")
	if err := os.MkdirAll(filepath.Dir(inSrc), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(inSrc, []byte("deb"), 0o644); err != nil {
		t.Fatal(err)
	}
	if p, err := resolveEFILoader(config.TargetVMAmd64, src, o); err != nil || p != inSrc {
		t.Errorf("source cache: %q, %v; want %s", p, err, inSrc)
	}
	env["INGOT_SYSTEMD_BOOT_DEB_AMD64"] = filepath.Join(dir, "missing.deb")
	if _, err := resolveEFILoader(config.TargetVMAmd64, src, o); err == nil || !strings.Contains(err.Error(), "missing.deb") {
		t.Errorf("a variable naming a missing file: %v", err)
	}
	if p, err := resolveEFILoader(config.TargetRPi, src, o); err != nil || p != "" {
		t.Errorf("rpi: %q, %v; want none", p, err)
	}
}
