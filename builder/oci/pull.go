package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/ingotdev/ingot/builder/oci/flatten"
	"golang.org/x/sync/errgroup"
)

// maxIndexDepth bounds nested indexes (an index of indexes), which some
// registries serve for attestations; real images need one level.
const maxIndexDepth = 4

// layerJobs is how many layers are fetched at once.
const layerJobs = 3

// Image is an image resolved for one platform, with everything it needs
// in the store.
type Image struct {
	// Ref is the reference as given to Pull.
	Ref string
	// Digest is the manifest of the image for the platform; IndexDigest
	// the index it was chosen from, zero when Ref named a manifest.
	Digest      v1.Hash
	IndexDigest v1.Hash
	// Platform is the image's own, from its config.
	Platform v1.Platform
	// Config is the image config; RawConfig its bytes as stored.
	Config    *v1.ConfigFile
	RawConfig []byte
	// Layers are the uncompressed layers in the store, oldest first, for
	// flatten.Flatten.
	Layers []flatten.Layer
}

// Option changes how Pull works.
type Option func(*pullOptions)

type pullOptions struct {
	progress  io.Writer
	keychain  authn.Keychain
	transport http.RoundTripper
	limits    Limits
}

// Limits bound what one image may unpack to on the build host, so that a
// decompression bomb (a small blob of zeros that inflates to terabytes)
// fails the pull with an error naming the layer instead of filling the
// disk. Sparse files, which a small tar expands, are bounded by flatten.
type Limits struct {
	LayerBytes int64 // one layer's uncompressed tar
	ImageBytes int64 // all of an image's uncompressed layers together
}

// Default limits: generous for an appliance, whose root of a few GiB is
// already unusual; they only have to stop the absurd. An image's bound is
// the one flatten applies to the file contents of the merged tree.
const (
	DefaultLayerBytes = 8 << 30
	DefaultImageBytes = flatten.DefaultMaxBytes
)

// WithLimits replaces the default limits.
func WithLimits(l Limits) Option { return func(o *pullOptions) { o.limits = l } }

// WithProgress makes Pull write a line per layer it fetches or finds in
// the store to w.
func WithProgress(w io.Writer) Option { return func(o *pullOptions) { o.progress = w } }

// WithKeychain sets where registry credentials come from; the default is
// authn.DefaultKeychain (docker's config.json and credential helpers).
func WithKeychain(k authn.Keychain) Option { return func(o *pullOptions) { o.keychain = k } }

// WithTransport sets the HTTP transport for registries.
func WithTransport(t http.RoundTripper) Option { return func(o *pullOptions) { o.transport = t } }

// Pull resolves ref for platform and makes sure the store holds the
// image: its manifest, config and uncompressed layers. ref is a registry
// reference ("nginx:1.27", "registry.example/web@sha256:..."), or
// "oci-layout:DIR[@sha256:...]", or "docker-archive:FILE.tar".
//
// A registry reference pinned by digest is served from the store when the
// store has the image, without network access. An index without an image
// for platform is an error naming the image, the platform and the
// platforms it has.
func (s *Store) Pull(ctx context.Context, ref string, platform v1.Platform, opts ...Option) (*Image, error) {
	o := pullOptions{keychain: authn.DefaultKeychain, progress: io.Discard, limits: Limits{LayerBytes: DefaultLayerBytes, ImageBytes: DefaultImageBytes}}
	for _, opt := range opts {
		opt(&o)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	pr, err := parseRef(ref)
	if err != nil {
		return nil, err
	}
	p := &puller{s: s, ref: ref, want: platform, progress: &lineWriter{w: o.progress}, limits: o.limits}
	if d, ok := pr.registry.(name.Digest); ok {
		h, err := v1.NewHash(d.DigestStr())
		if err != nil {
			return nil, fmt.Errorf("oci: %q: %w", ref, err)
		}
		img, err := p.resolve(ctx, &storeFetcher{s: s, digest: h}, true)
		if err == nil {
			return img, nil
		}
		if !errors.Is(err, errNotStored) {
			return nil, err
		}
	}
	var f fetcher
	switch {
	case pr.registry != nil:
		ropts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(o.keychain), remote.WithPlatform(platform)}
		if o.transport != nil {
			ropts = append(ropts, remote.WithTransport(o.transport))
		}
		f = &remoteFetcher{ref: pr.registry, opts: ropts}
	case pr.archive:
		af, err := newArchiveFetcher(pr.path)
		if err != nil {
			return nil, fmt.Errorf("oci: %s: %w", ref, err)
		}
		f = af
	default:
		lp, err := layout.FromPath(pr.path)
		if err != nil {
			return nil, fmt.Errorf("oci: %s: %w", ref, err)
		}
		f = &layoutFetcher{path: lp, digest: pr.digest}
	}
	return p.resolve(ctx, f, false)
}

