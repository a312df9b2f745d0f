// Package publish pushes built appliance images to an OCI registry as one
// release (the format of mgmt/release) and signs releases as cosign does:
// Push cuts each image into its root squashfs and slot a's boot files,
// uploads the root in content-defined chunks (each distinct chunk once,
// none the registry already has), a chunk index, the boot files and a
// config blob per target, then the manifests and the index under a tag; Sign pushes a simple-signing manifest under the tag
// sha256-<hex>.sig. Images are built by the caller (builder/assemble).
package publish

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/internal/progress"
	"github.com/ingotdev/ingot/mgmt/release"
	"github.com/ingotdev/ingot/packer/format/cdc"
	"github.com/ingotdev/ingot/packer/format/image"
	"github.com/ingotdev/ingot/packer/format/slot"
)

// Image is one built image file to publish, with what the image file
// itself does not say.
type Image struct {
	Path string
	// Created is the build's timestamp (assemble.Report.Created).
	Created time.Time
	// SBOM is the image's SPDX document (assemble.Report.SBOM).
	SBOM []byte
}

// Option configures Push and Sign.
type Option func(*options)

type options struct {
	ropts []remote.Option
	log   io.Writer
	// deltaFrom is the release patches are made against; nil: none.
	deltaFrom name.Reference
}

// WithDeltaFrom makes each target's chunks that ref's release lacks also
// published as patches against ref's root of that target (for appliances
// that run it). A ref that holds no release, or none of a target, is
// skipped with a message: the release is then published without patches.
func WithDeltaFrom(ref name.Reference) Option { return func(o *options) { o.deltaFrom = ref } }

// WithRemoteOptions passes options (transport, authentication) to the
// registry client.
func WithRemoteOptions(opts ...remote.Option) Option {
	return func(o *options) { o.ropts = append(o.ropts, opts...) }
}

// WithLog prints each upload's progress and each pushed manifest to w.
func WithLog(w io.Writer) Option { return func(o *options) { o.log = w } }

func makeOptions(ctx context.Context, opts []Option) options {
	o := options{log: io.Discard}
	for _, opt := range opts {
		opt(&o)
	}
	o.ropts = append([]remote.Option{remote.WithContext(ctx)}, o.ropts...)
	return o
}

// Result describes a pushed release.
type Result struct {
	// Digest is the index's digest, the one a signature names.
	Digest v1.Hash
	// Ref is the repository and digest of the index.
	Ref name.Digest
	// Bytes counts the blobs' bytes (uploaded or already present).
	Bytes int64
	// BytesUploaded counts the bytes of the blobs that were uploaded;
	// the rest of Bytes the registry already had (a HEAD found them):
	// chunks of an earlier release, or of another target.
	BytesUploaded int64
}

// Target is what one target of a release holds: its config, its root
// (as push cuts it from the image) and the boot files of slot a.
type Target struct {
	// Label names the target's source in errors (an image's path).
	Label     string
	Config    release.Config
	Root      *io.SectionReader
	BootFiles map[string][]byte
}

// Push publishes images, one per target, as one release under tag. All
// images must be of one appliance and one release number.
func Push(ctx context.Context, tag name.Tag, images []Image, opts ...Option) (*Result, error) {
	if len(images) == 0 {
		return nil, fmt.Errorf("publish: no images")
	}
	targets := make([]Target, 0, len(images))
	for _, img := range images {
		im, err := image.Open(img.Path)
		if err != nil {
			return nil, fmt.Errorf("publish: %w", err)
		}
		defer im.Close()
		tg, err := imageTarget(im, img)
		if err != nil {
			return nil, fmt.Errorf("publish: %s: %w", img.Path, err)
		}
		targets = append(targets, tg)
	}
	return PushTargets(ctx, tag, targets, opts...)
}

// imageTarget reads what a release holds of one image.
func imageTarget(im *image.Image, img Image) (Target, error) {
	info, err := im.Info()
	if err != nil {
		return Target{}, err
	}
	cfg := release.Config{
		Name: info.Name, Target: info.Target, Arch: info.Arch, BuildID: info.BuildID,
		Release: info.Release, Created: img.Created.UTC(), SBOM: img.SBOM,
	}
	if cfg.Target == "" {
		return Target{}, fmt.Errorf("the image names no target (built by an older ingot?)")
	}
	root, err := im.RootSquashfs(slot.A)
	if err != nil {
		return Target{}, err
	}
	bootFiles, err := im.BootFiles(slot.A)
	if err != nil {
		return Target{}, err
	}
	return Target{Label: img.Path, Config: cfg, Root: root, BootFiles: bootFiles}, nil
}

