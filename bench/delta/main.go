// Command delta measures what a chunked release saves an appliance that
// pulls an update: it builds a copy of examples/hello for vm-amd64,
// publishes it as release 1 to an in-process registry, changes one line
// of hello's main.go (the default greeting, to a longer string), builds
// and publishes release 2, and then does what an appliance running
// release 1 does: it cuts its running root (release 1's) with
// packer/format/cdc, takes every chunk of release 2's RootPlan whose
// digest it already has, fetches the rest through the verifying reader,
// and checks the assembled root against the chunk index's digest. Release
// 3 does the same with a greeting of the same length (printed before the
// RESULT). It ends with
//
//	RESULT delta root_bytes=… fetched_bytes=… ratio=… anchor_bytes=…
//
// where root_bytes is release 2's root, fetched_bytes the distinct chunks
// fetched, ratio = fetched_bytes / root_bytes, and the anchor is what
// `ingot update` (and a release with one root layer) sends today: the
// whole root.
//
// Usage (kernels from `make setup`):
//
//	INGOT_KERNEL_DEB=.cache/kernels/linux-image-cloud-amd64.deb go run ./bench/delta
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ingotdev/ingot/builder/assemble"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/builder/oci/ocitest"
	"github.com/ingotdev/ingot/mgmt/publish"
	"github.com/ingotdev/ingot/mgmt/release"
	"github.com/ingotdev/ingot/mgmt/release/cosignkey"
	"github.com/ingotdev/ingot/packer/format/cdc"
	"github.com/ingotdev/ingot/packer/format/image"
	"github.com/ingotdev/ingot/packer/format/slot"
)

// The one-line changes: hello's default greeting, to a longer one (the
// RESULT) and to one of the same length (printed for comparison: Go's
// linker sorts read-only data by size, so a string whose length changes
// moves the data after it and every instruction that refers to that data).
const (
	greetingLine = `greeting = "hello from ingot"`
	longerLine   = `greeting = "hello from ingot, release 2"`
	sameSizeLine = `greeting = "hallo from ingot"`
)

