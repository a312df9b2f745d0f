// Package pullrig is the rig of the benches that run the appliance's own
// pull code on the host (bench/delta, bench/fleet): it builds releases of
// a copy of examples/hello, each differing from the last by one changed
// line, publishes them signed to a registry, and makes file-backed
// appliances that pull them. A Device is one appliance's update engine as
// the agent runs it — an update.Manager over a boot directory, a running
// slot a (a read-only file many devices share) and its own slot b, and a
// pull.Puller with its own state directory and HTTP client — with nothing
// but the kernel and the reboot left out. A CountingProxy in front of the
// registry counts what the registry served.
package pullrig

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/ingotdev/ingot/builder/assemble"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/internal/regtest"
	"github.com/ingotdev/ingot/internal/vmtest"
	"github.com/ingotdev/ingot/mgmt/publish"
)

// The target the rig builds for, and its GOARCH.
const (
	Target = config.TargetVMAmd64
	Arch   = "amd64"
)

// helloDir is examples/hello, relative to the repository root.
const helloDir = "examples/hello"

// helloModule is the go.mod that makes the copy's service a module of its
// own (in the repository it belongs to ingot's module).
const helloModule = "module hello\n\ngo 1.26\n"

// CopyHello copies examples/hello (its service as a module of its own,
// its config and its .ingot directory) to dir. It must run from the
// repository root.
func CopyHello(dir string) error {
	if _, err := os.Stat(filepath.Join(helloDir, config.FileName)); err != nil {
		return fmt.Errorf("pullrig: %w (run from the repository root)", err)
	}
	for _, sub := range []string{".ingot", "cmd"} {
		if err := os.CopyFS(filepath.Join(dir, sub), os.DirFS(filepath.Join(helloDir, sub))); err != nil {
			return fmt.Errorf("pullrig: copy %s: %w", filepath.Join(helloDir, sub), err)
		}
	}
	cfg, err := os.ReadFile(filepath.Join(helloDir, config.FileName))
	if err != nil {
		return fmt.Errorf("pullrig: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, config.FileName), cfg, 0o644); err != nil {
		return fmt.Errorf("pullrig: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(helloModule), 0o644); err != nil {
		return fmt.Errorf("pullrig: %w", err)
	}
	return nil
}

// ChangeLine replaces the text old, which must occur exactly once in the
// file path, by new: the one-line change between two releases.
func ChangeLine(path, old, new string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("pullrig: %w", err)
	}
	if n := bytes.Count(b, []byte(old)); n != 1 {
		return fmt.Errorf("pullrig: %s: %q occurs %d times, want exactly once", path, old, n)
	}
	info, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("pullrig: %w", err)
	}
	if err := os.WriteFile(path, bytes.Replace(b, []byte(old), []byte(new), 1), info.Mode().Perm()); err != nil {
		return fmt.Errorf("pullrig: %w", err)
	}
	return nil
}

// Release is one built release of the appliance.
type Release struct {
	// Name is the appliance's name (ingot.yaml name:).
	Name   string
	Number uint64
	// Image is the disk image's path.
	Image  string
	Report *assemble.Report
}

// Workspace is a bench's work directory: the appliance's source (App),
// the build cache and the images it builds.
type Workspace struct {
	Dir string
	// App is the appliance directory built (a CopyHello copy).
	App string
	// Progress receives the build's and the publisher's progress; nil
	// discards it.
	Progress io.Writer
	// Logf reports each build and publish in one line; nil: silent.
	Logf func(format string, args ...any)
}

// NewWorkspace checks that the environment names the amd64 kernel, makes
// a temporary work directory for bench name with a CopyHello copy in it
// (App) and returns it with the function that removes it; with keep the
// directory stays and its path is logged.
func NewWorkspace(name string, keep bool, logf func(format string, args ...any)) (*Workspace, func(), error) {
	if _, err := vmtest.KernelDeb("amd64"); err != nil {
		return nil, nil, err
	}
	tmp, err := os.MkdirTemp("", "ingot-bench-"+name+"-")
	if err != nil {
		return nil, nil, err
	}
	cleanup := func() { os.RemoveAll(tmp) }
	if keep {
		logf("work directory: %s", tmp)
		cleanup = func() {}
	}
	w := &Workspace{Dir: tmp, App: filepath.Join(tmp, "hello"), Logf: logf}
	if err := CopyHello(w.App); err != nil {
		cleanup()
		return nil, nil, err
	}
	return w, cleanup, nil
}