// PushTargets publishes targets as one release under tag. All must be of
// one appliance and one release number, each of another target.
func PushTargets(ctx context.Context, tag name.Tag, targets []Target, opts ...Option) (*Result, error) {
	o := makeOptions(ctx, opts)
	if len(targets) == 0 {
		return nil, fmt.Errorf("publish: no targets")
	}
	repo := tag.Context()
	res := &Result{}
	index := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		ArtifactType:  release.ArtifactType,
	}
	var first release.Config
	for i, tg := range targets {
		desc, cfg, n, err := pushTarget(ctx, repo, tg, o)
		if err != nil {
			return nil, err
		}
		res.Bytes += n.total
		res.BytesUploaded += n.uploaded
		if i == 0 {
			first = cfg
		} else if cfg.Name != first.Name || cfg.Release != first.Release {
			return nil, fmt.Errorf("publish: %s is %s release %d, %s is %s release %d: one release holds one appliance and one release number",
				tg.Label, cfg.Name, cfg.Release, targets[0].Label, first.Name, first.Release)
		}
		if slices.ContainsFunc(index.Manifests, func(d v1.Descriptor) bool { return d.Annotations[release.TargetAnnotation] == cfg.Target }) {
			return nil, fmt.Errorf("publish: %s: target %s is published twice", tg.Label, cfg.Target)
		}
		index.Manifests = append(index.Manifests, desc)
	}
	index.Annotations = map[string]string{
		release.NameAnnotation:    first.Name,
		release.ReleaseAnnotation: strconv.FormatUint(first.Release, 10),
		release.CreatedAnnotation: first.Created.Format(time.RFC3339),
	}
	raw, err := json.Marshal(index)
	if err != nil {
		return nil, fmt.Errorf("publish: index: %w", err)
	}
	if err := remote.Put(tag, rawManifest{raw, types.OCIImageIndex}, o.ropts...); err != nil {
		return nil, fmt.Errorf("publish: index %s: %w", tag, err)
	}
	res.Digest = digestOf(raw)
	res.Ref = repo.Digest(res.Digest.String())
	fmt.Fprintf(o.log, "publish: %s is %s: %s of blobs, %s uploaded, the rest already in the registry\n",
		tag, res.Ref, config.FormatSize(res.Bytes), config.FormatSize(res.BytesUploaded))
	return res, nil
}

// byteCount counts the bytes of a target's blobs: all of them, and those
// uploaded (not already in the registry).
type byteCount struct{ total, uploaded int64 }

