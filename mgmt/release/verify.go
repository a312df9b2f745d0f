package release

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/cdc"
)

// ErrUnsigned is returned (wrapped) by Verify for a release without a
// signature manifest and without a Sigstore bundle.
var ErrUnsigned = errors.New("release is not signed")

// Policy is what Verify requires of a release.
type Policy struct {
	// Keys are the public keys a signature must verify with (one of
	// them). Verify refuses to run without keys.
	Keys []*ecdsa.PublicKey
	// RunningRelease is the release number running now; a release below
	// it is refused unless AllowDowngrade (mgmt.CheckRelease).
	RunningRelease uint64
	AllowDowngrade bool
}

// Release is a verified release: its signature checked, its manifests and
// configs fetched by digest and checked. Blobs are read only through
// Open, which checks each blob's digest.
type Release struct {
	// Digest is the digest of the index, the one the signature names.
	Digest v1.Hash
	// Repository holds the release.
	Repository name.Repository
	// Index is the parsed index.
	Index v1.IndexManifest
	// Name and Number are the index's NameAnnotation and
	// ReleaseAnnotation.
	Name   string
	Number uint64
	// Targets are the index's manifests, in the index's order.
	Targets []Target

	ropts []remote.Option
}

// Target is one target's manifest of a release.
type Target struct {
	Name     string
	Manifest v1.Manifest
	// Descriptor is the manifest's descriptor in the index.
	Descriptor v1.Descriptor
	Config     Config
	// Root is the root squashfs layer of a release with one root layer;
	// zero in a chunked one.
	Root v1.Descriptor
	// ChunkIndex is the chunk index layer of a chunked root, Chunks its
	// chunk layers and Patches its patch layers by digest; zero and nil
	// with one root layer. RootPlan reads the index and matches it with
	// them.
	ChunkIndex v1.Descriptor
	Chunks     map[v1.Hash]v1.Descriptor
	Patches    map[v1.Hash]v1.Descriptor
	// BootFiles are the boot file layers, named by TitleAnnotation.
	BootFiles []v1.Descriptor
}

// Target returns the release's manifest for target t.
func (r *Release) Target(t string) (*Target, error) {
	for i := range r.Targets {
		if r.Targets[i].Name == t {
			return &r.Targets[i], nil
		}
	}
	names := make([]string, len(r.Targets))
	for i, tt := range r.Targets {
		names[i] = tt.Name
	}
	return nil, fmt.Errorf("release %s@%s has no target %s (targets %v)", r.Repository, r.Digest, t, names)
}

// Verify fetches the release at ref and checks, in this order, that the
// index is an ingot release, that a cosign signature of its digest
// verifies with one of p.Keys, and that every manifest and config (fetched
// by digest and checked) describes a well-formed target whose release
// passes mgmt.CheckRelease. Blobs are not read; Open reads them.
func Verify(ctx context.Context, ref name.Reference, p Policy, ropts ...remote.Option) (*Release, error) {
	if len(p.Keys) == 0 {
		return nil, fmt.Errorf("release: %s: no public keys to verify with", ref)
	}
	return read(ctx, ref, &p, ropts)
}

// Inspect reads the release at ref as Verify does, without checking a
// signature or the release number: for a publisher that takes an earlier
// release of its own as the base of patches (whose output the appliance
// checks against the signed chunk index anyway). Nothing it returns may be
// installed.
func Inspect(ctx context.Context, ref name.Reference, ropts ...remote.Option) (*Release, error) {
	return read(ctx, ref, nil, ropts)
}