func (w *Workspace) progress() io.Writer {
	if w.Progress == nil {
		return io.Discard
	}
	return w.Progress
}

func (w *Workspace) logf(format string, args ...any) {
	if w.Logf != nil {
		w.Logf(format, args...)
	}
}

// Build builds the appliance directory as release n for Target into
// Dir/hello-<n>.img.
func (w *Workspace) Build(ctx context.Context, n uint64) (Release, error) {
	cfg, err := config.Load(filepath.Join(w.App, config.FileName))
	if err != nil {
		return Release{}, fmt.Errorf("pullrig: release %d: %w", n, err)
	}
	cfg.Release = n
	img := filepath.Join(w.Dir, fmt.Sprintf("hello-%d.img", n))
	start := time.Now()
	rep, err := assemble.Image(ctx, cfg, Target, img,
		assemble.WithCacheDir(filepath.Join(w.Dir, "cache")), assemble.WithProgress(w.progress()))
	if err != nil {
		return Release{}, fmt.Errorf("pullrig: release %d: %w", n, err)
	}
	w.logf("release %d: build %s, root %d bytes, built in %s", n, rep.BuildID, rep.RootBytes, time.Since(start).Round(time.Millisecond))
	return Release{Name: cfg.Name, Number: n, Image: img, Report: rep}, nil
}

// Publish publishes release r as host/repo:tag over plain HTTP and signs
// it with key as `cosign sign --key` does. With a deltaFrom tag, the
// release carries patches against the release there (publish.WithDeltaFrom),
// as `ingot publish` makes them against what the tag held.
func (w *Workspace) Publish(ctx context.Context, host, repo, tag string, r Release, key *ecdsa.PrivateKey, deltaFrom string) (*publish.Result, error) {
	t, err := name.NewTag(host+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return nil, fmt.Errorf("pullrig: %w", err)
	}
	opts := []publish.Option{publish.WithLog(w.progress())}
	if deltaFrom != "" {
		opts = append(opts, publish.WithDeltaFrom(t.Context().Tag(deltaFrom)))
	}
	start := time.Now()
	res, err := publish.Push(ctx, t, []publish.Image{{Path: r.Image, Created: r.Report.Created, SBOM: r.Report.SBOM}}, opts...)
	if err != nil {
		return nil, fmt.Errorf("pullrig: publish release %d: %w", r.Number, err)
	}
	if _, err := publish.Sign(ctx, t.Context(), res.Digest, key); err != nil {
		return nil, fmt.Errorf("pullrig: sign release %d: %w", r.Number, err)
	}
	w.logf("published %s as %s in %s: %d bytes of blobs, %d uploaded", r.Image, res.Ref,
		time.Since(start).Round(time.Millisecond), res.Bytes, res.BytesUploaded)
	return res, nil
}

// PublishReleases starts a docker-registry with its storage in the
// workspace and publishes rels to host/repo, each under its release number
// as tag, signed with a new key; every release after the first carries
// patches against the first (what the benches' devices run). The caller
// stops the registry.
func (w *Workspace) PublishReleases(ctx context.Context, repo string, rels []Release) (*regtest.Registry, *ecdsa.PrivateKey, error) {
	reg, err := regtest.Launch(ctx, filepath.Join(w.Dir, "registry"))
	if err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		reg.Stop()
		return nil, nil, fmt.Errorf("pullrig: %w", err)
	}
	for i, r := range rels {
		base := ""
		if i > 0 {
			base = fmt.Sprint(rels[0].Number)
		}
		if _, err := w.Publish(ctx, reg.Host, repo, fmt.Sprint(r.Number), r, key, base); err != nil {
			reg.Stop()
			return nil, nil, err
		}
	}
	return reg, key, nil
}
