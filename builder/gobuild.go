package builder

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/internal/filelock"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// InitPackage is the import path of the appliance's PID 1.
const InitPackage = "github.com/ingotdev/ingot/appliance/cmd/ingot-init"

// Stage0Package is the import path of /init in a VM's initramfs, which
// finds and mounts the root and executes ingot-init there.
const Stage0Package = "github.com/ingotdev/ingot/appliance/cmd/ingot-stage0"

// DHCPPackage is the DHCP client added as a system service when the
// network is configured by DHCP. It is built in the ingot module like
// ingot-init, so the version pinned in ingot's go.mod (a tool directive)
// is the one every image gets, and it builds offline from the module cache.
const DHCPPackage = "github.com/gokrazy/gokrazy/cmd/dhcp"

// goFlags are the flags of every `go build`. -trimpath and -buildvcs=false
// make the binary independent of where the source lives and of the VCS
// state, so the same source gives the same bytes. -s -w drop the symbol
// table and DWARF (about a third of the size): nobody runs a debugger on
// an appliance, and panics still print function names and lines, which
// come from pclntab, not from the symbol table.
var goFlags = []string{"-trimpath", "-buildvcs=false", "-ldflags=-s -w"}

// goTool runs the go command for compiles and queries.
type goTool struct {
	cmd      string
	getenv   func(string) string
	cacheDir string
	progress *progress
}

// job is one distinct binary to compile. Several services naming the same
// package share a job.
type job struct {
	// dir is where go runs; pkg is the package argument.
	dir, pkg string
	// version, when set, builds pkg@version in a generated module.
	version string
	goos    string
	goarch  string
	goarm   string
	// label names the job in errors and progress ("service hello").
	label    string
	services []string
	display  string // the package as configured

	// Filled by build.
	out       string
	data      []byte
	sum       string
	goVersion string
}

// planJobs lists the compiles of a build: ingot-init, ingot-stage0 for a
// VM (nil for a Raspberry Pi, which boots without an initramfs), and the
// programs of the Go services and the DHCP client, one per distinct
// package.
func planJobs(cfg *config.Config, target config.Target, src ingotSource) (initJob, stage0Job *job, programs []*job) {
	newJob := func(dir, pkg, version, label, display string) *job {
		return &job{dir: dir, pkg: pkg, version: version, goos: "linux", goarch: target.Arch(),
			goarm: target.GOARM(), label: label, display: display}
	}
	initJob = newJob(src.dir, "./appliance/cmd/ingot-init", "", "ingot-init", InitPackage)
	if target.IsVM() {
		stage0Job = newJob(src.dir, "./appliance/cmd/ingot-stage0", "", "ingot-stage0", Stage0Package)
	}
	byKey := map[string]*job{}
	for _, s := range cfg.Services {
		if s.Go == nil {
			continue
		}
		key := s.Go.String()
		if j, ok := byKey[key]; ok {
			j.services = append(j.services, s.Name)
			continue
		}
		j := newJob(cfg.Dir, s.Go.Path, s.Go.Version, fmt.Sprintf("service %q", s.Name), s.Go.String())
		j.services = []string{s.Name}
		byKey[key] = j
		programs = append(programs, j)
	}
	if usesDHCP(cfg) {
		j := newJob(src.dir, DHCPPackage, "", "system service "+strconv.Quote(spec.DHCPServiceName), DHCPPackage)
		j.services = []string{spec.DHCPServiceName}
		programs = append(programs, j)
	}
	if usesWiFi(cfg, target) {
		j := newJob(src.dir, "./appliance/cmd/ingot-wifi", "", "system service "+strconv.Quote(spec.WiFiServiceName), WiFiPackage)
		j.services = []string{spec.WiFiServiceName}
		programs = append(programs, j)
	}
	return initJob, stage0Job, programs
}

// WiFiPackage is the Wi-Fi client added as a system service to Pi images
// with network.wifi; it is built from the ingot module like ingot-init.
const WiFiPackage = "github.com/ingotdev/ingot/appliance/cmd/ingot-wifi"

// usesWiFi reports whether the image of target gets Wi-Fi: a Raspberry Pi
// with network.wifi (VM targets ignore it).
func usesWiFi(cfg *config.Config, target config.Target) bool {
	return cfg.Network.WiFi != nil && !target.IsVM()
}

// usesDHCP reports whether the image gets the DHCP client.
func usesDHCP(cfg *config.Config) bool { return cfg.Network.Mode == config.NetworkDHCP }

// CompileError is a Go package that did not build.
type CompileError struct {
	// Service is the service whose package failed, or "" for ingot-init
	// and ingot-stage0.
	Service string
	Package string
	Target  string // GOOS/GOARCH
	// Output is what the go command printed.
	Output string
	Err    error
}

func (e *CompileError) Error() string {
	what := path.Base(e.Package) // ingot-init, ingot-stage0
	if e.Service != "" {
		what = fmt.Sprintf("service %q", e.Service)
	}
	out := strings.TrimRight(e.Output, "\n")
	if out != "" {
		out = "\n\t" + strings.ReplaceAll(out, "\n", "\n\t")
	}
	return fmt.Sprintf("builder: %s: go build %s for %s: %v%s", what, e.Package, e.Target, e.Err, out)
}

