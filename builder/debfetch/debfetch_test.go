package debfetch

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

func pinFor(t *testing.T, path string, b []byte) Pin {
	t.Helper()
	sum := sha256.Sum256(b)
	p := Pin{Path: path, Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:]), Snapshot: "20261204T000000Z"}
	if err := p.Check(); err != nil {
		t.Fatal(err)
	}
	return p
}

// archive serves files by URL path and counts requests.
func archive(t *testing.T, files map[string][]byte) (*httptest.Server, *atomic.Int32) {
	var n atomic.Int32
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		b, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	t.Cleanup(s.Close)
	return s, &n
}

func TestFetchVerifiesAndCaches(t *testing.T) {
	deb := []byte("a pinned package")
	p := pinFor(t, "debian/pool/main/x/x/x_1_amd64.deb", deb)
	srv, hits := archive(t, map[string][]byte{"/debian/pool/main/x/x/x_1_amd64.deb": deb})
	f := &Fetcher{Dir: t.TempDir(), Mirror: srv.URL, NoSnapshot: true}
	got, err := f.Fetch(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(got); string(b) != string(deb) || filepath.Base(got) != "x_1_amd64.deb" {
		t.Fatalf("fetched %s = %q", got, b)
	}
	if _, err := f.Fetch(t.Context(), p); err != nil || hits.Load() != 1 {
		t.Fatalf("second Fetch: %v after %d requests, want a cache hit", err, hits.Load())
	}
	// A cached file that no longer matches is fetched again.
	if err := os.WriteFile(got, []byte("tampered in the cache"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Fetch(t.Context(), p); err != nil || hits.Load() != 2 {
		t.Fatalf("Fetch over a tampered cache: %v after %d requests, want one more download", err, hits.Load())
	}
	if b, _ := os.ReadFile(got); string(b) != string(deb) {
		t.Fatalf("cache holds %q after the refetch", b)
	}
}

// TestFetchRefusesWrongContent serves other bytes than the pin's (a
// compromised or wrong mirror): the error names the URL and both digests
// and nothing is cached, whether the length matches or not.
func TestFetchRefusesWrongContent(t *testing.T) {
	deb := []byte("the real package")
	p := pinFor(t, "debian/pool/main/x/x/x_1_amd64.deb", deb)
	for name, served := range map[string][]byte{
		"same length": []byte("the evil package"),
		"longer":      append([]byte("the real package"), " and more"...),
	} {
		t.Run(name, func(t *testing.T) {
			srv, _ := archive(t, map[string][]byte{"/" + p.Path: served})
			dir := t.TempDir()
			f := &Fetcher{Dir: dir, Mirror: srv.URL, Snapshot: srv.URL + "/snap"}
			_, err := f.Fetch(t.Context(), p)
			if err == nil {
				t.Fatal("Fetch accepted content that does not match the pin")
			}
			msg := err.Error()
			if !strings.Contains(msg, srv.URL+"/"+p.Path) || !strings.Contains(msg, "sha256 mismatch") {
				t.Errorf("error %q does not name the URL and the mismatch", msg)
			}
			if name == "same length" {
				actual := sha256.Sum256(served)
				if !strings.Contains(msg, "expected "+p.SHA256) || !strings.Contains(msg, "got "+hex.EncodeToString(actual[:])) {
					t.Errorf("error %q does not name the expected and the actual digest", msg)
				}
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("cache after a refused download: %v", ents)
			}
		})
	}
}

func TestFetchFallsBackToSnapshot(t *testing.T) {
	deb := []byte("superseded security update")
	p := pinFor(t, "debian-security/pool/updates/main/l/l/l_1_arm64.deb", deb)
	srv, _ := archive(t, map[string][]byte{
		"/snap/debian-security/20261204T000000Z/pool/updates/main/l/l/l_1_arm64.deb": deb,
	})
	f := &Fetcher{Dir: t.TempDir(), Mirror: srv.URL, Snapshot: srv.URL + "/snap"}
	if _, err := f.Fetch(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	f.NoSnapshot = true
	f.Dir = t.TempDir()
	if _, err := f.Fetch(t.Context(), p); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("Fetch without the snapshot fallback: %v, want the mirror's 404", err)
	}
}

func TestParsePin(t *testing.T) {
	good := "debian/pool/main/s/systemd/systemd-boot-efi_252_amd64.deb 113136 8f2b81bdcfafc466882a0cae460272dbf10d8d97c6a3c1c6ea33038c155a2f5e 20261204T000000Z"
	p, err := ParsePin(good)
	if err != nil || p.String() != good {
		t.Fatalf("ParsePin(%q) = %v, %v", good, p, err)
	}
	for _, bad := range []string{
		"debian/x.deb 12",
		"../etc/x.deb 12 8f2b81bdcfafc466882a0cae460272dbf10d8d97c6a3c1c6ea33038c155a2f5e",
		"/abs/x.deb 12 8f2b81bdcfafc466882a0cae460272dbf10d8d97c6a3c1c6ea33038c155a2f5e",
		"debian/x.tar 12 8f2b81bdcfafc466882a0cae460272dbf10d8d97c6a3c1c6ea33038c155a2f5e",
		"debian/x.deb 0 8f2b81bdcfafc466882a0cae460272dbf10d8d97c6a3c1c6ea33038c155a2f5e",
		"debian/x.deb 12 8F2B81BDCFAFC466882A0CAE460272DBF10D8D97C6A3C1C6EA33038C155A2F5E",
		"debian/x.deb 12 8f2b81",
		"debian/x.deb 12 8f2b81bdcfafc466882a0cae460272dbf10d8d97c6a3c1c6ea33038c155a2f5e yesterday",
	} {
		if _, err := ParsePin(bad); err == nil {
			t.Errorf("ParsePin(%q) accepted it", bad)
		}
	}
}