// pushTarget uploads one target's blobs and manifest and returns the
// manifest's descriptor for the index.
func pushTarget(ctx context.Context, repo name.Repository, tg Target, o options) (v1.Descriptor, release.Config, byteCount, error) {
	fail := func(err error) (v1.Descriptor, release.Config, byteCount, error) {
		return v1.Descriptor{}, release.Config{}, byteCount{}, fmt.Errorf("publish: %s: %w", tg.Label, err)
	}
	cfg, root, bootFiles := tg.Config, tg.Root, tg.BootFiles
	if cfg.Target == "" || cfg.Arch == "" {
		return fail(fmt.Errorf("the config names no target or architecture"))
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return fail(err)
	}

	var n byteCount
	upload := func(label string, b *blob) (v1.Descriptor, error) {
		b.progress = progress.New(o.log, "publish: "+cfg.Target+" "+label, b.desc.Size)
		if err := remote.WriteLayer(repo, b, o.ropts...); err != nil {
			return v1.Descriptor{}, fmt.Errorf("upload %s: %w", label, err)
		}
		if b.progress.Done() == 0 && b.desc.Size > 0 {
			fmt.Fprintf(o.log, "publish: %s %s: %s already in the registry\n", cfg.Target, label, config.FormatSize(b.desc.Size))
		} else {
			b.progress.Finish()
			n.uploaded += b.desc.Size
		}
		n.total += b.desc.Size
		return b.desc, nil
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  release.ArtifactType,
		Annotations: map[string]string{
			release.TargetAnnotation:  cfg.Target,
			release.CreatedAnnotation: cfg.Created.Format(time.RFC3339),
		},
	}
	if m.Config, err = upload("config", bytesBlob(release.ConfigMediaType, nil, cfgJSON)); err != nil {
		return fail(err)
	}
	base := loadBase(ctx, cfg, o)
	rootLayers, err := pushChunkedRoot(ctx, repo, cfg.Target, root, base, o, &n)
	if err != nil {
		return fail(err)
	}
	ixDesc, err := upload("root chunk index", bytesBlob(release.ChunkIndexMediaType, nil, rootLayers.index))
	if err != nil {
		return fail(err)
	}
	m.Layers = append(m.Layers, ixDesc)
	m.Layers = append(m.Layers, rootLayers.chunks...)
	m.Layers = append(m.Layers, rootLayers.patches...)
	for _, name := range slices.Sorted(maps.Keys(bootFiles)) {
		if err := release.CheckBootFileName(name); err != nil {
			return fail(err)
		}
		d, err := upload(name, bytesBlob(release.BootFileMediaType, map[string]string{release.TitleAnnotation: name}, bootFiles[name]))
		if err != nil {
			return fail(err)
		}
		m.Layers = append(m.Layers, d)
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return fail(err)
	}
	if len(raw) > release.MaxManifestBytes {
		return fail(fmt.Errorf("manifest of %d bytes (%d layers) is larger than readers accept (%d)", len(raw), len(m.Layers), release.MaxManifestBytes))
	}
	d := digestOf(raw)
	if err := remote.Put(repo.Digest(d.String()), rawManifest{raw, types.OCIManifestSchema1}, o.ropts...); err != nil {
		return fail(fmt.Errorf("manifest: %w", err))
	}
	arch, variant := cfg.Arch, ""
	if arch == "arm64" {
		variant = "v8"
	}
	return v1.Descriptor{
		MediaType:    types.OCIManifestSchema1,
		Size:         int64(len(raw)),
		Digest:       d,
		ArtifactType: release.ArtifactType,
		Platform:     &v1.Platform{OS: "linux", Architecture: arch, Variant: variant},
		Annotations:  map[string]string{release.TargetAnnotation: cfg.Target},
	}, cfg, n, nil
}

// chunkedRoot is a root uploaded in chunks: the chunk index blob and the
// chunk layers, one per distinct chunk in the order they first appear.
type chunkedRoot struct {
	index           []byte
	chunks, patches []v1.Descriptor
}

// baseRoot is the root of an earlier release that patches are made
// against.
type baseRoot struct {
	digest v1.Hash
	data   []byte
	// has are the digests of its chunks: a chunk it has needs no patch.
	has map[v1.Hash]bool
}

// loadBase reads the root of target cfg.Target of the release at
// o.deltaFrom; nil (said on the log) when there is none to use.
func loadBase(ctx context.Context, cfg release.Config, o options) *baseRoot {
	if o.deltaFrom == nil {
		return nil
	}
	skip := func(err error) *baseRoot {
		fmt.Fprintf(o.log, "publish: %s: no patches against %s: %v\n", cfg.Target, o.deltaFrom, err)
		return nil
	}
	r, err := release.Inspect(ctx, o.deltaFrom, o.ropts...)
	if err != nil {
		return skip(err)
	}
	t, err := r.Target(cfg.Target)
	if err != nil {
		return skip(err)
	}
	if t.Config.Name != cfg.Name || t.Config.BuildID == cfg.BuildID {
		return skip(fmt.Errorf("it is %s build %s, this is %s build %s", t.Config.Name, t.Config.BuildID, cfg.Name, cfg.BuildID))
	}
	data, err := r.RootBytes(t)
	if err != nil {
		return skip(err)
	}
	b := &baseRoot{digest: digestOf(data), data: data, has: map[v1.Hash]bool{}}
	err = cdc.Split(ctx, bytes.NewReader(data), func(off int64, chunk []byte) error {
		b.has[digestOf(chunk)] = true
		return nil
	})
	if err != nil {
		return skip(err)
	}
	fmt.Fprintf(o.log, "publish: %s: patches against release %d (%s@%s, build %s)\n", cfg.Target, r.Number, r.Repository, r.Digest, t.Config.BuildID)
	return b
}

