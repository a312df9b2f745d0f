// Package ocitest makes OCI images in memory and serves them from an
// in-process registry, for the tests of the builder and bench/oci.
package ocitest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
)

// Entry is one tar entry of a layer. Type defaults to a regular file
// (tar.TypeReg) and Mode to 0644 for files, 0755 for directories.
type Entry struct {
	Name     string
	Type     byte
	Body     []byte
	Link     string
	Mode     int64
	UID, GID int
	// DevMajor and DevMinor number a tar.TypeChar or tar.TypeBlock node.
	DevMajor, DevMinor int64
	// Xattrs become SCHILY.xattr.* PAX records.
	Xattrs map[string]string
}

// File is a regular file entry.
func File(name, body string) Entry { return Entry{Name: name, Body: []byte(body)} }

// Dir is a directory entry.
func Dir(name string) Entry { return Entry{Name: name, Type: tar.TypeDir} }

// Symlink is a symbolic link entry.
func Symlink(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeSymlink, Link: target}
}

// Hardlink is a hard link entry.
func Hardlink(name, target string) Entry { return Entry{Name: name, Type: tar.TypeLink, Link: target} }

// Whiteout deletes dir/name of lower layers.
func Whiteout(dir, name string) Entry {
	return File(strings.TrimSuffix(dir, "/")+"/.wh."+name, "")
}

// Opaque hides the lower content of dir.
func Opaque(dir string) Entry { return File(strings.TrimSuffix(dir, "/")+"/.wh..wh..opq", "") }

// layerTime is every entry's modification time: images made by tests are
// the same bytes every run.
var layerTime = time.Unix(1600000000, 0)

// Tar returns the entries as an uncompressed tar.
func Tar(entries ...Entry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Typeflag: e.Type, Name: e.Name, Linkname: e.Link, Mode: e.Mode,
			Uid: e.UID, Gid: e.GID, Devmajor: e.DevMajor, Devminor: e.DevMinor, ModTime: layerTime, Format: tar.FormatPAX}
		if hdr.Typeflag == 0 {
			hdr.Typeflag = tar.TypeReg
		}
		if hdr.Typeflag == tar.TypeReg {
			hdr.Size = int64(len(e.Body))
		}
		if hdr.Mode == 0 {
			hdr.Mode = 0o644
			if hdr.Typeflag == tar.TypeDir {
				hdr.Mode = 0o755
			}
		}
		for k, v := range e.Xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("ocitest: %s: %w", e.Name, err)
		}
		if hdr.Size > 0 {
			if _, err := tw.Write(e.Body); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Layer is an in-memory gzip layer, compressed once.
type Layer struct {
	compressed, uncompressed []byte
	digest, diffID           v1.Hash
}

var _ v1.Layer = (*Layer)(nil)

// NewLayer compresses an uncompressed tar into a layer at gzip level.
func NewLayer(tarBytes []byte, level int) (*Layer, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, level)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(tarBytes); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return &Layer{compressed: buf.Bytes(), uncompressed: tarBytes, digest: sum(buf.Bytes()), diffID: sum(tarBytes)}, nil
}

// LayerOf makes a layer of entries.
func LayerOf(entries ...Entry) (*Layer, error) {
	b, err := Tar(entries...)
	if err != nil {
		return nil, err
	}
	return NewLayer(b, gzip.BestSpeed)
}

func sum(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

// Digest returns the digest of the compressed layer.
func (l *Layer) Digest() (v1.Hash, error) { return l.digest, nil }

// DiffID returns the digest of the uncompressed layer.
func (l *Layer) DiffID() (v1.Hash, error) { return l.diffID, nil }

// Compressed returns the gzip bytes.
func (l *Layer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.compressed)), nil
}

// Uncompressed returns the tar.
func (l *Layer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.uncompressed)), nil
}

// Size returns the compressed size.
func (l *Layer) Size() (int64, error) { return int64(len(l.compressed)), nil }

// MediaType is the OCI gzip layer type.
func (l *Layer) MediaType() (types.MediaType, error) { return types.OCILayer, nil }

// Image makes an OCI image for platform with run config cfg and layers,
// oldest first.
func Image(platform v1.Platform, cfg v1.Config, layers ...v1.Layer) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = platform.OS, platform.Architecture, platform.Variant
	cf.Config = cfg
	cf.Created = v1.Time{Time: layerTime}
	return mutate.ConfigFile(img, cf)
}

// Index makes a multi-platform index of images, each described by the
// platform of its config.
func Index(imgs ...v1.Image) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, img := range imgs {
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: cf.Platform()}})
	}
	return idx, nil
}

// Registry is an in-process registry on a local HTTP server.
type Registry struct {
	srv *httptest.Server
	// Host is "127.0.0.1:PORT", to prefix repository names with.
	Host string
}

// NewRegistry starts a registry; Close stops it.
func NewRegistry() *Registry {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	return &Registry{srv: srv, Host: strings.TrimPrefix(srv.URL, "http://")}
}

// Close shuts the registry down; later pulls from it fail.
func (r *Registry) Close() { r.srv.Close() }

// Push uploads an image or index (a v1.Image or v1.ImageIndex) as ref.
func Push(ref string, x any) error {
	r, err := name.ParseReference(ref)
	if err != nil {
		return err
	}
	switch v := x.(type) {
	case v1.Image:
		return remote.Write(r, v)
	case v1.ImageIndex:
		return remote.WriteIndex(r, v)
	}
	return fmt.Errorf("ocitest: push %s: %T is neither an image nor an index", ref, x)
}
