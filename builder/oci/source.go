package oci

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Reference prefixes for images that are not in a registry.
const (
	PrefixOCILayout     = "oci-layout:"
	PrefixDockerArchive = "docker-archive:"
)

// errNotStored says the store lacks a blob an image needs.
var errNotStored = errors.New("not in the store")

// fetcher reads the manifests and blobs of one image source.
type fetcher interface {
	// top returns the manifest (or index) the reference names and its
	// digest; the digest is zero when it names no stored blob (the
	// index.json of a layout).
	top(ctx context.Context) ([]byte, v1.Hash, error)
	// manifest returns a manifest an index refers to.
	manifest(ctx context.Context, d v1.Descriptor) ([]byte, error)
	// blob opens a config or (compressed) layer blob.
	blob(ctx context.Context, d v1.Descriptor) (io.ReadCloser, error)
	// verifiesBlobs reports whether the readers blob returns check the
	// bytes against the descriptor's digest themselves, failing the read
	// that reaches the end when they differ. The layer pipeline hashes
	// the blobs of other sources.
	verifiesBlobs() bool
}

// parsedRef is a reference split by kind.
type parsedRef struct {
	registry name.Reference // registry images
	path     string         // layout directory or archive file
	archive  bool
	digest   *v1.Hash // oci-layout:PATH@DIGEST
}

func parseRef(ref string) (parsedRef, error) {
	switch {
	case strings.HasPrefix(ref, PrefixOCILayout):
		p := strings.TrimPrefix(ref, PrefixOCILayout)
		var pr parsedRef
		if i := strings.LastIndex(p, "@sha256:"); i >= 0 {
			h, err := v1.NewHash(p[i+1:])
			if err != nil {
				return pr, fmt.Errorf("oci: %q: %w", ref, err)
			}
			pr.digest = &h
			p = p[:i]
		}
		if p == "" {
			return pr, fmt.Errorf("oci: %q: empty layout path", ref)
		}
		pr.path = p
		return pr, nil
	case strings.HasPrefix(ref, PrefixDockerArchive):
		p := strings.TrimPrefix(ref, PrefixDockerArchive)
		if p == "" {
			return parsedRef{}, fmt.Errorf("oci: %q: empty archive path", ref)
		}
		return parsedRef{path: p, archive: true}, nil
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return parsedRef{}, fmt.Errorf("oci: %q: %w", ref, err)
	}
	return parsedRef{registry: r}, nil
}

// readLimited reads at most limit bytes of a small document.
func readLimited(rc io.ReadCloser, limit int64) ([]byte, error) {
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return b, nil
}

type remoteFetcher struct {
	ref  name.Reference
	opts []remote.Option
}

func (f *remoteFetcher) top(ctx context.Context) ([]byte, v1.Hash, error) {
	d, err := remote.Get(f.ref, f.opts...)
	if err != nil {
		return nil, v1.Hash{}, err
	}
	return d.Manifest, d.Digest, nil
}

func (f *remoteFetcher) manifest(ctx context.Context, d v1.Descriptor) ([]byte, error) {
	desc, err := remote.Get(f.ref.Context().Digest(d.Digest.String()), f.opts...)
	if err != nil {
		return nil, err
	}
	return desc.Manifest, nil
}

func (f *remoteFetcher) blob(ctx context.Context, d v1.Descriptor) (io.ReadCloser, error) {
	l, err := remote.Layer(f.ref.Context().Digest(d.Digest.String()), f.opts...)
	if err != nil {
		return nil, err
	}
	return l.Compressed()
}

// verifiesBlobs is true: go-containerregistry's remote blob readers hash
// what they read and fail at the end on a mismatch (TestPullHostileLayer
// serves other bytes for a layer).
func (f *remoteFetcher) verifiesBlobs() bool { return true }

type layoutFetcher struct {
	path   layout.Path
	digest *v1.Hash
}

func (f *layoutFetcher) top(ctx context.Context) ([]byte, v1.Hash, error) {
	if f.digest != nil {
		b, err := f.path.Bytes(*f.digest)
		if err != nil {
			return nil, v1.Hash{}, err
		}
		return b, *f.digest, nil
	}
	b, err := os.ReadFile(string(f.path) + "/index.json")
	if err != nil {
		return nil, v1.Hash{}, err
	}
	// A layout holding one image or one multi-platform index stands for
	// it; with several, index.json is the index to choose from.
	idx, err := v1.ParseIndexManifest(bytes.NewReader(b))
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("index.json: %w", err)
	}
	if len(idx.Manifests) == 1 {
		d := idx.Manifests[0]
		mb, err := f.manifest(ctx, d)
		return mb, d.Digest, err
	}
	return b, v1.Hash{}, nil
}

func (f *layoutFetcher) manifest(ctx context.Context, d v1.Descriptor) ([]byte, error) {
	return f.path.Bytes(d.Digest)
}

func (f *layoutFetcher) blob(ctx context.Context, d v1.Descriptor) (io.ReadCloser, error) {
	return f.path.Blob(d.Digest)
}

func (f *layoutFetcher) verifiesBlobs() bool { return false }

// archiveFetcher serves the single image of a `docker save` archive.
type archiveFetcher struct {
	img v1.Image
}

func newArchiveFetcher(path string) (*archiveFetcher, error) {
	img, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		return nil, err
	}
	return &archiveFetcher{img: img}, nil
}

func (f *archiveFetcher) top(ctx context.Context) ([]byte, v1.Hash, error) {
	b, err := f.img.RawManifest()
	if err != nil {
		return nil, v1.Hash{}, err
	}
	h, err := f.img.Digest()
	return b, h, err
}

func (f *archiveFetcher) manifest(ctx context.Context, d v1.Descriptor) ([]byte, error) {
	return nil, fmt.Errorf("manifest %s: a docker archive holds no index", d.Digest)
}

func (f *archiveFetcher) blob(ctx context.Context, d v1.Descriptor) (io.ReadCloser, error) {
	if cn, err := f.img.ConfigName(); err == nil && cn == d.Digest {
		b, err := f.img.RawConfigFile()
		if err != nil {
			return nil, err
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	l, err := f.img.LayerByDigest(d.Digest)
	if err != nil {
		return nil, err
	}
	return l.Compressed()
}

func (f *archiveFetcher) verifiesBlobs() bool { return false }

// storeFetcher serves what the store holds, for offline rebuilds.
type storeFetcher struct {
	s      *Store
	digest v1.Hash
}

func (f *storeFetcher) top(ctx context.Context) ([]byte, v1.Hash, error) {
	b, err := f.manifest(ctx, v1.Descriptor{Digest: f.digest})
	return b, f.digest, err
}

func (f *storeFetcher) manifest(ctx context.Context, d v1.Descriptor) ([]byte, error) {
	if !exists(f.s.blobPath(d.Digest)) {
		return nil, fmt.Errorf("manifest %s: %w", d.Digest, errNotStored)
	}
	return f.s.readBlob(d.Digest, maxManifestBytes)
}

func (f *storeFetcher) blob(ctx context.Context, d v1.Descriptor) (io.ReadCloser, error) {
	rc, err := os.Open(f.s.blobPath(d.Digest))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("blob %s: %w", d.Digest, errNotStored)
	}
	return rc, err
}

func (f *storeFetcher) verifiesBlobs() bool { return false }