// patchFor encodes chunk data at offset off against the range of the
// base around off; nil when the patch would not be clearly smaller than
// blob, the chunk compressed alone.
func (b *baseRoot) patchFor(data []byte, off int64, blob []byte) (*release.ChunkPatch, []byte, error) {
	lo := max(0, min(off, int64(len(b.data)))-release.PatchReach)
	hi := min(int64(len(b.data)), off+int64(len(data))+release.PatchReach)
	if hi <= lo {
		return nil, nil, nil
	}
	p, err := release.EncodeChunk(data, b.data[lo:hi])
	if err != nil {
		return nil, nil, err
	}
	if len(p)*4 > len(blob)*3 {
		return nil, nil, nil
	}
	return &release.ChunkPatch{Blob: digestOf(p), BlobSize: int64(len(p)), DictOffset: lo, DictSize: hi - lo}, p, nil
}

// chunkUploads is how many chunks are uploaded at once: each upload is a
// few round trips (HEAD, and for a new chunk POST and PUT), which a
// distant registry makes the cost of a chunk.
const chunkUploads = 8

// pushChunkedRoot cuts root into chunks by the rule of packer/format/cdc
// and uploads each distinct chunk once (a chunk the registry has is not
// sent again), chunkUploads at a time, counting into n; it returns the
// chunk index for the caller to upload. One progress meter covers the
// whole root.
func pushChunkedRoot(ctx context.Context, repo name.Repository, target string, root *io.SectionReader, base *baseRoot, o options, n *byteCount) (*chunkedRoot, error) {
	pusher, err := remote.NewPusher(o.ropts...)
	if err != nil {
		return nil, err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(chunkUploads)
	var mu sync.Mutex // guards uploaded and present
	var uploaded, present, patched int64

	meter := progress.New(o.log, "publish: "+target+" root", root.Size())
	ix := release.ChunkIndex{Version: release.ChunkIndexVersion, Chunking: cdc.Name, Compression: release.ChunkCompression, Size: root.Size()}
	out := &chunkedRoot{}
	seen := map[v1.Hash]bool{}
	upload := func(b *blob, what string, off int64) {
		if seen[b.desc.Digest] {
			return
		}
		seen[b.desc.Digest] = true
		g.Go(func() error {
			if err := pusher.Upload(gctx, repo, b); err != nil {
				return fmt.Errorf("upload root %s at offset %d (%s): %w", what, off, b.desc.Digest, err)
			}
			mu.Lock()
			defer mu.Unlock()
			if b.sent > 0 {
				uploaded += b.desc.Size
			} else {
				present += b.desc.Size
			}
			return nil
		})
	}
	whole := sha256.New()
	err = cdc.Split(gctx, io.NewSectionReader(root, 0, root.Size()), func(off int64, data []byte) error {
		if len(ix.Chunks) == release.MaxChunks {
			return fmt.Errorf("root of %d bytes has more than %d chunks, the most readers accept", root.Size(), release.MaxChunks)
		}
		whole.Write(data)
		packed, err := release.EncodeChunk(data, nil)
		if err != nil {
			return err
		}
		b := bytesBlob(release.ChunkMediaType, nil, packed)
		c := release.Chunk{Size: int64(len(data)), Digest: digestOf(data), Blob: b.desc.Digest, BlobSize: b.desc.Size}
		if !seen[b.desc.Digest] {
			out.chunks = append(out.chunks, b.desc)
		}
		upload(b, "chunk", off)
		if base != nil && !base.has[c.Digest] {
			patch, pdata, err := base.patchFor(data, off, packed)
			if err != nil {
				return err
			}
			if patch != nil {
				pb := bytesBlob(release.PatchMediaType, nil, pdata)
				if !seen[pb.desc.Digest] {
					out.patches = append(out.patches, pb.desc)
					patched += pb.desc.Size
				}
				upload(pb, "patch", off)
				c.Patch = patch
				ix.Base = &release.ChunkBase{Size: int64(len(base.data)), Digest: base.digest}
			}
		}
		ix.Chunks = append(ix.Chunks, c)
		meter.Set(off + int64(len(data)))
		return nil
	})
	if werr := g.Wait(); werr != nil {
		return nil, werr // the first upload error, which also stopped Split
	}
	if err != nil {
		return nil, err
	}
	if len(ix.Chunks) == 0 {
		return nil, fmt.Errorf("empty root")
	}
	meter.Finish()
	ix.Digest = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(whole.Sum(nil))}
	fmt.Fprintf(o.log, "publish: %s root: %d chunks, %d distinct, %d patches (%s): %s uploaded, %s already in the registry\n",
		target, len(ix.Chunks), len(out.chunks), len(out.patches), config.FormatSize(patched), config.FormatSize(uploaded), config.FormatSize(present))
	n.total += uploaded + present
	n.uploaded += uploaded
	if out.index, err = json.Marshal(ix); err != nil {
		return nil, fmt.Errorf("chunk index: %w", err)
	}
	return out, nil
}

