// Package release is the format of an ingot release in an OCI registry and
// its verifier: the media types, the config blob, the cosign-compatible
// signature payload, and Verify, which fetches a release, checks its
// signature against the configured public keys, its structure and its
// release number, and reads its blobs only through digest checks.
//
// A release is one OCI image index (artifactType ArtifactType) with one
// image manifest per target. Each manifest carries a Config blob
// (ConfigMediaType), the root filesystem as one RootMediaType layer or in
// chunks (a ChunkIndexMediaType layer and one ChunkMediaType layer per
// distinct chunk, see RootPlan), and one BootFileMediaType layer per boot
// file of the slot, named by its
// org.opencontainers.image.title annotation. A signature is a cosign
// "simple signing" manifest under the tag sha256-<hex>.sig beside it, or
// a Sigstore bundle attached to the index as an OCI referrer (what
// `cosign sign --new-bundle-format` writes).
//
// The package reads and verifies only: it links no builder or packer
// writer, so the appliance can use it to pull updates. Publishing lives in
// mgmt/publish.
package release

import (
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"encoding/json"
	"fmt"
	"path"
	"strings"
	"time"
)

// Media types of a release. Registries store them as given; `crane
// manifest`, `skopeo inspect --raw` and `oras` show them.
const (
	// ArtifactType marks an ingot release: the index's and each
	// manifest's artifactType.
	ArtifactType = "application/vnd.ingot.release.v1"
	// ConfigMediaType is the config blob of a target's manifest: Config
	// as JSON.
	ConfigMediaType = "application/vnd.ingot.release.v1+json"
	// RootMediaType is the whole root squashfs of the target as one
	// layer, padded to 4 KiB as the writer pads it (what `ingot update`
	// streams into the inactive slot).
	RootMediaType = "application/vnd.ingot.release.root.v1.squashfs"
	// BootFileMediaType is one file the slot boots with (kernel,
	// initramfs, command line; on a Pi also device trees and overlays),
	// named by TitleAnnotation relative to the slot's boot directory.
	BootFileMediaType = "application/vnd.ingot.release.bootfile.v1"
	// ChunkIndexMediaType is the chunked form of the root: a ChunkIndex
	// as JSON, listing the root's content-defined chunks (packer/format/cdc)
	// in order. A manifest with it has one ChunkMediaType layer per
	// distinct chunk and no RootMediaType layer.
	ChunkIndexMediaType = "application/vnd.ingot.release.root-chunks.v1+json"
	// ChunkMediaType is one chunk of a chunked root, zstd-compressed
	// (EncodeChunk); the chunk index names its raw digest and this blob.
	ChunkMediaType = "application/vnd.ingot.release.chunk.v1+zstd"
	// PatchMediaType is one chunk encoded as a zstd frame against a
	// dictionary: a range of the base release's root (ChunkIndex.Base),
	// which an appliance running that release has in its running slot.
	PatchMediaType = "application/vnd.ingot.release.chunk-patch.v1+zstd"
)

// Annotations of a release.
const (
	// TitleAnnotation names a boot file (the OCI standard title).
	TitleAnnotation = "org.opencontainers.image.title"
	// CreatedAnnotation is the release's creation time (RFC 3339) on
	// the index and each manifest.
	CreatedAnnotation = "org.opencontainers.image.created"
	// TargetAnnotation is the ingot target (vm-amd64, rpi, …) on each
	// manifest's descriptor in the index and on the manifest.
	TargetAnnotation = "dev.ingot.target"
	// NameAnnotation is the appliance's name on the index.
	NameAnnotation = "dev.ingot.name"
	// ReleaseAnnotation is the release number (decimal) on the index.
	ReleaseAnnotation = "dev.ingot.release"
)

// Config is the config blob of one target's manifest.
type Config struct {
	// Name is the appliance's name (ingot.yaml's name:).
	Name string `json:"name"`
	// Target is the ingot target, Arch its GOARCH.
	Target string `json:"target"`
	Arch   string `json:"arch"`
	// BuildID identifies the build (a hash of every input).
	BuildID string `json:"build_id"`
	// Release is the release number, spec.Appliance.Release of the
	// image: an appliance refuses a lower one than it runs unless told
	// to allow a downgrade (mgmt.CheckRelease).
	Release uint64 `json:"release"`
	// Created is the build's timestamp: SOURCE_DATE_EPOCH or the
	// builder's fixed epoch, so that equal inputs give equal releases.
	Created time.Time `json:"created"`
	// SBOM is the image's SPDX 2.3 JSON document (spec.SBOMPath).
	SBOM json.RawMessage `json:"sbom,omitempty"`
}