func main() {
	verbose := flag.Bool("v", false, "print the build's and the publisher's progress")
	keep := flag.Bool("keep", false, "keep the work directory (both images) and print its path")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *verbose, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "bench/delta:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

func run(ctx context.Context, verbose, keep bool) error {
	if os.Getenv("INGOT_KERNEL_DEB") == "" {
		return errors.New("INGOT_KERNEL_DEB is not set: export INGOT_KERNEL_DEB=.cache/kernels/linux-image-cloud-amd64.deb (make setup downloads it)")
	}
	tmp, err := os.MkdirTemp("", "ingot-bench-delta-")
	if err != nil {
		return err
	}
	if keep {
		logf("work directory: %s", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	progress := io.Discard
	if verbose {
		progress = os.Stderr
	}
	app := filepath.Join(tmp, "hello")
	if err := copyHello(app); err != nil {
		return err
	}
	reg := ocitest.NewRegistry()
	defer reg.Close()
	key, err := cosignkey.Generate()
	if err != nil {
		return err
	}
	b := &bench{tmp: tmp, app: app, host: reg.Host, key: key, progress: progress}

	img1, err := b.release(ctx, 1)
	if err != nil {
		return err
	}
	mainGo := filepath.Join(app, "cmd/hello/main.go")
	src, err := os.ReadFile(mainGo)
	if err != nil {
		return err
	}
	if bytes.Count(src, []byte(greetingLine)) != 1 {
		return fmt.Errorf("%s: no single line %q to change", mainGo, greetingLine)
	}
	var results []delta
	for i, line := range []string{longerLine, sameSizeLine} {
		n := uint64(i + 2)
		if err := os.WriteFile(mainGo, bytes.Replace(src, []byte(greetingLine), []byte(line), 1), 0o644); err != nil {
			return err
		}
		logf("release %d: one line of cmd/hello/main.go changed: %s -> %s", n, greetingLine, line)
		if _, err := b.release(ctx, n); err != nil {
			return err
		}
		d, err := b.pull(ctx, n, img1)
		if err != nil {
			return err
		}
		results = append(results, d)
	}
	same := results[1]
	fmt.Printf("same-length greeting: root_bytes=%d fetched_bytes=%d ratio=%.4f\n", same.root, same.fetched, same.ratio())
	r := results[0]
	fmt.Printf("RESULT delta root_bytes=%d fetched_bytes=%d ratio=%.4f anchor_bytes=%d\n", r.root, r.fetched, r.ratio(), r.root)
	return nil
}

// delta is what an appliance fetches of a release's root.
type delta struct{ root, fetched int64 }

func (d delta) ratio() float64 { return float64(d.fetched) / float64(d.root) }

// pull does what an appliance running image running does to update
// to release n: verify it, plan its root, reuse the chunks of the running
// root, fetch the rest (each distinct chunk once) and check the assembled
// root against the chunk index's digest.
func (b *bench) pull(ctx context.Context, n uint64, running string) (delta, error) {
	rel, err := release.Verify(ctx, b.tag(n), release.Policy{Keys: []*ecdsa.PublicKey{&b.key.PublicKey}, RunningRelease: 1})
	if err != nil {
		return delta{}, err
	}
	target, err := rel.Target(string(config.TargetVMAmd64))
	if err != nil {
		return delta{}, err
	}
	plan, err := rel.RootPlan(target)
	if err != nil {
		return delta{}, err
	}
	local, err := localChunks(ctx, running)
	if err != nil {
		return delta{}, err
	}
	whole := sha256.New()
	fetched := map[v1.Hash][]byte{}
	var fetchedBytes, reusedBytes int64
	for _, p := range plan.Pieces {
		data, ok := local[p.Digest]
		if ok {
			reusedBytes += p.Size
		} else if data, ok = fetched[p.Digest]; !ok {
			if data, err = fetch(rel, p.Blob); err != nil {
				return delta{}, err
			}
			fetched[p.Digest] = data
			fetchedBytes += p.Size
		}
		whole.Write(data)
	}
	if got := hex.EncodeToString(whole.Sum(nil)); got != plan.Digest.Hex {
		return delta{}, fmt.Errorf("release %d: the assembled root has digest sha256:%s, the chunk index says %s", n, got, plan.Digest)
	}
	logf("release %d pulled by an appliance on release 1: root %d bytes in %d chunks; %d bytes reused from the running root (%d distinct chunks there), %d distinct chunks (%d bytes) fetched; the assembled root matches %s",
		n, plan.Size, len(plan.Pieces), reusedBytes, len(local), len(fetched), fetchedBytes, plan.Digest)
	return delta{root: plan.Size, fetched: fetchedBytes}, nil
}

// bench holds what the two releases share: the appliance directory (one
// TLS identity and token for both), the registry and the signing key.
type bench struct {
	tmp, app string
	host     string
	key      *ecdsa.PrivateKey
	progress io.Writer
}

func (b *bench) tag(n uint64) name.Tag {
	t, _ := name.NewTag(fmt.Sprintf("%s/fleet/hello:%d", b.host, n))
	return t
}

// release builds the appliance directory as release n for vm-amd64,
// publishes and signs it, and returns the image's path.
func (b *bench) release(ctx context.Context, n uint64) (string, error) {
	cfg, err := config.Load(filepath.Join(b.app, config.FileName))
	if err != nil {
		return "", err
	}
	cfg.Release = n
	img := filepath.Join(b.tmp, fmt.Sprintf("hello-%d.img", n))
	start := time.Now()
	rep, err := assemble.Image(ctx, cfg, config.TargetVMAmd64, img,
		assemble.WithCacheDir(filepath.Join(b.tmp, "cache")), assemble.WithProgress(b.progress))
	if err != nil {
		return "", fmt.Errorf("release %d: %w", n, err)
	}
	logf("release %d: build %s, root %d bytes, built in %s", n, rep.BuildID, rep.RootBytes, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	var log bytes.Buffer
	res, err := publish.Push(ctx, b.tag(n), []publish.Image{{Path: img, Created: rep.Created, SBOM: rep.SBOM}},
		publish.WithLog(io.MultiWriter(&log, b.progress)))
	if err != nil {
		return "", fmt.Errorf("release %d: %w", n, err)
	}
	if _, err := publish.Sign(ctx, b.tag(n).Context(), res.Digest, b.key); err != nil {
		return "", fmt.Errorf("release %d: %w", n, err)
	}
	for _, line := range strings.Split(log.String(), "\n") {
		if strings.Contains(line, " chunks, ") {
			logf("release %d: %s", n, line)
		}
	}
	logf("release %d: published %s in %s: %d bytes of blobs, %d uploaded", n, res.Ref, time.Since(start).Round(time.Millisecond), res.Bytes, res.BytesUploaded)
	return img, nil
}

// localChunks cuts the root of image path (the running slot of an
// appliance on that release) and returns its chunks by digest.
func localChunks(ctx context.Context, path string) (map[v1.Hash][]byte, error) {
	im, err := image.Open(path)
	if err != nil {
		return nil, err
	}
	defer im.Close()
	root, err := im.RootSquashfs(slot.A)
	if err != nil {
		return nil, err
	}
	chunks := map[v1.Hash][]byte{}
	err = cdc.Split(ctx, root, func(_ int64, data []byte) error {
		sum := sha256.Sum256(data)
		chunks[v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}] = bytes.Clone(data)
		return nil
	})
	return chunks, err
}

// fetch reads blob d of rel whole through the verifying reader.
func fetch(rel *release.Release, d v1.Descriptor) ([]byte, error) {
	rc, err := rel.Open(d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// copyHello copies examples/hello (its service as a module of its own,
// its config and its .ingot directory) to dir.
func copyHello(dir string) error {
	const src = "examples/hello"
	if _, err := os.Stat(filepath.Join(src, config.FileName)); err != nil {
		return fmt.Errorf("%w (run from the repository root)", err)
	}
	for _, sub := range []string{".ingot", "cmd"} {
		if err := os.CopyFS(filepath.Join(dir, sub), os.DirFS(filepath.Join(src, sub))); err != nil {
			return err
		}
	}
	for name, data := range map[string]string{config.FileName: "", "go.mod": "module hello\n\ngo 1.26\n"} {
		if data == "" {
			b, err := os.ReadFile(filepath.Join(src, name))
			if err != nil {
				return err
			}
			data = string(b)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			return err
		}
	}
	return nil
}