// read is Verify, or with a nil policy, Inspect.
func read(ctx context.Context, ref name.Reference, p *Policy, ropts []remote.Option) (*Release, error) {
	ropts = append([]remote.Option{remote.WithContext(ctx)}, ropts...)
	raw, err := getManifest(ref, ropts)
	if err != nil {
		return nil, fmt.Errorf("release: %s: %w", ref, err)
	}
	r := &Release{Digest: sha256Hash(raw), Repository: ref.Context(), ropts: ropts}
	if d, ok := ref.(name.Digest); ok && d.DigestStr() != r.Digest.String() {
		return nil, fmt.Errorf("release: %s: the registry sent a manifest with digest %s", ref, r.Digest)
	}
	where := r.Repository.String() + "@" + r.Digest.String()
	if err := strictJSON(raw, &r.Index); err != nil {
		return nil, fmt.Errorf("release: %s: index: %w", where, err)
	}
	if r.Index.MediaType != types.OCIImageIndex || r.Index.ArtifactType != ArtifactType {
		return nil, fmt.Errorf("release: %s is not an ingot release: mediaType %q, artifactType %q (want %s, %s)",
			where, r.Index.MediaType, r.Index.ArtifactType, types.OCIImageIndex, ArtifactType)
	}
	if p != nil {
		if err := r.checkSignature(p.Keys); err != nil {
			return nil, fmt.Errorf("release: %s: %w", where, err)
		}
	}
	r.Name = r.Index.Annotations[NameAnnotation]
	r.Number, err = strconv.ParseUint(r.Index.Annotations[ReleaseAnnotation], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("release: %s: index annotation %s: %w", where, ReleaseAnnotation, err)
	}
	if p != nil {
		if err := mgmt.CheckRelease(p.RunningRelease, r.Number, p.AllowDowngrade); err != nil {
			return nil, fmt.Errorf("release: %s: %w", where, err)
		}
	}
	if len(r.Index.Manifests) == 0 {
		return nil, fmt.Errorf("release: %s: the index lists no manifests", where)
	}
	seen := map[string]bool{}
	for i, desc := range r.Index.Manifests {
		t, err := r.fetchTarget(desc)
		if err != nil {
			return nil, fmt.Errorf("release: %s: manifests[%d] (%s): %w", where, i, desc.Digest, err)
		}
		if seen[t.Name] {
			return nil, fmt.Errorf("release: %s: manifests[%d]: target %s appears twice", where, i, t.Name)
		}
		seen[t.Name] = true
		if t.Config.Release != r.Number || t.Config.Name != r.Name {
			return nil, fmt.Errorf("release: %s: manifests[%d]: config says %s release %d, the index %s release %d",
				where, i, t.Config.Name, t.Config.Release, r.Name, r.Number)
		}
		r.Targets = append(r.Targets, *t)
	}
	return r, nil
}

// checkSignature accepts r when one of its cosign signatures verifies: a
// simple-signing layer under the .sig tag (checkSimpleSigning) or, when
// none of those verifies, a Sigstore bundle referring to the index
// (checkBundles). It returns ErrUnsigned only when there is neither: a
// signature that is there but does not verify is an error of its own.
func (r *Release) checkSignature(keys []*ecdsa.PublicKey) error {
	tagErr := r.checkSimpleSigning(keys)
	if tagErr == nil {
		return nil
	}
	bundleErr := r.checkBundles(keys)
	switch {
	case bundleErr == nil:
		return nil
	case errors.Is(bundleErr, errNoBundles) && errors.Is(tagErr, ErrUnsigned):
		return fmt.Errorf("%w, and %w", tagErr, bundleErr)
	case errors.Is(bundleErr, errNoBundles):
		return tagErr
	case errors.Is(tagErr, ErrUnsigned):
		return bundleErr
	}
	return errors.Join(tagErr, bundleErr)
}

