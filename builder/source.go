package builder

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
)

// IngotModule is the module path of ingot, whose ingot-init every image
// runs.
const IngotModule = "github.com/ingotdev/ingot"

// ingotSource says how to build ingot-init.
type ingotSource struct {
	// dir is the root of the ingot module's source; ingot-init is built
	// there as ./appliance/cmd/ingot-init.
	dir string
	// how names the rule that found it, for errors.
	how string
}

// locateIngot finds the ingot source to build ingot-init from, in order:
//
//  1. WithIngotSource(dir);
//  2. the ingot module as the config directory's module sees it
//     (`go list -m github.com/ingotdev/ingot` there): this repository
//     for the examples, or the version a user's module requires, so the
//     user's go.mod pins the appliance version. ingot-init is built inside
//     that module's own directory, with ingot's go.mod and go.sum: the
//     user's go.sum need not list ingot-init's dependencies;
//  3. $INGOT_SOURCE;
//  4. the source this ingot binary was built from, if it still exists
//     (a binary built without -trimpath records its source paths);
//  5. the module cache copy of the version this binary was built as
//     (after `go install github.com/ingotdev/ingot/cmd/ingot@vX`).
func locateIngot(ctx context.Context, g *goTool, configDir string, o options) (ingotSource, error) {
	local := func(dir, how string) (ingotSource, error) {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return ingotSource{}, fmt.Errorf("builder: ingot source (%s): %w", how, err)
		}
		if err := isIngotModule(abs); err != nil {
			return ingotSource{}, fmt.Errorf("builder: ingot source %s (%s): %w", abs, how, err)
		}
		return ingotSource{dir: abs, how: how}, nil
	}
	if o.ingotSource != "" {
		return local(o.ingotSource, "WithIngotSource")
	}
	if out, err := g.run(ctx, configDir, nil, "list", "-m", "-f", "{{.Dir}}", IngotModule); err == nil {
		dir := strings.TrimSpace(string(out))
		if dir == "" {
			// Required but not downloaded yet.
			out, err := g.run(ctx, configDir, nil, "mod", "download", "-json", IngotModule)
			var info struct{ Dir string }
			if err != nil || json.Unmarshal(out, &info) != nil || info.Dir == "" {
				return ingotSource{}, fmt.Errorf("builder: go mod download %s in %s: %v\n%s", IngotModule, configDir, err, out)
			}
			dir = info.Dir
		}
		return local(dir, "required by the module of "+configDir)
	}
	if err := ctx.Err(); err != nil {
		return ingotSource{}, err
	}
	if dir := o.getenv("INGOT_SOURCE"); dir != "" {
		return local(dir, "$INGOT_SOURCE")
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		dir := filepath.Dir(filepath.Dir(file))
		if isIngotModule(dir) == nil {
			return local(dir, "the source this ingot was built from")
		}
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Path == IngotModule && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		if out, err := g.run(ctx, configDir, nil, "env", "GOMODCACHE"); err == nil {
			dir := filepath.Join(strings.TrimSpace(string(out)), IngotModule+"@"+bi.Main.Version)
			if isIngotModule(dir) == nil {
				return local(dir, "the module cache")
			}
		}
	}
	return ingotSource{}, fmt.Errorf("builder: cannot find the ingot source to build ingot-init for the appliance: "+
		"%s is not in a module that requires %s; set INGOT_SOURCE to a checkout of it", configDir, IngotModule)
}

// isIngotModule checks that dir holds the ingot module's go.mod.
func isIngotModule(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return fmt.Errorf("no go.mod: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if mod, ok := strings.CutPrefix(line, "module "); ok {
			mod = strings.Trim(strings.TrimSpace(mod), `"`)
			if mod != IngotModule {
				return fmt.Errorf("go.mod is module %s, not %s", mod, IngotModule)
			}
			return nil
		}
	}
	return fmt.Errorf("go.mod has no module line")
}
