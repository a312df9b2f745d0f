package pullrig

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ingotdev/ingot/builder/config"
)

func TestChangeLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "main.go")
	const text = "a\ngreeting = \"x\"\nb\n"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ChangeLine(path, `greeting = "x"`, `greeting = "yy"`); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := "a\ngreeting = \"yy\"\nb\n"; string(got) != want {
		t.Fatalf("after the change: %q, want %q", got, want)
	}
	if info, err := os.Stat(path); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("mode after the change: %v, %v; want 0600", info.Mode(), err)
	}

	// Absent, or more than once: an error naming the file, and the file
	// is left as it was.
	for _, old := range []string{`greeting = "x"`, "\n"} {
		err := ChangeLine(path, old, "z")
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("ChangeLine(%q): %v, want an error naming %s", old, err, path)
		}
		if after, _ := os.ReadFile(path); !bytes.Equal(after, got) {
			t.Errorf("ChangeLine(%q) changed the file to %q", old, after)
		}
	}
}

func TestCopyHello(t *testing.T) {
	t.Chdir("../..")
	dir := filepath.Join(t.TempDir(), "hello")
	if err := CopyHello(dir); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(filepath.Join(dir, config.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "hello" || len(cfg.Services) != 1 {
		t.Fatalf("the copy's config: name %q, %d services", cfg.Name, len(cfg.Services))
	}
	for _, f := range []string{"go.mod", "cmd/hello/main.go", ".ingot/token"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("the copy lacks %s: %v", f, err)
		}
	}
	// bench/update's and bench/delta's change of the greeting in
	// ingot.yaml.
	yaml := filepath.Join(dir, config.FileName)
	if err := ChangeLine(yaml, "GREETING: "+cfg.Services[0].Env["GREETING"], "GREETING: changed"); err != nil {
		t.Fatal(err)
	}
	if cfg, err = config.Load(yaml); err != nil {
		t.Fatal(err)
	}
	if got := cfg.Services[0].Env["GREETING"]; got != "changed" {
		t.Errorf("GREETING after the change: %q", got)
	}
	// A second copy into the same directory is refused rather than mixed.
	if err := CopyHello(dir); err == nil {
		t.Error("a second CopyHello into the same directory succeeded")
	}
}

func TestCopyBootDir(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "boot")
	if err := os.MkdirAll(filepath.Join(src, "a"), 0o755); err != nil {
		t.Fatal(err)
	}
	small, large := []byte("slot.json"), bytes.Repeat([]byte{7}, linkAbove+1)
	if err := os.WriteFile(filepath.Join(src, "slot.json"), small, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "a", "vmlinuz"), large, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := copyBootDir(src, dst); err != nil {
		t.Fatal(err)
	}
	ino := func(p string) uint64 {
		info, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return info.Sys().(*syscall.Stat_t).Ino
	}
	if ino(filepath.Join(src, "slot.json")) == ino(filepath.Join(dst, "slot.json")) {
		t.Error("slot.json, a small file the update path rewrites, was linked, not copied")
	}
	if ino(filepath.Join(src, "a", "vmlinuz")) != ino(filepath.Join(dst, "a", "vmlinuz")) {
		t.Error("a large boot file was copied, not linked")
	}
	if got, err := os.ReadFile(filepath.Join(dst, "slot.json")); err != nil || !bytes.Equal(got, small) {
		t.Errorf("copied slot.json: %q, %v", got, err)
	}
}

func TestCountingProxy(t *testing.T) {
	blob := bytes.Repeat([]byte("x"), 100_000)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v2/":
			io.WriteString(w, "{}")
		case "/v2/r/blobs/b":
			w.Write(blob)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "down")
		}
	}))
	defer backend.Close()
	u, err := url.Parse(backend.URL)
	if err != nil {
		t.Fatal(err)
	}
	p, err := StartCountingProxy(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	get := func(path string) {
		t.Helper()
		resp, err := http.Get("http://" + p.Host + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			t.Fatal(err)
		}
	}
	get("/v2/")
	get("/v2/r/blobs/b")
	get("/v2/r/blobs/b")
	get("/v2/r/manifests/gone")
	want := Counts{Served: 2 + 2*int64(len(blob)) + 4, Requests: 4, Pings: 1, ErrorAnswers: 1}
	if got := p.Counts(); got != want {
		t.Fatalf("counts %+v, want %+v", got, want)
	}
	p.Reset()
	if got := p.Counts(); got != (Counts{}) {
		t.Fatalf("counts after Reset %+v, want zero", got)
	}
}
