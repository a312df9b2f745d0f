package oci_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/ingotdev/ingot/builder/oci"
	"github.com/ingotdev/ingot/builder/oci/flatten"
	"github.com/ingotdev/ingot/builder/oci/ocitest"
	"github.com/ingotdev/ingot/packer/rootfs"
)

var (
	amd64 = v1.Platform{OS: "linux", Architecture: "amd64"}
	arm64 = v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	armv7 = v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}
)

// archImage is a two-layer image for p whose /arch names p, with a
// whiteout in the second layer.
func archImage(t *testing.T, p v1.Platform) v1.Image {
	t.Helper()
	l1, err := ocitest.LayerOf(ocitest.File("arch", "wrong"), ocitest.File("etc/gone", "x"))
	if err != nil {
		t.Fatal(err)
	}
	l2, err := ocitest.LayerOf(ocitest.File("arch", p.String()), ocitest.Whiteout("etc", "gone"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := ocitest.Image(p, v1.Config{Entrypoint: []string{"/bin/" + p.Architecture}}, l1, l2)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func digest(t *testing.T, x interface{ Digest() (v1.Hash, error) }) v1.Hash {
	t.Helper()
	h, err := x.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func readTree(t *testing.T, tree *rootfs.Tree, p string) string {
	t.Helper()
	b, err := oci.ReadFile(tree, p, 1<<20)
	if err != nil {
		t.Fatalf("ReadFile(%s) = %v", p, err)
	}
	return string(b)
}

func flattenImage(t *testing.T, img *oci.Image) *rootfs.Tree {
	t.Helper()
	tree, err := flatten.Flatten(context.Background(), img.Layers)
	if err != nil {
		t.Fatalf("Flatten(%s) = %v", img.Ref, err)
	}
	return tree
}

func TestPullPlatforms(t *testing.T) {
	reg := ocitest.NewRegistry()
	defer reg.Close()
	imgs := map[string]v1.Image{"amd64": archImage(t, amd64), "arm64": archImage(t, arm64), "arm": archImage(t, armv7)}
	idx, err := ocitest.Index(imgs["amd64"], imgs["arm64"], imgs["arm"])
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Host + "/multi:1"
	if err := ocitest.Push(ref, idx); err != nil {
		t.Fatal(err)
	}
	store, err := oci.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, arch := range []string{"amd64", "arm64", "arm"} {
		want, err := oci.PlatformForArch(arch)
		if err != nil {
			t.Fatal(err)
		}
		var progress bytes.Buffer
		img, err := store.Pull(context.Background(), ref, want, oci.WithProgress(&progress))
		if err != nil {
			t.Fatalf("Pull(%s, %s) = %v", ref, want, err)
		}
		if got, wantD := img.Digest, digest(t, imgs[arch]); got != wantD {
			t.Errorf("Pull(%s, %s).Digest = %s, want %s", ref, want, got, wantD)
		}
		if img.IndexDigest != digest(t, idx) {
			t.Errorf("Pull(%s, %s).IndexDigest = %s, want %s", ref, want, img.IndexDigest, digest(t, idx))
		}
		tree := flattenImage(t, img)
		if got := readTree(t, tree, "/arch"); !strings.HasPrefix(got, "linux/"+arch) {
			t.Errorf("Pull(%s, %s): /arch = %q", ref, want, got)
		}
		if _, ok := tree.Get("/etc/gone"); ok {
			t.Errorf("Pull(%s, %s): /etc/gone survived its whiteout", ref, want)
		}
		if rc := oci.RunConfigOf(img.Config); len(rc.Entrypoint) != 1 || rc.Entrypoint[0] != "/bin/"+arch {
			t.Errorf("Pull(%s, %s) entrypoint = %q", ref, want, rc.Entrypoint)
		}
		if !strings.Contains(progress.String(), "layer 2/2") {
			t.Errorf("Pull(%s, %s) progress = %q, want a line per layer", ref, want, progress.String())
		}
	}
}

func TestPullMissingPlatform(t *testing.T) {
	reg := ocitest.NewRegistry()
	defer reg.Close()
	idx, err := ocitest.Index(archImage(t, amd64), archImage(t, arm64))
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Host + "/two:1"
	if err := ocitest.Push(ref, idx); err != nil {
		t.Fatal(err)
	}
	store, _ := oci.OpenStore(t.TempDir())
	_, err = store.Pull(context.Background(), ref, armv7)
	if err == nil || !strings.Contains(err.Error(), ref) || !strings.Contains(err.Error(), "linux/arm/v7") ||
		!strings.Contains(err.Error(), "the image has linux/amd64, linux/arm64/v8") {
		t.Errorf("Pull(%s, arm/v7) = %v, want an error naming the image, the platform and those it has", ref, err)
	}
	// A single-platform image for another platform is refused too.
	single := reg.Host + "/single:1"
	if err := ocitest.Push(single, archImage(t, amd64)); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Pull(context.Background(), single, arm64); err == nil || !strings.Contains(err.Error(), "is for linux/amd64") {
		t.Errorf("Pull(amd64 image, arm64) = %v, want refused", err)
	}
}

func TestPullPinnedOffline(t *testing.T) {
	reg := ocitest.NewRegistry()
	idx, err := ocitest.Index(archImage(t, amd64), archImage(t, arm64))
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Host + "/pinned"
	if err := ocitest.Push(ref+":latest", idx); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	store, _ := oci.OpenStore(dir)
	pinned := ref + "@" + digest(t, idx).String()
	first, err := store.Pull(context.Background(), pinned, arm64)
	if err != nil {
		t.Fatalf("Pull(%s) = %v", pinned, err)
	}
	want := describe(t, flattenImage(t, first))
	reg.Close()

	// A fresh store on the same directory, the registry gone.
	store2, _ := oci.OpenStore(dir)
	var progress bytes.Buffer
	again, err := store2.Pull(context.Background(), pinned, arm64, oci.WithProgress(&progress))
	if err != nil {
		t.Fatalf("offline Pull(%s) = %v", pinned, err)
	}
	if again.Digest != first.Digest || again.IndexDigest != first.IndexDigest || len(again.Layers) != len(first.Layers) {
		t.Errorf("offline Pull = %s (index %s), want %s (index %s)", again.Digest, again.IndexDigest, first.Digest, first.IndexDigest)
	}
	if got := describe(t, flattenImage(t, again)); got != want {
		t.Errorf("offline Pull flattened to\n%s\nwant\n%s", got, want)
	}
	if !strings.Contains(progress.String(), "found in the store") {
		t.Errorf("offline Pull progress = %q", progress.String())
	}
	// The manifest digest pins as well as the index digest.
	byManifest := ref + "@" + first.Digest.String()
	if img, err := store2.Pull(context.Background(), byManifest, arm64); err != nil || img.Digest != first.Digest {
		t.Errorf("offline Pull(%s) = %v", byManifest, err)
	}
	// A platform the store lacks needs the network, which is gone.
	if _, err := store2.Pull(context.Background(), pinned, amd64); err == nil {
		t.Errorf("offline Pull(%s, amd64) succeeded without the amd64 layers", pinned)
	}
	// Tags always ask the registry.
	if _, err := store2.Pull(context.Background(), ref+":latest", arm64); err == nil {
		t.Errorf("offline Pull(tag) succeeded")
	}
	// The store is a valid OCI layout naming what was pulled.
	ii, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := ii.IndexManifest()
	if err != nil || len(im.Manifests) != 2 {
		t.Fatalf("store index.json = %v, %v; want the index and the arm64 manifest", im, err)
	}
	if _, err := ii.Image(first.Digest); err != nil {
		t.Errorf("store layout: image %s: %v", first.Digest, err)
	}
}

// describe lists a tree's paths, kinds and file contents.
func describe(t *testing.T, tree *rootfs.Tree) string {
	t.Helper()
	var b strings.Builder
	err := tree.Walk(func(p string, e *rootfs.Entry) error {
		b.WriteString(p + " " + e.Kind.String())
		if e.Kind == rootfs.KindFile {
			rc, err := e.Content.Open()
			if err != nil {
				return err
			}
			data, _ := io.ReadAll(rc)
			rc.Close()
			b.WriteString(" " + string(data))
		}
		b.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestPullLocalSources(t *testing.T) {
	tmp := t.TempDir()
	imgAmd, imgArm := archImage(t, amd64), archImage(t, arm64)
	idx, err := ocitest.Index(imgAmd, imgArm)
	if err != nil {
		t.Fatal(err)
	}
	lp := filepath.Join(tmp, "layout")
	if _, err := layout.Write(lp, idx); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(tmp, "img.tar")
	tag, _ := name.NewTag("example/img:1")
	if err := tarball.WriteToFile(archive, tag, imgArm); err != nil {
		t.Fatal(err)
	}
	store, _ := oci.OpenStore(filepath.Join(tmp, "store"))
	for _, tt := range []struct {
		ref  string
		want v1.Platform
	}{
		{"oci-layout:" + lp, arm64},
		{"oci-layout:" + lp, amd64},
		{"oci-layout:" + lp + "@" + digest(t, imgAmd).String(), amd64},
		{"docker-archive:" + archive, arm64},
	} {
		img, err := store.Pull(context.Background(), tt.ref, tt.want)
		if err != nil {
			t.Errorf("Pull(%s, %s) = %v", tt.ref, tt.want, err)
			continue
		}
		if got := readTree(t, flattenImage(t, img), "/arch"); got != tt.want.String() {
			t.Errorf("Pull(%s, %s): /arch = %q", tt.ref, tt.want, got)
		}
	}
	if _, err := store.Pull(context.Background(), "oci-layout:"+lp, armv7); err == nil || !strings.Contains(err.Error(), "no image for platform linux/arm/v7") {
		t.Errorf("Pull(layout, arm/v7) = %v, want no image for the platform", err)
	}
	if _, err := store.Pull(context.Background(), "docker-archive:"+filepath.Join(tmp, "missing.tar"), arm64); err == nil {
		t.Errorf("Pull(missing archive) succeeded")
	}
}

func TestPullCancelled(t *testing.T) {
	reg := ocitest.NewRegistry()
	defer reg.Close()
	ref := reg.Host + "/c:1"
	if err := ocitest.Push(ref, archImage(t, amd64)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	store, _ := oci.OpenStore(t.TempDir())
	if _, err := store.Pull(ctx, ref, amd64); !errors.Is(err, context.Canceled) {
		t.Errorf("Pull(cancelled) = %v, want context.Canceled", err)
	}
}

func TestPullCorruptLayer(t *testing.T) {
	reg := ocitest.NewRegistry()
	defer reg.Close()
	ref := reg.Host + "/x:1"
	img := archImage(t, amd64)
	if err := ocitest.Push(ref, img); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	store, _ := oci.OpenStore(dir)
	first, err := store.Pull(context.Background(), ref, amd64)
	if err != nil {
		t.Fatal(err)
	}
	// A tampered uncompressed layer is replaced on the next pull only if
	// missing; a tampered manifest blob is detected.
	if err := os.WriteFile(filepath.Join(dir, "blobs", "sha256", first.Digest.Hex), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	pinned := reg.Host + "/x@" + first.Digest.String()
	if _, err := store.Pull(context.Background(), pinned, amd64); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Errorf("Pull(tampered manifest) = %v, want a digest error", err)
	}
}

// TestPullDecompressionBomb performs the decompression bomb: a layer blob
// that inflates far beyond its size. The pull stops at the layer limit (and
// at the image limit across layers) with an error naming the layer, and
// nothing of it stays in the store.
func TestPullDecompressionBomb(t *testing.T) {
	reg := ocitest.NewRegistry()
	defer reg.Close()
	zeros := func(name string, n int) *ocitest.Layer {
		tb, err := ocitest.Tar(ocitest.Entry{Name: name, Body: make([]byte, n)})
		if err != nil {
			t.Fatal(err)
		}
		l, err := ocitest.NewLayer(tb, 9)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	big := zeros("zeros", 32<<20)
	if n, _ := big.Size(); n > 1<<20 {
		t.Fatalf("bomb blob is %d bytes, want it small", n)
	}
	a, b := zeros("a", 6<<20), zeros("b", 6<<20)
	tests := []struct {
		name   string
		layers []v1.Layer
		limits oci.Limits
		want   string
		layer  v1.Hash
	}{
		{"one layer", []v1.Layer{big}, oci.Limits{LayerBytes: 16 << 20, ImageBytes: 1 << 30}, "limit of one layer", digest(t, big)},
		{"the image", []v1.Layer{a, b}, oci.Limits{LayerBytes: 1 << 30, ImageBytes: 10 << 20}, "limit of one image", v1.Hash{}},
	}
	for i, tt := range tests {
		ref := fmt.Sprintf("%s/bomb%d:1", reg.Host, i)
		img, err := ocitest.Image(amd64, v1.Config{}, tt.layers...)
		if err != nil {
			t.Fatal(err)
		}
		if err := ocitest.Push(ref, img); err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		store, _ := oci.OpenStore(dir)
		_, err = store.Pull(context.Background(), ref, amd64, oci.WithLimits(tt.limits))
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "layer sha256:") {
			t.Errorf("%s: Pull = %v, want an error naming the layer and %q", tt.name, err, tt.want)
		} else if tt.layer.Hex != "" && !strings.Contains(err.Error(), tt.layer.String()) {
			t.Errorf("%s: Pull = %v, want it to name layer %s", tt.name, err, tt.layer)
		}
		var stored int64
		filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() {
				stored += fi.Size()
			}
			return nil
		})
		if stored > tt.limits.ImageBytes {
			t.Errorf("%s: the store holds %d bytes after the refusal, more than the image limit %d", tt.name, stored, tt.limits.ImageBytes)
		}
	}
}

// lyingLayer is a layer whose config entry (diff id) or blob does not
// match what it serves.
type lyingLayer struct {
	*ocitest.Layer
	compressed []byte  // served instead of the layer's blob, when set
	diffID     v1.Hash // claimed instead of the layer's, when set
}

func (l *lyingLayer) DiffID() (v1.Hash, error) {
	if l.diffID.Hex != "" {
		return l.diffID, nil
	}
	return l.Layer.DiffID()
}

func (l *lyingLayer) Digest() (v1.Hash, error) {
	if l.compressed != nil {
		h, _, err := v1.SHA256(bytes.NewReader(l.compressed))
		return h, err
	}
	return l.Layer.Digest()
}

func (l *lyingLayer) Compressed() (io.ReadCloser, error) {
	if l.compressed != nil {
		return io.NopCloser(bytes.NewReader(l.compressed)), nil
	}
	return l.Layer.Compressed()
}

func (l *lyingLayer) Size() (int64, error) {
	if l.compressed != nil {
		return int64(len(l.compressed)), nil
	}
	return l.Layer.Size()
}

// blobSwapper serves other bytes for one blob, as a hostile registry or
// a proxy on the way would.
type blobSwapper struct {
	digest v1.Hash
	body   []byte
}

func (b *blobSwapper) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil || req.Method != http.MethodGet || !strings.HasSuffix(req.URL.Path, "/blobs/"+b.digest.String()) {
		return resp, err
	}
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b.body))
	resp.ContentLength = int64(len(b.body))
	resp.Header.Set("Content-Length", fmt.Sprint(len(b.body)))
	return resp, nil
}

// TestPullHostileLayer performs the attacks on a layer: a blob whose
// bytes are not those its digest names (from a registry, and from a
// layout, which does not check blobs itself), a config that lies about a
// layer's uncompressed digest, and a blob with the right digest that is a
// truncated gzip stream. Each pull fails with an error naming the layer,
// and the store holds neither the blob nor its uncompressed form.
func TestPullHostileLayer(t *testing.T) {
	good, err := ocitest.LayerOf(ocitest.File("etc/motd", strings.Repeat("welcome\n", 5000)))
	if err != nil {
		t.Fatal(err)
	}
	other, err := ocitest.LayerOf(ocitest.File("etc/motd", strings.Repeat("you are owned\n", 5000)))
	if err != nil {
		t.Fatal(err)
	}
	otherBlob, err := other.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	otherBytes, _ := io.ReadAll(otherBlob)
	goodBlob, _ := good.Compressed()
	goodBytes, _ := io.ReadAll(goodBlob)
	diffOther, _ := other.DiffID()

	reg := ocitest.NewRegistry()
	defer reg.Close()
	tests := []struct {
		name  string
		layer v1.Layer
		// swap serves other bytes for the layer blob from the registry;
		// layout pulls from a layout whose blob file was replaced.
		swap, layout bool
		want         string
	}{
		{name: "registry serves other bytes", layer: good, swap: true, want: "sha256"},
		{name: "layout holds other bytes", layer: good, layout: true, want: "blob has digest"},
		{name: "config lies about the diff id", layer: &lyingLayer{Layer: good, diffID: diffOther}, want: "uncompressed layer has digest"},
		{name: "truncated gzip", layer: &lyingLayer{Layer: good, compressed: goodBytes[:len(goodBytes)/2]}, want: "gzip"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, err := ocitest.Image(amd64, v1.Config{}, tt.layer)
			if err != nil {
				t.Fatal(err)
			}
			layerDigest := digest(t, tt.layer)
			ref := fmt.Sprintf("%s/hostile%d:1", reg.Host, i)
			var opts []oci.Option
			switch {
			case tt.layout:
				lp := filepath.Join(t.TempDir(), "layout")
				p, err := layout.Write(lp, empty.Index)
				if err != nil {
					t.Fatal(err)
				}
				if err := p.AppendImage(img); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(lp, "blobs", "sha256", layerDigest.Hex), otherBytes, 0o644); err != nil {
					t.Fatal(err)
				}
				ref = "oci-layout:" + lp
			default:
				if err := ocitest.Push(ref, img); err != nil {
					t.Fatal(err)
				}
				if tt.swap {
					opts = append(opts, oci.WithTransport(&blobSwapper{digest: layerDigest, body: otherBytes}))
				}
			}
			dir := t.TempDir()
			store, _ := oci.OpenStore(dir)
			_, err = store.Pull(context.Background(), ref, amd64, opts...)
			if err == nil || !strings.Contains(err.Error(), "layer "+layerDigest.String()) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Pull = %v, want an error naming layer %s and %q", err, layerDigest, tt.want)
			}
			if _, err := os.Stat(filepath.Join(dir, "blobs", "sha256", layerDigest.Hex)); err == nil {
				t.Errorf("the store holds the refused blob")
			}
			diffs, _ := os.ReadDir(filepath.Join(dir, "diffs", "sha256"))
			blobs, _ := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
			for _, e := range append(diffs, blobs...) {
				if strings.HasPrefix(e.Name(), ".tmp-") {
					t.Errorf("the store keeps a temporary file %s", e.Name())
				}
			}
			if len(diffs) != 0 {
				t.Errorf("the store holds uncompressed layers %v after the refusal", diffs)
			}
		})
	}
}