// Bounds on what a registry sends before it is parsed.
const (
	// MaxManifestBytes bounds an index, a manifest and a signature
	// manifest.
	MaxManifestBytes = 4 << 20
	// MaxConfigBytes bounds a config blob (it holds the SBOM).
	MaxConfigBytes = 16 << 20
	// MaxPayloadBytes bounds a signature payload.
	MaxPayloadBytes = 64 << 10
	// MaxSignatureLayers bounds how many signature layers are tried:
	// each costs a download and an ECDSA verification before anything
	// is known to be signed.
	MaxSignatureLayers = 16
	// MaxChunks bounds the chunks of a chunked root (4 GiB at the mean
	// chunk size; a manifest of MaxManifestBytes names fewer distinct
	// chunks anyway).
	MaxChunks = 1 << 16
	// MaxChunkIndexBytes bounds a chunk index blob: MaxChunks entries of
	// about 100 bytes.
	MaxChunkIndexBytes = 8 << 20
)

// ChunkIndexVersion is the version of the ChunkIndex format.
const ChunkIndexVersion = 1

// ChunkIndex is the blob of a ChunkIndexMediaType layer: the root (Size
// bytes with SHA-256 Digest) is the concatenation of Chunks, in order,
// cut by the rule Chunking (cdc.Name). Offsets are implicit. Chunks are
// stored zstd-compressed (Compression, ChunkCompression); a chunk may also
// have a patch against Base, the root of an earlier release.
type ChunkIndex struct {
	Version     int     `json:"version"`
	Chunking    string  `json:"chunking"`
	Compression string  `json:"compression"`
	Size        int64   `json:"size"`
	Digest      v1.Hash `json:"digest"`
	// Base is the root the patches are against; nil without patches.
	Base   *ChunkBase `json:"base,omitempty"`
	Chunks []Chunk    `json:"chunks"`
}

// ChunkCompression is the only ChunkIndex.Compression: each chunk blob is
// one zstd frame of the chunk (EncodeChunk, DecodeChunk).
const ChunkCompression = "zstd"

// ChunkBase names the root an index's patches are against: its size and
// SHA-256, which an appliance compares with its running root's.
type ChunkBase struct {
	Size   int64   `json:"size"`
	Digest v1.Hash `json:"digest"`
}

// Chunk is one entry of a ChunkIndex: Size bytes with SHA-256 Digest,
// stored as the ChunkMediaType layer Blob (BlobSize bytes), and, when
// Patch is set, also as a patch against the index's Base.
type Chunk struct {
	Size     int64       `json:"size"`
	Digest   v1.Hash     `json:"digest"`
	Blob     v1.Hash     `json:"blob"`
	BlobSize int64       `json:"blob_size"`
	Patch    *ChunkPatch `json:"patch,omitempty"`
}

// ChunkPatch is a chunk encoded against bytes [DictOffset,
// DictOffset+DictSize) of the base root as a raw zstd dictionary: the
// PatchMediaType layer Blob of BlobSize bytes.
type ChunkPatch struct {
	Blob       v1.Hash `json:"blob"`
	BlobSize   int64   `json:"blob_size"`
	DictOffset int64   `json:"dict_offset"`
	DictSize   int64   `json:"dict_size"`
}

// CheckBootFileName reports whether name may name a boot file: a clean
// relative slash path without "..", at most 255 bytes.
func CheckBootFileName(name string) error {
	switch {
	case name == "" || len(name) > 255:
		return fmt.Errorf("boot file name %q: empty or longer than 255 bytes", name)
	case strings.HasPrefix(name, "/") || path.Clean(name) != name || name == "." ||
		name == ".." || strings.HasPrefix(name, "../") || strings.ContainsAny(name, "\\\x00"):
		return fmt.Errorf("boot file name %q is not a clean relative path", name)
	}
	return nil
}

// RootPlan is how a target's root filesystem is assembled: its size, the
// digest of the whole, and the pieces that make it up, in order and
// contiguous. A release with one root layer has one piece; a chunked one
// (ChunkIndexMediaType) has one per chunk.
type RootPlan struct {
	Size   int64
	Digest v1.Hash
	Pieces []Piece
	// Base is the root the pieces' patches are against; nil when none
	// has a patch.
	Base *ChunkBase
}

// Piece is one part of a root: Size bytes at Offset with SHA-256 Digest,
// stored in the registry as Blob: zstd-compressed when it is a chunk
// layer (Compressed, DecodeChunk), else as is. Patch, when set, is the
// piece encoded against a range of RootPlan.Base.
type Piece struct {
	Offset, Size int64
	Digest       v1.Hash
	Blob         v1.Descriptor
	Patch        *PiecePatch
}

// Compressed reports whether the piece's blob is a zstd-compressed chunk
// (a chunk layer) rather than the bytes themselves (a root layer).
func (p Piece) Compressed() bool { return p.Blob.MediaType == ChunkMediaType }

// PiecePatch is a piece as a PatchMediaType blob, decoded with bytes
// [DictOffset, DictOffset+DictSize) of the base root as dictionary.
type PiecePatch struct {
	Blob                 v1.Descriptor
	DictOffset, DictSize int64
}