// checkSimpleSigning finds the signature manifest of r and accepts it when
// one of its simple-signing layers verifies (checkPayload).
func (r *Release) checkSimpleSigning(keys []*ecdsa.PublicKey) error {
	tag := r.Repository.Tag(SignatureTag(r.Digest))
	raw, err := getManifest(tag, r.ropts)
	if err != nil {
		var terr *transport.Error
		if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
			return fmt.Errorf("%w: no signature at %s", ErrUnsigned, tag)
		}
		return fmt.Errorf("signature %s: %w", tag, err)
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("signature %s: %w", tag, err)
	}
	var errs []error
	tried := 0
	for i, l := range m.Layers {
		if l.MediaType != SimpleSigningMediaType {
			continue
		}
		if tried++; tried > MaxSignatureLayers {
			errs = append(errs, fmt.Errorf("layers[%d] and later: more than %d signatures, the rest are not tried", i, MaxSignatureLayers))
			break
		}
		payload, err := r.readBlob(l, MaxPayloadBytes)
		if err == nil {
			err = checkPayload(payload, l.Annotations[SignatureAnnotation], keys, r.Digest)
		}
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("layers[%d]: %w", i, err))
	}
	if len(errs) == 0 {
		return fmt.Errorf("%w: signature %s has no %s layer", ErrUnsigned, tag, SimpleSigningMediaType)
	}
	return fmt.Errorf("signature %s refused: %w", tag, errors.Join(errs...))
}

// fetchTarget fetches and checks the manifest desc and its config.
func (r *Release) fetchTarget(desc v1.Descriptor) (*Target, error) {
	t := &Target{Name: desc.Annotations[TargetAnnotation], Descriptor: desc}
	if desc.MediaType != types.OCIManifestSchema1 {
		return nil, fmt.Errorf("mediaType %q, want %s", desc.MediaType, types.OCIManifestSchema1)
	}
	if t.Name == "" {
		return nil, fmt.Errorf("no %s annotation", TargetAnnotation)
	}
	raw, err := getManifest(r.Repository.Digest(desc.Digest.String()), r.ropts)
	if err != nil {
		return nil, err
	}
	if got := sha256Hash(raw); got != desc.Digest || int64(len(raw)) != desc.Size {
		return nil, fmt.Errorf("the registry sent %d bytes with digest %s, the index names %d bytes", len(raw), got, desc.Size)
	}
	if err := strictJSON(raw, &t.Manifest); err != nil {
		return nil, err
	}
	m := &t.Manifest
	if m.ArtifactType != ArtifactType || m.Config.MediaType != ConfigMediaType {
		return nil, fmt.Errorf("artifactType %q, config mediaType %q: not an ingot release manifest", m.ArtifactType, m.Config.MediaType)
	}
	cfg, err := r.readBlob(m.Config, MaxConfigBytes)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := json.Unmarshal(cfg, &t.Config); err != nil {
		return nil, fmt.Errorf("config %s: %w", m.Config.Digest, err)
	}
	if t.Config.Target != t.Name {
		return nil, fmt.Errorf("config %s is for target %q, the index says %q", m.Config.Digest, t.Config.Target, t.Name)
	}
	names := map[string]bool{}
	for i, l := range m.Layers {
		switch l.MediaType {
		case RootMediaType:
			if t.Root.Digest != (v1.Hash{}) {
				return nil, fmt.Errorf("layers[%d]: a second root layer", i)
			}
			t.Root = l
		case ChunkIndexMediaType:
			if t.ChunkIndex.Digest != (v1.Hash{}) {
				return nil, fmt.Errorf("layers[%d]: a second chunk index layer", i)
			}
			t.ChunkIndex = l
		case ChunkMediaType:
			if t.Chunks == nil {
				t.Chunks = map[v1.Hash]v1.Descriptor{}
			}
			if _, dup := t.Chunks[l.Digest]; dup {
				return nil, fmt.Errorf("layers[%d]: chunk %s appears twice", i, l.Digest)
			}
			t.Chunks[l.Digest] = l
		case PatchMediaType:
			if t.Patches == nil {
				t.Patches = map[v1.Hash]v1.Descriptor{}
			}
			if _, dup := t.Patches[l.Digest]; dup {
				return nil, fmt.Errorf("layers[%d]: patch %s appears twice", i, l.Digest)
			}
			t.Patches[l.Digest] = l
		case BootFileMediaType:
			n := l.Annotations[TitleAnnotation]
			if err := CheckBootFileName(n); err != nil {
				return nil, fmt.Errorf("layers[%d]: %w", i, err)
			}
			if names[n] {
				return nil, fmt.Errorf("layers[%d]: boot file %s appears twice", i, n)
			}
			names[n] = true
			t.BootFiles = append(t.BootFiles, l)
		default:
			return nil, fmt.Errorf("layers[%d]: unknown media type %q (a newer release format?)", i, l.MediaType)
		}
		if l.Size < 0 {
			return nil, fmt.Errorf("layers[%d]: negative size", i)
		}
	}
	chunked := t.ChunkIndex.Digest != (v1.Hash{})
	switch {
	case t.Root.Digest != (v1.Hash{}) && (chunked || t.Chunks != nil || t.Patches != nil):
		return nil, fmt.Errorf("both a %s layer and a chunked root: a manifest has one root form", RootMediaType)
	case t.Root.Digest == (v1.Hash{}) && !chunked:
		return nil, fmt.Errorf("no %s or %s layer", RootMediaType, ChunkIndexMediaType)
	case chunked && len(t.Chunks) == 0:
		return nil, fmt.Errorf("a %s layer without %s layers", ChunkIndexMediaType, ChunkMediaType)
	case len(t.Chunks) > MaxChunks || len(t.Patches) > MaxChunks:
		return nil, fmt.Errorf("%d chunk and %d patch layers, more than %d", len(t.Chunks), len(t.Patches), MaxChunks)
	}
	return t, nil
}