// stallingBody sends a start and then nothing, until closed.
type stallingBody struct {
	start  []byte
	closed chan struct{}
	once   sync.Once
}

func (b *stallingBody) Read(p []byte) (int, error) {
	if len(b.start) > 0 {
		n := copy(p, b.start)
		b.start = b.start[n:]
		return n, nil
	}
	<-b.closed
	return 0, errors.New("read on closed body")
}

func (b *stallingBody) Close() error {
	b.once.Do(func() { close(b.closed) })
	return nil
}

// staller serves a layer blob as a corrupt gzip stream that then stalls,
// as a hostile registry could, to hold a build forever.
type staller struct{ digest v1.Hash }

func (s *staller) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil || req.Method != http.MethodGet || !strings.HasSuffix(req.URL.Path, "/blobs/"+s.digest.String()) {
		return resp, err
	}
	resp.Body.Close()
	// A gzip header, then a deflate block of the reserved type 3.
	start := append([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}, 0x07, 0, 0, 0)
	resp.Body = &stallingBody{start: start, closed: make(chan struct{})}
	resp.ContentLength = -1
	resp.Header.Del("Content-Length")
	return resp, nil
}

// TestPullCorruptStalledLayer performs the stall: a registry sends the
// start of a corrupt layer and then nothing. The pull fails on the corrupt
// start, naming the layer, instead of waiting for the rest.
func TestPullCorruptStalledLayer(t *testing.T) {
	reg := ocitest.NewRegistry()
	defer reg.Close()
	layer, err := ocitest.LayerOf(ocitest.File("etc/motd", "hello\n"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := ocitest.Image(amd64, v1.Config{}, layer)
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Host + "/stall:1"
	if err := ocitest.Push(ref, img); err != nil {
		t.Fatal(err)
	}
	store, _ := oci.OpenStore(t.TempDir())
	done := make(chan error, 1)
	go func() {
		_, err := store.Pull(context.Background(), ref, amd64, oci.WithTransport(&staller{digest: digest(t, layer)}))
		done <- err
	}()
	// Not a measure of speed: the pull either returns or waits forever.
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "layer "+digest(t, layer).String()) || !strings.Contains(err.Error(), "gzip") {
			t.Errorf("Pull = %v, want a gzip error naming the layer", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("Pull still waits for a stalled registry after its stream turned out corrupt")
	}
}
