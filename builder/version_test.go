package builder

import (
	"archive/zip"
	"context"
	"debug/elf"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/ingotdev/ingot/builder/config"
)

// writeProxyModule publishes module mod at version ver with the given files
// in a file:// GOPROXY directory.
func writeProxyModule(t *testing.T, proxy, mod, ver string, files map[string]string) {
	t.Helper()
	dir := filepath.Join(proxy, filepath.FromSlash(mod), "@v")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gomod := "module " + mod + "\n\ngo 1.26\n"
	write("list", ver+"\n")
	write(ver+".info", `{"Version":"`+ver+`","Time":"2024-01-01T00:00:00Z"}`)
	write(ver+".mod", gomod)
	f, err := os.Create(filepath.Join(dir, ver+".zip"))
	if err != nil {
		t.Fatal(err)
	}
	zw := zip.NewWriter(f)
	files["go.mod"] = gomod
	for name, data := range files {
		w, err := zw.Create(mod + "@" + ver + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestBuildModuleAtVersion(t *testing.T) {
	proxy := t.TempDir()
	writeProxyModule(t, proxy, "example.org/tool", "v1.2.0", map[string]string{
		"cmd/tool/main.go": "package main\n\nfunc main() { println(\"tool\") }\n",
	})
	t.Setenv("GOPROXY", "file://"+filepath.ToSlash(proxy))
	t.Setenv("GOSUMDB", "off")
	t.Setenv("GOMODCACHE", t.TempDir())
	// -modcacherw lets t.TempDir remove the module cache afterwards.
	t.Setenv("GOFLAGS", "-modcacherw -buildvcs=false")

	cfg := testConfig(t, "  - {name: tool, go: example.org/tool/cmd/tool@v1.2.0}")
	cache := t.TempDir()
	for i := range 2 { // the second build reuses the generated module
		r, err := Build(context.Background(), cfg, config.TargetVMArm64, testOptions(t, cache)...)
		if err != nil {
			t.Fatalf("Build(module@version) #%d = %v", i+1, err)
		}
		if got := elfMachine(t, readEntry(t, r.Root, "/usr/bin/tool")); got != elf.EM_AARCH64 {
			t.Errorf("/usr/bin/tool ELF machine = %v, want AArch64", got)
		}
		if r.Binaries[2].Package != "example.org/tool/cmd/tool@v1.2.0" {
			t.Errorf("Binaries[2].Package = %q", r.Binaries[2].Package)
		}
	}

	missing := testConfig(t, "  - {name: tool, go: example.org/tool/cmd/tool@v9.9.9}")
	_, err := Build(context.Background(), missing, config.TargetVMArm64, testOptions(t, cache)...)
	var ce *CompileError
	if !errors.As(err, &ce) || ce.Service != "tool" {
		t.Errorf("Build(unknown version) = %v, want a CompileError for service tool", err)
	}
}

func TestExactVersion(t *testing.T) {
	for v, want := range map[string]bool{
		"v1.2.3": true, "v0.0.0-20240101000000-abcdefabcdef": true, "v2.0.0+incompatible": true,
		"latest": false, "master": false, "v1": false, "v1.2": false, ">v1.0.0": false,
	} {
		if got := exactVersion(v); got != want {
			t.Errorf("exactVersion(%q) = %v, want %v", v, got, want)
		}
	}
}