// Open returns the content of blob desc of r. The reader returns at most
// desc.Size bytes and fails at the end unless exactly desc.Size bytes with
// desc.Digest arrived: a caller commits nothing it read until Read
// returned io.EOF.
func (r *Release) Open(desc v1.Descriptor) (io.ReadCloser, error) {
	if desc.Digest.Algorithm != "sha256" {
		return nil, fmt.Errorf("release: blob %s: only sha256 digests are accepted", desc.Digest)
	}
	l, err := remote.Layer(r.Repository.Digest(desc.Digest.String()), r.ropts...)
	if err != nil {
		return nil, fmt.Errorf("release: blob %s: %w", desc.Digest, err)
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, fmt.Errorf("release: blob %s: %w", desc.Digest, err)
	}
	return &verifyingReader{rc: rc, lr: io.LimitReader(rc, desc.Size+1), h: sha256.New(), want: desc}, nil
}

// readBlob reads blob desc whole, refusing one larger than limit.
func (r *Release) readBlob(desc v1.Descriptor, limit int64) ([]byte, error) {
	if desc.Size > limit || desc.Size < 0 {
		return nil, fmt.Errorf("blob %s: size %d is not within 0..%d", desc.Digest, desc.Size, limit)
	}
	rc, err := r.Open(desc)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// verifyingReader checks a blob's size and digest as it is read.
type verifyingReader struct {
	rc   io.ReadCloser
	lr   io.Reader
	h    hash.Hash
	n    int64
	want v1.Descriptor
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	n, err := v.lr.Read(p)
	v.n += int64(n)
	if v.n > v.want.Size {
		return 0, fmt.Errorf("release: blob %s: the registry sent more than its %d bytes", v.want.Digest, v.want.Size)
	}
	v.h.Write(p[:n])
	if errors.Is(err, io.EOF) {
		if v.n != v.want.Size {
			return n, fmt.Errorf("release: blob %s: the registry sent %d of its %d bytes", v.want.Digest, v.n, v.want.Size)
		}
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want.Digest.Hex {
			return n, fmt.Errorf("release: blob %s: the registry sent content with digest sha256:%s", v.want.Digest, got)
		}
	} else if err != nil {
		return n, fmt.Errorf("release: blob %s: %w", v.want.Digest, err)
	}
	return n, err
}

func (v *verifyingReader) Close() error { return v.rc.Close() }

// VerifyBlobs reads every blob of target t through Open and reports the
// first that fails its check. A chunked root is read piece by piece as
// RootPlan lists it, and the whole is checked against the index's digest.
// It returns the bytes of the root and the boot files.
func (r *Release) VerifyBlobs(t *Target) (int64, error) {
	plan, err := r.RootPlan(t)
	if err != nil {
		return 0, err
	}
	var total int64
	read := func(d v1.Descriptor, w io.Writer) error {
		rc, err := r.Open(d)
		if err != nil {
			return err
		}
		defer rc.Close()
		n, err := io.Copy(w, rc)
		total += n
		if err != nil {
			return fmt.Errorf("target %s: %w", t.Name, err)
		}
		return nil
	}
	root := sha256.New()
	for _, p := range plan.Pieces {
		if !p.Compressed() {
			if err := read(p.Blob, root); err != nil {
				return total, err
			}
			continue
		}
		b, err := r.ReadPiece(p)
		if err != nil {
			return total, fmt.Errorf("target %s: %w", t.Name, err)
		}
		total += p.Blob.Size
		root.Write(b)
	}
	if got := hex.EncodeToString(root.Sum(nil)); got != plan.Digest.Hex {
		return total, fmt.Errorf("release: %s@%s target %s: the root assembled from its %d chunks has digest sha256:%s, the chunk index says %s",
			r.Repository, r.Digest, t.Name, len(plan.Pieces), got, plan.Digest)
	}
	for _, d := range t.BootFiles {
		if err := read(d, io.Discard); err != nil {
			return total, err
		}
	}
	return total, nil
}

// getManifest fetches the raw manifest at ref, bounded by
// MaxManifestBytes.
func getManifest(ref name.Reference, ropts []remote.Option) ([]byte, error) {
	desc, err := remote.Get(ref, ropts...)
	if err != nil {
		return nil, err
	}
	if len(desc.Manifest) > MaxManifestBytes {
		return nil, fmt.Errorf("manifest of %d bytes is larger than %d", len(desc.Manifest), MaxManifestBytes)
	}
	return desc.Manifest, nil
}

func sha256Hash(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

// strictJSON decodes one JSON value into v, refusing trailing data.
func strictJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the JSON value")
	}
	return nil
}