func (e *CompileError) Unwrap() error { return e.Err }

func (j *job) platform() string {
	if j.goarm != "" {
		return j.goos + "/" + j.goarch + "/v" + j.goarm
	}
	return j.goos + "/" + j.goarch
}

// outPath is the job's stable place in the cache: the same package,
// directory and platform always compile to the same file, which lets
// `go build` see that it is up to date.
func (g *goTool) outPath(j *job) string {
	h := sha256.New()
	for _, s := range append([]string{"v1", j.dir, j.pkg, j.version, j.platform()}, goFlags...) {
		fmt.Fprintf(h, "%q\n", s)
	}
	name := filepath.Base(j.pkg)
	if name == "." || name == ".." || name == "/" {
		name = "main"
	}
	return filepath.Join(g.cacheDir, "go", hex.EncodeToString(h.Sum(nil))[:20], name)
}

func (g *goTool) build(ctx context.Context, j *job) error {
	start := time.Now()
	dir, pkg := j.dir, j.pkg
	if j.version != "" {
		var err error
		if dir, err = g.versionModule(ctx, j); err != nil {
			return err
		}
	}
	j.out = g.outPath(j)
	if err := os.MkdirAll(filepath.Dir(j.out), 0o755); err != nil {
		return fmt.Errorf("builder: %s: %w", j.label, err)
	}
	unlock, err := filelock.Lock(j.out + ".lock")
	if err != nil {
		return fmt.Errorf("builder: %s: %w", j.label, err)
	}
	defer unlock()
	args := append(append([]string{"build"}, goFlags...), "-o", j.out, pkg)
	if out, err := g.run(ctx, dir, j, args...); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if cgo := g.cgoError(ctx, dir, pkg, j, out); cgo != nil {
			return cgo
		}
		return j.compileError(out, err)
	}
	data, err := os.ReadFile(j.out)
	if err != nil {
		return fmt.Errorf("builder: %s: %w", j.label, err)
	}
	sum := sha256.Sum256(data)
	j.data, j.sum = data, hex.EncodeToString(sum[:])
	if bi, err := buildinfo.Read(bytes.NewReader(data)); err == nil {
		j.goVersion = bi.GoVersion
	}
	g.progress.printf("go build %s (%s) %s", j.display, j.platform(), seconds(time.Since(start)))
	return nil
}

func (j *job) compileError(out []byte, err error) error {
	e := &CompileError{Package: j.display, Target: j.platform(), Output: string(out), Err: err}
	if len(j.services) > 0 {
		e.Service = j.services[0]
	}
	return e
}

// run runs the go command in dir for the job's platform and returns its
// combined output.
func (g *goTool) run(ctx context.Context, dir string, j *job, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, g.cmd, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if j != nil {
		// Pin every variable that selects instructions, so a GOAMD64=v3
		// in the user's environment cannot make binaries that fault on
		// older CPUs (or QEMU's default one) or differ between machines.
		cmd.Env = append(cmd.Env, "GOOS="+j.goos, "GOARCH="+j.goarch, "GOAMD64=v1", "GOARM64=v8.0", "GO386=sse2")
		if j.goarm != "" {
			cmd.Env = append(cmd.Env, "GOARM="+j.goarm)
		}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	killGroupOnCancel(cmd)
	err := cmd.Run()
	return out.Bytes(), err
}

// versionModule prepares a generated module that requires pkg@version, so
// a service can name any published package without the config directory
// being a module that depends on it. The module lives in the cache, keyed
// by pkg@version; an exact version is fetched once, a query such as
// @latest is re-resolved on every build.
func (g *goTool) versionModule(ctx context.Context, j *job) (string, error) {
	sum := sha256.Sum256([]byte(j.pkg + "@" + j.version))
	dir := filepath.Join(g.cacheDir, "gomod", hex.EncodeToString(sum[:])[:20])
	done := filepath.Join(dir, ".ingot-ready")
	if _, err := os.Stat(done); err == nil && exactVersion(j.version) {
		return dir, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("builder: %s: %w", j.label, err)
	}
	unlock, err := filelock.Lock(filepath.Join(dir, ".lock"))
	if err != nil {
		return "", fmt.Errorf("builder: %s: %w", j.label, err)
	}
	defer unlock()
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); os.IsNotExist(err) {
		if out, err := g.run(ctx, dir, nil, "mod", "init", "ingot.build/service"); err != nil {
			return "", j.compileError(out, fmt.Errorf("go mod init: %w", err))
		}
	}
	if out, err := g.run(ctx, dir, nil, "get", j.pkg+"@"+j.version); err != nil {
		return "", j.compileError(out, fmt.Errorf("go get %s@%s: %w", j.pkg, j.version, err))
	}
	if err := os.WriteFile(done, nil, 0o644); err != nil {
		return "", fmt.Errorf("builder: %s: %w", j.label, err)
	}
	return dir, nil
}

// exactVersion reports whether v names one fixed version (v1.2.3 or a
// pseudo-version) rather than a query (latest, a branch, >v1).
func exactVersion(v string) bool {
	if !strings.HasPrefix(v, "v") || strings.ContainsAny(v, "<>=") {
		return false
	}
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(parts) != 3 {
		return false
	}
	for _, p := range parts[:2] {
		if p == "" || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}
