package builder

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/builder/config"
)

// TestResolveEFILoader: the variable wins and must exist; then the
// package pinned in ingot.lock, fetched and verified; only when that fails
// the ingot source's .cache; none found names the fetch error and every
// place tried; a Raspberry Pi needs none.
func TestResolveEFILoader(t *testing.T) {
	dir := t.TempDir()
	cache, src := filepath.Join(dir, "cache"), filepath.Join(dir, "src")
	env := map[string]string{}
	offline := httptest.NewServer(http.NotFoundHandler())
	defer offline.Close()
	cfg := &config.Config{Dir: filepath.Join(dir, "app")}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	o := options{cacheDir: cache, getenv: func(k string) string { return env[k] }, debMirror: offline.URL}

	_, err := resolveEFILoader(t.Context(), cfg, config.TargetVMAmd64, src, o)
	for _, want := range []string{"INGOT_SYSTEMD_BOOT_DEB_AMD64", "404", filepath.Join(src, ".cache", "debs", "systemd-boot-efi-amd64.deb"), "fetch-deb.sh"} {
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
	if p, err := resolveEFILoader(t.Context(), cfg, config.TargetVMAmd64, src, o); err != nil || p != inSrc {
		t.Errorf("offline, source cache: %q, %v; want %s", p, err, inSrc)
	}

	// Pinned in ingot.lock and served by the mirror: fetched, verified,
	// and preferred over the source tree's copy.
	deb := []byte("systemd-boot-efi package bytes")
	sum := sha256.Sum256(deb)
	const pool = "debian/pool/main/s/systemd/systemd-boot-efi_test_amd64.deb"
	mirror := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/"+pool {
			http.NotFound(w, r)
			return
		}
		w.Write(deb)
	}))
	defer mirror.Close()
	lock := EFILoaderLockKey("amd64") + " " + pool + " " + strconv.Itoa(len(deb)) + " " + hex.EncodeToString(sum[:]) + "\n"
	if err := os.WriteFile(filepath.Join(cfg.Dir, "ingot.lock"), []byte(lock), 0o644); err != nil {
		t.Fatal(err)
	}
	o.debMirror = mirror.URL
	p, err := resolveEFILoader(t.Context(), cfg, config.TargetVMAmd64, src, o)
	if err != nil || !strings.HasPrefix(p, filepath.Join(cache, "debs")) {
		t.Fatalf("pinned: %q, %v; want a file under %s", p, err, filepath.Join(cache, "debs"))
	}
	if got, _ := os.ReadFile(p); string(got) != string(deb) {
		t.Errorf("pinned: %s holds %q, want the mirror's package", p, got)
	}

	env["INGOT_SYSTEMD_BOOT_DEB_AMD64"] = filepath.Join(dir, "missing.deb")
	if _, err := resolveEFILoader(t.Context(), cfg, config.TargetVMAmd64, src, o); err == nil || !strings.Contains(err.Error(), "missing.deb") {
		t.Errorf("a variable naming a missing file: %v", err)
	}
	if p, err := resolveEFILoader(t.Context(), cfg, config.TargetRPi, src, o); err != nil || p != "" {
		t.Errorf("rpi: %q, %v; want none", p, err)
	}
}