// RootPlan returns how target t's root is assembled. For a release with
// one root layer that is one piece, the layer itself. For a chunked root
// it reads the chunk index through Open and checks it (checkChunkIndex):
// one piece per chunk, whose Blob is that chunk's layer.
func (r *Release) RootPlan(t *Target) (*RootPlan, error) {
	where := fmt.Sprintf("release: %s@%s target %s (manifest %s)", r.Repository, r.Digest, t.Name, t.Descriptor.Digest)
	if t.ChunkIndex.Digest != (v1.Hash{}) {
		raw, err := r.readBlob(t.ChunkIndex, MaxChunkIndexBytes)
		if err != nil {
			return nil, fmt.Errorf("%s: chunk index: %w", where, err)
		}
		plan, err := chunkPlan(raw, t.Chunks, t.Patches)
		if err != nil {
			return nil, fmt.Errorf("%s: chunk index %s: %w", where, t.ChunkIndex.Digest, err)
		}
		return plan, nil
	}
	if t.Root.Digest == (v1.Hash{}) {
		return nil, fmt.Errorf("%s: no root", where)
	}
	return &RootPlan{
		Size:   t.Root.Size,
		Digest: t.Root.Digest,
		Pieces: []Piece{{Offset: 0, Size: t.Root.Size, Digest: t.Root.Digest, Blob: t.Root}},
	}, nil
}

// maxBlobBytes bounds the blob of a chunk of size bytes: zstd never
// needs more than a few bytes per 128 KiB block above the raw size.
func maxBlobBytes(size int64) int64 { return size + size/64 + 1024 }