type puller struct {
	s        *Store
	ref      string
	want     v1.Platform
	progress *lineWriter
	limits   Limits
	// unpacked counts the uncompressed bytes of the image's layers so
	// far, across the concurrent layer jobs.
	unpacked atomic.Int64
}

// lineWriter serialises progress lines from concurrent layer fetches.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format+"\n", args...)
}

// mediaType reads a manifest's mediaType, or guesses it from its fields
// when absent (allowed for OCI manifests).
func mediaType(raw []byte) types.MediaType {
	var m struct {
		MediaType types.MediaType `json:"mediaType"`
		Manifests json.RawMessage `json:"manifests"`
		Layers    json.RawMessage `json:"layers"`
	}
	if json.Unmarshal(raw, &m) != nil {
		return ""
	}
	switch {
	case m.MediaType != "":
		return m.MediaType
	case m.Manifests != nil:
		return types.OCIImageIndex
	case m.Layers != nil:
		return types.OCIManifestSchema1
	}
	return ""
}

func (p *puller) errorf(format string, args ...any) error {
	return fmt.Errorf("oci: %s: "+format, append([]any{p.ref}, args...)...)
}

// resolve walks from the top manifest down to the platform's image and
// stores what it reads. Offline, it reads only the store and stores
// nothing new.
func (p *puller) resolve(ctx context.Context, f fetcher, offline bool) (*Image, error) {
	raw, dgst, err := f.top(ctx)
	if err != nil {
		return nil, p.errorf("%w", err)
	}
	img := &Image{Ref: p.ref}
	var stored []v1.Descriptor
	for depth := 0; ; depth++ {
		if len(raw) > maxManifestBytes {
			return nil, p.errorf("manifest %s: larger than %d bytes", dgst, maxManifestBytes)
		}
		mt := mediaType(raw)
		if mt.IsImage() {
			break
		}
		if !mt.IsIndex() {
			return nil, p.errorf("manifest %s: unsupported media type %q", dgst, mt)
		}
		if depth == maxIndexDepth {
			return nil, p.errorf("indexes nested deeper than %d", maxIndexDepth)
		}
		idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
		if err != nil {
			return nil, p.errorf("index %s: %w", dgst, err)
		}
		if dgst != (v1.Hash{}) {
			if err := p.s.putBlob(dgst, raw); err != nil {
				return nil, p.errorf("index %s: %w", dgst, err)
			}
			if img.IndexDigest == (v1.Hash{}) {
				img.IndexDigest = dgst
				stored = append(stored, v1.Descriptor{MediaType: mt, Size: int64(len(raw)), Digest: dgst})
			}
		}
		child, ok := selectChild(idx, p.want)
		if !ok {
			// An index may hold further indexes without a platform.
			for _, d := range idx.Manifests {
				if d.Platform == nil && d.MediaType.IsIndex() {
					child, ok = d, true
					break
				}
			}
		}
		if !ok {
			return nil, p.errorf("no image for platform %s; the image has %s", p.want, platformList(idx))
		}
		if raw, err = f.manifest(ctx, child); err != nil {
			return nil, p.errorf("manifest %s: %w", child.Digest, err)
		}
		if err := checkDigest(child.Digest, raw); err != nil {
			return nil, p.errorf("%w", err)
		}
		dgst = child.Digest
	}
	if dgst == (v1.Hash{}) {
		return nil, p.errorf("index.json names no single image")
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, p.errorf("manifest %s: %w", dgst, err)
	}
	if err := p.s.putBlob(dgst, raw); err != nil {
		return nil, p.errorf("manifest %s: %w", dgst, err)
	}
	img.Digest = dgst

	rc, err := f.blob(ctx, m.Config)
	if err != nil {
		return nil, p.errorf("config %s: %w", m.Config.Digest, err)
	}
	if img.RawConfig, err = readLimited(rc, maxConfigBytes); err != nil {
		return nil, p.errorf("config %s: %w", m.Config.Digest, err)
	}
	if err := p.s.putBlob(m.Config.Digest, img.RawConfig); err != nil {
		return nil, p.errorf("config %s: %w", m.Config.Digest, err)
	}
	if img.Config, err = v1.ParseConfigFile(bytes.NewReader(img.RawConfig)); err != nil {
		return nil, p.errorf("config %s: %w", m.Config.Digest, err)
	}
	if pl := img.Config.Platform(); pl != nil {
		img.Platform = *pl
		if ok, _ := platformMatch(pl, p.want); !ok && pl.Architecture != "" {
			return nil, p.errorf("image %s is for %s, not %s", dgst, pl, p.want)
		}
	}
	diffIDs := img.Config.RootFS.DiffIDs
	if len(diffIDs) != len(m.Layers) {
		return nil, p.errorf("manifest %s has %d layers, its config %d diff ids", dgst, len(m.Layers), len(diffIDs))
	}
	img.Layers = make([]flatten.Layer, len(m.Layers))
	for i, l := range m.Layers {
		img.Layers[i] = flatten.Layer{Digest: l.Digest.String(), Path: p.s.diffPath(diffIDs[i])}
		if err := checkLayerType(l.MediaType); err != nil {
			return nil, p.errorf("layer %s: %w", l.Digest, err)
		}
	}
	// The largest layers start first, so that the last one to finish is
	// not a large one started late while the other cores idle.
	order := make([]int, len(m.Layers))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return m.Layers[order[a]].Size > m.Layers[order[b]].Size })
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(layerJobs)
	for _, i := range order {
		l := m.Layers[i]
		eg.Go(func() error {
			if err := p.layer(ectx, f, l, diffIDs[i], i, len(m.Layers), offline); err != nil {
				return p.errorf("layer %s: %w", l.Digest, err)
			}
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return nil, err
	}
	from := "pulled"
	if offline {
		from = "found in the store"
	}
	p.progress.printf("oci: %s: %s for %s %s", p.ref, dgst, img.Platform, from)
	if !offline {
		annotations := map[string]string{annotationRefName: p.ref}
		for i := range stored {
			stored[i].Annotations = annotations
		}
		pl := img.Platform
		stored = append(stored, v1.Descriptor{MediaType: m.MediaType, Size: int64(len(raw)), Digest: dgst,
			Annotations: annotations, Platform: &pl})
		if m.MediaType == "" {
			stored[len(stored)-1].MediaType = types.OCIManifestSchema1
		}
		if err := p.s.addToIndex(stored...); err != nil {
			return nil, err
		}
	}
	return img, nil
}

func checkLayerType(mt types.MediaType) error {
	switch mt {
	case types.OCILayer, types.OCILayerZStd, types.OCIUncompressedLayer, types.DockerLayer, types.DockerUncompressedLayer:
		return nil
	case types.DockerForeignLayer, types.OCIRestrictedLayer, types.OCIUncompressedRestrictedLayer:
		return fmt.Errorf("non-distributable layer (%s) is not supported", mt)
	}
	if strings.Contains(string(mt), "tar") {
		return nil
	}
	return fmt.Errorf("unsupported layer media type %q", mt)
}
