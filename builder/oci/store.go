// Package oci fetches OCI container images for the builder: it resolves a
// reference for one platform (a registry, with docker's credential
// helpers; an OCI image layout directory, "oci-layout:PATH[@DIGEST]"; or a
// `docker save` archive, "docker-archive:FILE.tar"), keeps every manifest,
// config and layer in a local store in OCI image layout keyed by digest,
// and hands out the image's config and its layers as uncompressed tar
// files, which builder/oci/flatten turns into a rootfs.Tree.
//
// A reference pinned by digest ("name@sha256:...") that the store already
// holds is served without any network access, so rebuilds of a pinned
// image work offline; a tag is resolved by the registry every time.
package oci

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/renameio/v2"
	"github.com/ingotdev/ingot/internal/filelock"
)

// Bounds on the JSON documents read from registries and stores; real
// manifests and configs are a few KiB.
const (
	maxManifestBytes = 4 << 20
	maxConfigBytes   = 16 << 20
)

// Store is a directory holding an OCI image layout (oci-layout,
// index.json, blobs/sha256/...) plus the uncompressed form of every layer
// under diffs/sha256/<diff id>, which flattened trees refer to. Several
// processes may share a store: files appear by atomic rename, and
// index.json is rewritten under a lock.
type Store struct {
	dir string
}

// annotationRefName is the OCI annotation index.json entries carry to
// say which reference they were pulled as.
const annotationRefName = "org.opencontainers.image.ref.name"

// OpenStore opens the store in dir, creating it if needed.
func OpenStore(dir string) (*Store, error) {
	s := &Store{dir: dir}
	for _, d := range []string{s.path("blobs", "sha256"), s.path("diffs", "sha256")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("oci: store: %w", err)
		}
	}
	if _, err := os.Stat(s.path("oci-layout")); errors.Is(err, fs.ErrNotExist) {
		if err := writeAtomic(s.path("oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`+"\n")); err != nil {
			return nil, fmt.Errorf("oci: store: %w", err)
		}
	}
	if _, err := os.Stat(s.path("index.json")); errors.Is(err, fs.ErrNotExist) {
		if err := s.writeIndex(&v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) path(elem ...string) string {
	return filepath.Join(append([]string{s.dir}, elem...)...)
}

func (s *Store) blobPath(h v1.Hash) string { return s.path("blobs", h.Algorithm, h.Hex) }

// diffPath is where the uncompressed layer with the given diff id lives.
func (s *Store) diffPath(diffID v1.Hash) string { return s.path("diffs", diffID.Algorithm, diffID.Hex) }

// SpoolDir is where the flattener may write file contents it cannot
// refer to in a layer (sparse files).
func (s *Store) SpoolDir() string { return s.path("spool") }

func exists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// readBlob reads a small blob (manifest, config) and checks its digest.
func (s *Store) readBlob(h v1.Hash, limit int64) ([]byte, error) {
	if h.Algorithm != "sha256" {
		return nil, fmt.Errorf("oci: blob %s: unsupported digest algorithm", h)
	}
	f, err := os.Open(s.blobPath(h))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("oci: blob %s: larger than %d bytes", h, limit)
	}
	if err := checkDigest(h, b); err != nil {
		return nil, err
	}
	return b, nil
}

// putBlob stores a small blob after checking its digest.
func (s *Store) putBlob(h v1.Hash, b []byte) error {
	if err := checkDigest(h, b); err != nil {
		return err
	}
	if exists(s.blobPath(h)) {
		return nil
	}
	if err := writeAtomic(s.blobPath(h), b); err != nil {
		return fmt.Errorf("oci: store: %w", err)
	}
	return nil
}

func checkDigest(h v1.Hash, b []byte) error {
	if h.Algorithm != "sha256" {
		return fmt.Errorf("oci: digest %s: unsupported algorithm", h)
	}
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != h.Hex {
		return fmt.Errorf("oci: content of %s has digest sha256:%s", h, got)
	}
	return nil
}

// writeAtomic replaces p with data through renameio, the one atomic
// writer of host files: readers never see a partial file, and the file
// is synced before the rename so a crash cannot leave an empty one under
// a digest's name. The directory is not synced: the store is a cache, and
// a file a crash loses is fetched again. Files stay private to the user
// (0600, as the store always made them).
func writeAtomic(p string, data []byte) error {
	return renameio.WriteFile(p, data, 0o600, renameio.WithTempDir(filepath.Dir(p)))
}

// addToIndex records descriptors in index.json, replacing entries with
// the same digest and reference name.
func (s *Store) addToIndex(descs ...v1.Descriptor) error {
	unlock, err := filelock.Lock(s.path(".lock"))
	if err != nil {
		return fmt.Errorf("oci: store: lock: %w", err)
	}
	defer unlock()
	b, err := os.ReadFile(s.path("index.json"))
	if err != nil {
		return fmt.Errorf("oci: store: %w", err)
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("oci: store: index.json: %w", err)
	}
	key := func(d v1.Descriptor) string { return d.Digest.String() + " " + d.Annotations[annotationRefName] }
	for _, d := range descs {
		kept := idx.Manifests[:0]
		for _, m := range idx.Manifests {
			if key(m) != key(d) {
				kept = append(kept, m)
			}
		}
		idx.Manifests = append(kept, d)
	}
	sort.SliceStable(idx.Manifests, func(i, j int) bool { return key(idx.Manifests[i]) < key(idx.Manifests[j]) })
	return s.writeIndex(idx)
}

func (s *Store) writeIndex(idx *v1.IndexManifest) error {
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return fmt.Errorf("oci: store: index.json: %w", err)
	}
	if err := writeAtomic(s.path("index.json"), append(b, '\n')); err != nil {
		return fmt.Errorf("oci: store: %w", err)
	}
	return nil
}