// chunkPlan parses a chunk index and checks it against the manifest's
// chunk and patch layers, in this order: JSON, version, chunking rule,
// compression, the base, the number of chunks, each chunk (sha256, size
// within 1..cdc.MaxSize, a chunk layer of its blob's digest and size, its
// patch: a base, a patch layer of its digest and size, a dictionary range
// within the base of at most MaxPatchDictBytes), the sum of the sizes
// against the index's size, and that every chunk and patch layer is used.
func chunkPlan(raw []byte, layers, patchLayers map[v1.Hash]v1.Descriptor) (*RootPlan, error) {
	var ix ChunkIndex
	if err := strictJSON(raw, &ix); err != nil {
		return nil, err
	}
	switch {
	case ix.Version != ChunkIndexVersion:
		return nil, fmt.Errorf("version %d, this reader knows %d (a newer release format?)", ix.Version, ChunkIndexVersion)
	case ix.Chunking != cdc.Name:
		return nil, fmt.Errorf("chunking %q, this reader knows %q", ix.Chunking, cdc.Name)
	case ix.Compression != ChunkCompression:
		return nil, fmt.Errorf("compression %q, this reader knows %q", ix.Compression, ChunkCompression)
	case ix.Digest.Algorithm != "sha256":
		return nil, fmt.Errorf("root digest %q: only sha256 digests are accepted", ix.Digest)
	case ix.Base != nil && (ix.Base.Digest.Algorithm != "sha256" || ix.Base.Size <= 0):
		return nil, fmt.Errorf("base %s of %d bytes: want a sha256 digest and a positive size", ix.Base.Digest, ix.Base.Size)
	case len(ix.Chunks) == 0:
		return nil, fmt.Errorf("no chunks")
	case len(ix.Chunks) > MaxChunks:
		return nil, fmt.Errorf("%d chunks, more than %d", len(ix.Chunks), MaxChunks)
	case ix.Size <= 0 || ix.Size > int64(len(ix.Chunks))*cdc.MaxSize:
		return nil, fmt.Errorf("size %d: not within 1..%d for %d chunks", ix.Size, int64(len(ix.Chunks))*cdc.MaxSize, len(ix.Chunks))
	}
	plan := &RootPlan{Size: ix.Size, Digest: ix.Digest, Pieces: make([]Piece, len(ix.Chunks)), Base: ix.Base}
	used, usedPatches := map[v1.Hash]bool{}, map[v1.Hash]bool{}
	var off int64
	for i, c := range ix.Chunks {
		if c.Digest.Algorithm != "sha256" || c.Blob.Algorithm != "sha256" {
			return nil, fmt.Errorf("chunks[%d]: digest %q, blob %q: only sha256 digests are accepted", i, c.Digest, c.Blob)
		}
		if c.Size <= 0 || c.Size > cdc.MaxSize {
			return nil, fmt.Errorf("chunks[%d] (%s): size %d is not within 1..%d", i, c.Digest, c.Size, cdc.MaxSize)
		}
		if c.BlobSize <= 0 || c.BlobSize > maxBlobBytes(c.Size) {
			return nil, fmt.Errorf("chunks[%d] (%s): blob size %d is not within 1..%d", i, c.Digest, c.BlobSize, maxBlobBytes(c.Size))
		}
		l, ok := layers[c.Blob]
		if !ok {
			return nil, fmt.Errorf("chunks[%d] (%s): the manifest has no %s layer %s", i, c.Digest, ChunkMediaType, c.Blob)
		}
		if l.Size != c.BlobSize {
			return nil, fmt.Errorf("chunks[%d] (%s): blob size %d, its layer says %d", i, c.Digest, c.BlobSize, l.Size)
		}
		used[c.Blob] = true
		pc := Piece{Offset: off, Size: c.Size, Digest: c.Digest, Blob: l}
		if p := c.Patch; p != nil {
			switch {
			case ix.Base == nil:
				return nil, fmt.Errorf("chunks[%d] (%s): a patch, but the index names no base", i, c.Digest)
			case p.Blob.Algorithm != "sha256":
				return nil, fmt.Errorf("chunks[%d] (%s): patch blob %q: only sha256 digests are accepted", i, c.Digest, p.Blob)
			case p.BlobSize <= 0 || p.BlobSize > maxBlobBytes(c.Size):
				return nil, fmt.Errorf("chunks[%d] (%s): patch size %d is not within 1..%d", i, c.Digest, p.BlobSize, maxBlobBytes(c.Size))
			case p.DictSize <= 0 || p.DictSize > MaxPatchDictBytes || p.DictOffset < 0 || p.DictOffset > ix.Base.Size-p.DictSize:
				return nil, fmt.Errorf("chunks[%d] (%s): patch dictionary [%d, +%d) is not within the %d-byte base (at most %d bytes)",
					i, c.Digest, p.DictOffset, p.DictSize, ix.Base.Size, MaxPatchDictBytes)
			}
			pl, ok := patchLayers[p.Blob]
			if !ok {
				return nil, fmt.Errorf("chunks[%d] (%s): the manifest has no %s layer %s", i, c.Digest, PatchMediaType, p.Blob)
			}
			if pl.Size != p.BlobSize {
				return nil, fmt.Errorf("chunks[%d] (%s): patch size %d, its layer says %d", i, c.Digest, p.BlobSize, pl.Size)
			}
			usedPatches[p.Blob] = true
			pc.Patch = &PiecePatch{Blob: pl, DictOffset: p.DictOffset, DictSize: p.DictSize}
		}
		plan.Pieces[i] = pc
		off += c.Size
	}
	if off != ix.Size {
		return nil, fmt.Errorf("the chunks add up to %d bytes, the index says size %d", off, ix.Size)
	}
	for d := range layers {
		if !used[d] {
			return nil, fmt.Errorf("the manifest's %s layer %s is not in the index", ChunkMediaType, d)
		}
	}
	for d := range patchLayers {
		if !usedPatches[d] {
			return nil, fmt.Errorf("the manifest's %s layer %s is not in the index", PatchMediaType, d)
		}
	}
	return plan, nil
}

