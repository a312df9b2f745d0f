package builder

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// writeModule writes files (path -> content) under a new module
// example.com/m and returns its directory.
func writeModule(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	files["go.mod"] = "module example.com/m\n\ngo 1.22\n"
	for p, content := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const (
	cgoOnly = "package conly\n\n// int answer(void) { return 42; }\nimport \"C\"\n\nfunc Answer() int { return int(C.answer()) }\n"
	// cgoPartial has a cgo file and a pure one, so without cgo it still
	// compiles but lacks Two.
	cgoPartialC    = "package partial\n\n// int two(void) { return 2; }\nimport \"C\"\n\nfunc Two() int { return int(C.two()) }\n"
	cgoPartialPure = "package partial\n\nfunc Name() string { return \"partial\" }\n"
	// cgoBroken uses a name only its cgo file defines inside the package.
	cgoBrokenC    = "package broken\n\n// int three(void) { return 3; }\nimport \"C\"\n\nfunc three() int { return int(C.three()) }\n"
	cgoBrokenPure = "package broken\n\nfunc Three() int { return three() }\n"
	// optionalCgo has a pure-Go fallback for !cgo, like net or os/user.
	optionalCgoC    = "//go:build cgo\n\npackage optional\n\n// int four(void) { return 4; }\nimport \"C\"\n\nfunc Four() int { return int(C.four()) }\n"
	optionalCgoPure = "//go:build !cgo\n\npackage optional\n\nfunc Four() int { return 4 }\n"
)

func TestCgoError(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		// wantPkg and wantFile are the package and file the error names;
		// wantChain the import chain; "" when the build succeeds or fails
		// for another reason.
		wantPkg, wantFile string
		wantChain         []string
		wantOK            bool
	}{
		{
			name: "all files need cgo",
			files: map[string]string{
				"conly/c.go":       cgoOnly,
				"lib/lib.go":       "package lib\n\nimport \"example.com/m/conly\"\n\nfunc F() int { return conly.Answer() }\n",
				"cmd/app/main.go":  "package main\n\nimport \"example.com/m/lib\"\n\nfunc main() { println(lib.F()) }\n",
				"cmd/app/other.go": "package main\n",
			},
			wantPkg: "example.com/m/conly", wantFile: "conly/c.go",
			wantChain: []string{"example.com/m/cmd/app", "example.com/m/lib", "example.com/m/conly"},
		},
		{
			name: "importer misses a cgo name",
			files: map[string]string{
				"partial/c.go":    cgoPartialC,
				"partial/pure.go": cgoPartialPure,
				"cmd/app/main.go": "package main\n\nimport \"example.com/m/partial\"\n\nfunc main() { println(partial.Two()) }\n",
			},
			wantPkg: "example.com/m/partial", wantFile: "partial/c.go",
			wantChain: []string{"example.com/m/cmd/app", "example.com/m/partial"},
		},
		{
			name: "package misses its own cgo name",
			files: map[string]string{
				"broken/c.go":     cgoBrokenC,
				"broken/pure.go":  cgoBrokenPure,
				"cmd/app/main.go": "package main\n\nimport \"example.com/m/broken\"\n\nfunc main() { println(broken.Three()) }\n",
			},
			wantPkg: "example.com/m/broken", wantFile: "broken/c.go",
			wantChain: []string{"example.com/m/cmd/app", "example.com/m/broken"},
		},
		{
			name: "optional cgo builds",
			files: map[string]string{
				"optional/c.go":    optionalCgoC,
				"optional/pure.go": optionalCgoPure,
				"cmd/app/main.go":  "package main\n\nimport (\n\t\"example.com/m/optional\"\n\t\"net\"\n\t\"os/user\"\n)\n\nfunc main() { println(optional.Four()); _, _ = user.Current(); _ = net.IPv4len }\n",
			},
			wantOK: true,
		},
		{
			name: "a syntax error beside optional cgo is not blamed on cgo",
			files: map[string]string{
				"partial/c.go":    cgoPartialC,
				"partial/pure.go": cgoPartialPure,
				"cmd/app/main.go": "package main\n\nimport \"example.com/m/partial\"\n\nfunc main() { println(partial.Name()) + }\n",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeModule(t, tc.files)
			g := &goTool{cmd: "go", getenv: os.Getenv, cacheDir: t.TempDir(), progress: newProgress(nil)}
			j := &job{dir: dir, pkg: "./cmd/app", goos: "linux", goarch: "arm64",
				label: `service "app"`, services: []string{"app"}, display: "./cmd/app"}
			err := g.build(t.Context(), j)
			if tc.wantOK {
				if err != nil {
					t.Fatalf("build = %v, want success", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("build succeeded, want an error")
			}
			var ce *CompileError
			if !errors.As(err, &ce) || ce.Service != "app" {
				t.Errorf("build = %v, want a CompileError of service app", err)
			}
			var cg *CgoError
			if tc.wantPkg == "" {
				if errors.As(err, &cg) {
					t.Errorf("build = %v, want no CgoError", err)
				}
				return
			}
			t.Log(err)
			if !errors.As(err, &cg) {
				t.Fatalf("build = %v, want a CgoError", err)
			}
			if cg.Package != tc.wantPkg || cg.File != tc.wantFile || !slices.Equal(cg.Chain, tc.wantChain) {
				t.Errorf("CgoError = %+v, want package %s, file %s, chain %v", cg, tc.wantPkg, tc.wantFile, tc.wantChain)
			}
			for _, want := range []string{`service "app"`, tc.wantPkg + " needs cgo", tc.wantFile + ` imports "C"`, "CGO_ENABLED=0"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("build error %q does not say %q", err, want)
				}
			}
		})
	}
}
