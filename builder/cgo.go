package builder

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// CgoError is a Go package that cannot be built for an appliance because
// it needs cgo: appliance binaries are static and built with
// CGO_ENABLED=0, so its files that import "C" are left out and the build
// fails (or the package has no files at all).
type CgoError struct {
	// Package is the import path of the package that needs cgo.
	Package string
	// File is one of its files that import "C".
	File string
	// Chain is the import path from the built package to Package.
	Chain []string
}

func (e *CgoError) Error() string {
	via := ""
	if len(e.Chain) > 1 {
		via = fmt.Sprintf(" (imported via %s)", strings.Join(e.Chain, " -> "))
	}
	return fmt.Sprintf("package %s needs cgo: %s imports \"C\"%s; appliance binaries are static Go built with CGO_ENABLED=0, so use a pure-Go package instead", e.Package, e.File, via)
}

// listedPackage is what `go list -json` says about a package, the fields
// cgoError reads.
type listedPackage struct {
	ImportPath string
	Name       string
	Dir        string
	Standard   bool
	CgoFiles   []string
	Imports    []string
}

var (
	// failedPackageRE matches the header go build prints above the
	// compiler errors of a package.
	failedPackageRE = regexp.MustCompile(`(?m)^# (\S+)`)
	// noFilesRE matches a package all of whose files were excluded.
	noFilesRE = regexp.MustCompile(`build constraints exclude all Go files in (.+)$`)
)

// cgoError explains a failed `go build` of pkg in dir whose output was
// out, when the cause is a package that needs cgo: it lists the build's
// packages as they would be with cgo and looks for one with cgo files that
// failed to compile, had no files left, or whose cgo-only names its
// importer could not find. It returns nil when cgo does not explain the
// failure, and the caller reports the compiler's output as it is.
func (g *goTool) cgoError(ctx context.Context, dir, pkg string, j *job, out []byte) error {
	pkgs, err := g.listWithCgo(ctx, dir, pkg, j)
	if err != nil || len(pkgs) == 0 {
		// Listing is only for a better message; the build error stands.
		return nil
	}
	failed := map[string]bool{}
	for _, m := range failedPackageRE.FindAllSubmatch(out, -1) {
		failed[string(m[1])] = true
	}
	emptyDirs := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if m := noFilesRE.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			emptyDirs[filepath.Clean(m[1])] = true
		}
	}
	byPath := map[string]*listedPackage{}
	for i := range pkgs {
		byPath[pkgs[i].ImportPath] = &pkgs[i]
	}
	explains := func(c *listedPackage) bool {
		if failed[c.ImportPath] || emptyDirs[filepath.Clean(c.Dir)] {
			return true
		}
		// An importer that failed on names only c's cgo files define.
		for f := range failed {
			p := byPath[f]
			if p != nil && slices.Contains(p.Imports, c.ImportPath) && bytes.Contains(out, []byte("undefined: "+c.Name+".")) {
				return true
			}
		}
		return false
	}
	// `go list -deps` prints dependencies before their importers and the
	// named package last.
	root := pkgs[len(pkgs)-1].ImportPath
	for i := range pkgs {
		c := &pkgs[i]
		if c.Standard || len(c.CgoFiles) == 0 || !explains(c) {
			continue
		}
		file := filepath.Join(c.Dir, c.CgoFiles[0])
		if rel, err := filepath.Rel(dir, file); err == nil && !strings.HasPrefix(rel, "..") {
			file = rel
		}
		e := &CompileError{Package: j.display, Target: j.platform(),
			Err: &CgoError{Package: c.ImportPath, File: file, Chain: importChain(byPath, root, c.ImportPath)}}
		if len(j.services) > 0 {
			e.Service = j.services[0]
		}
		return e
	}
	return nil
}

// listWithCgo runs `go list -deps -json` for the job's platform with cgo
// enabled, so that packages report the files that import "C".
func (g *goTool) listWithCgo(ctx context.Context, dir, pkg string, j *job) ([]listedPackage, error) {
	cmd := exec.CommandContext(ctx, g.cmd, "list", "-e", "-deps", "-json=ImportPath,Name,Dir,Standard,CgoFiles,Imports", pkg)
	cmd.Dir = dir
	// The last value of a variable wins, so these override the user's.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "GOOS="+j.goos, "GOARCH="+j.goarch)
	if j.goarm != "" {
		cmd.Env = append(cmd.Env, "GOARM="+j.goarm)
	}
	out, err := cmd.Output()
	if err != nil {
		return nil, err
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listedPackage
		err := dec.Decode(&p)
		if errors.Is(err, io.EOF) {
			return pkgs, nil
		}
		if err != nil {
			return nil, err
		}
		pkgs = append(pkgs, p)
	}
}

// importChain returns the shortest import path from root to target.
func importChain(byPath map[string]*listedPackage, root, target string) []string {
	prev := map[string]string{root: ""}
	queue := []string{root}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if cur == target {
			var chain []string
			for p := target; p != ""; p = prev[p] {
				chain = append([]string{p}, chain...)
			}
			return chain
		}
		if p := byPath[cur]; p != nil {
			for _, imp := range p.Imports {
				if _, seen := prev[imp]; !seen {
					prev[imp] = cur
					queue = append(queue, imp)
				}
			}
		}
	}
	return []string{target}
}