// ReadPiece downloads the blob of a compressed piece and decodes it: the
// piece's bytes, checked against its size and digest (the blob against
// its own digest first).
func (r *Release) ReadPiece(p Piece) ([]byte, error) {
	if !p.Compressed() {
		return nil, fmt.Errorf("release: piece at %d is not a chunk blob", p.Offset)
	}
	blob, err := r.readBlob(p.Blob, maxBlobBytes(p.Size))
	if err != nil {
		return nil, err
	}
	return DecodeChunk(blob, p.Size, p.Digest, nil)
}

// ReadPatch downloads the patch of piece p and decodes it with dict, the
// bytes of the base root its patch names: the piece's bytes, checked
// against its size and digest.
func (r *Release) ReadPatch(p Piece, dict []byte) ([]byte, error) {
	if p.Patch == nil {
		return nil, fmt.Errorf("release: piece at %d has no patch", p.Offset)
	}
	if int64(len(dict)) != p.Patch.DictSize {
		return nil, fmt.Errorf("release: patch of piece at %d: a dictionary of %d bytes, it names %d", p.Offset, len(dict), p.Patch.DictSize)
	}
	blob, err := r.readBlob(p.Patch.Blob, maxBlobBytes(p.Size))
	if err != nil {
		return nil, err
	}
	return DecodeChunk(blob, p.Size, p.Digest, dict)
}

// RootBytes downloads and assembles target t's root, checked piece by
// piece and as a whole against the chunk index (a publisher's base for
// patches; the appliance writes pieces as they come instead).
func (r *Release) RootBytes(t *Target) ([]byte, error) {
	plan, err := r.RootPlan(t)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, plan.Size)
	for _, p := range plan.Pieces {
		var b []byte
		if p.Compressed() {
			b, err = r.ReadPiece(p)
		} else {
			b, err = r.readBlob(p.Blob, plan.Size)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
	}
	if got := sha256Hash(out); got != plan.Digest {
		return nil, fmt.Errorf("release: %s@%s target %s: the root assembled has digest %s, the index says %s", r.Repository, r.Digest, t.Name, got, plan.Digest)
	}
	return out, nil
}