// Sign signs the release digest in repo with key, as `cosign sign --key`
// does, and pushes the signature under release.SignatureTag(digest),
// replacing a signature there.
func Sign(ctx context.Context, repo name.Repository, digest v1.Hash, key *ecdsa.PrivateKey, opts ...Option) (name.Tag, error) {
	o := makeOptions(ctx, opts)
	payload, err := release.NewPayload(repo.Name(), digest)
	if err != nil {
		return name.Tag{}, fmt.Errorf("publish: sign: %w", err)
	}
	sig, err := release.SignPayload(rand.Reader, key, payload)
	if err != nil {
		return name.Tag{}, fmt.Errorf("publish: %w", err)
	}
	tag := repo.Tag(release.SignatureTag(digest))
	if err := PushSignature(tag, payload, sig, o.ropts...); err != nil {
		return name.Tag{}, fmt.Errorf("publish: sign: %w", err)
	}
	fmt.Fprintf(o.log, "publish: signed %s@%s: %s\n", repo, digest, tag)
	return tag, nil
}

// PushSignature pushes a signature manifest laid out as cosign lays it
// out: an OCI manifest with an OCI config whose one layer is payload
// (release.SimpleSigningMediaType) annotated with the base64 signature.
func PushSignature(tag name.Tag, payload []byte, b64sig string, ropts ...remote.Option) error {
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:       static.NewLayer(payload, release.SimpleSigningMediaType),
		Annotations: map[string]string{release.SignatureAnnotation: b64sig},
	})
	if err != nil {
		return err
	}
	return remote.Write(tag, img, ropts...)
}

// rawManifest is a manifest as bytes, for remote.Put.
type rawManifest struct {
	data []byte
	mt   types.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.data, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mt, nil }

func digestOf(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

// blob is a v1.Layer over content that is stored as is (no compression),
// which remote.WriteLayer uploads, counting the bytes it reads.
type blob struct {
	desc     v1.Descriptor
	open     func() io.Reader
	progress *progress.Meter
	// sent counts the bytes read from the blob: zero after
	// remote.WriteLayer when the registry already had it.
	sent int64
}

func bytesBlob(mt types.MediaType, ann map[string]string, data []byte) *blob {
	return &blob{desc: v1.Descriptor{MediaType: mt, Size: int64(len(data)), Digest: digestOf(data), Annotations: ann},
		open: func() io.Reader { return bytes.NewReader(data) }}
}

func (b *blob) Digest() (v1.Hash, error)            { return b.desc.Digest, nil }
func (b *blob) DiffID() (v1.Hash, error)            { return b.desc.Digest, nil }
func (b *blob) Size() (int64, error)                { return b.desc.Size, nil }
func (b *blob) MediaType() (types.MediaType, error) { return b.desc.MediaType, nil }
func (b *blob) Uncompressed() (io.ReadCloser, error) {
	return b.Compressed()
}
func (b *blob) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(&countingReader{r: b.open(), p: b.progress, n: &b.sent}), nil
}

type countingReader struct {
	r io.Reader
	p *progress.Meter
	n *int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	*c.n += int64(n)
	if c.p != nil {
		c.p.Add(int64(n))
	}
	return n, err
}
