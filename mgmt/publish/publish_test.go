package publish_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	mathrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/mgmt/publish"
	"github.com/ingotdev/ingot/mgmt/release"
	"github.com/ingotdev/ingot/mgmt/release/cosignkey"
	"github.com/ingotdev/ingot/packer/disk"
	"github.com/ingotdev/ingot/packer/format/image"
	"github.com/ingotdev/ingot/packer/format/slot"
	"github.com/ingotdev/ingot/packer/rootfs"
)

const testEpoch = 1700000000

// writeImage writes a small image of appliance "app" for target with the
// given release, as the packer writes real ones.
func writeImage(t *testing.T, target, arch, buildID string, rel uint64) publish.Image {
	t.Helper()
	return writeImageFiles(t, target, arch, buildID, rel, map[string][]byte{"/init": []byte("init of " + buildID)})
}

// writeImageFiles is writeImage with the root's files given.
func writeImageFiles(t *testing.T, target, arch, buildID string, rel uint64, files map[string][]byte) publish.Image {
	t.Helper()
	tree := rootfs.New(testEpoch)
	var size int64
	for name, content := range files {
		if err := tree.Add(name, rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o755, Size: int64(len(content)), Content: rootfs.Bytes(content)}); err != nil {
			t.Fatal(err)
		}
		size += int64(len(content))
	}
	path := filepath.Join(t.TempDir(), "app-"+target+".img")
	if _, err := disk.Write(context.Background(), path, disk.Spec{
		Name: "app", Target: target, Arch: arch, BuildID: buildID, Release: rel,
		Kernel: []byte("kernel " + arch), Initrd: []byte("initrd " + buildID), Cmdline: "console=ttyS0",
		Root: tree, ModTime: testEpoch, BootBytes: 40 << 20, RootSlotBytes: 4<<20 + 2*size,
	}); err != nil {
		t.Fatal(err)
	}
	return publish.Image{Path: path, Created: time.Unix(testEpoch, 0), SBOM: []byte(`{"spdxVersion":"SPDX-2.3","name":"` + buildID + `"}`)}
}

// newRegistry starts go-containerregistry's in-process registry behind
// middle (nil: none) and returns its host:port.
func newRegistry(t *testing.T, middle func(http.Handler) http.Handler) string {
	t.Helper()
	var h http.Handler = registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	if middle != nil {
		h = middle(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := cosignkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// publishSigned pushes images under host/fleet/app:tag and signs them with
// key (unless nil).
func publishSigned(t *testing.T, host, tag string, key *ecdsa.PrivateKey, images ...publish.Image) *publish.Result {
	t.Helper()
	ctx := context.Background()
	ref, err := name.NewTag(host + "/fleet/app:" + tag)
	if err != nil {
		t.Fatal(err)
	}
	res, err := publish.Push(ctx, ref, images)
	if err != nil {
		t.Fatal(err)
	}
	if key != nil {
		if _, err := publish.Sign(ctx, ref.Context(), res.Digest, key); err != nil {
			t.Fatal(err)
		}
	}
	return res
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// TestPublishVerify publishes two targets, signs them, and reads them
// back through Verify: configs, layers and every blob byte for byte.
func TestPublishVerify(t *testing.T) {
	host := newRegistry(t, nil)
	key := newKey(t)
	amd := writeImage(t, "vm-amd64", "amd64", "b-amd", 7)
	arm := writeImage(t, "vm-arm64", "arm64", "b-arm", 7)
	res := publishSigned(t, host, "stable", key, amd, arm)

	rel, err := release.Verify(context.Background(), mustRef(t, host+"/fleet/app:stable"), release.Policy{Keys: []*ecdsa.PublicKey{&key.PublicKey}})
	if err != nil {
		t.Fatal(err)
	}
	if rel.Digest != res.Digest || rel.Name != "app" || rel.Number != 7 || len(rel.Targets) != 2 {
		t.Fatalf("Verify = digest %s name %q release %d, %d targets; published %s", rel.Digest, rel.Name, rel.Number, len(rel.Targets), res.Digest)
	}
	for _, tc := range []struct {
		target, arch, build string
		img                 publish.Image
	}{{"vm-amd64", "amd64", "b-amd", amd}, {"vm-arm64", "arm64", "b-arm", arm}} {
		tt, err := rel.Target(tc.target)
		if err != nil {
			t.Fatal(err)
		}
		c := tt.Config
		if c.Arch != tc.arch || c.BuildID != tc.build || c.Release != 7 || !c.Created.Equal(time.Unix(testEpoch, 0)) || !bytes.Equal(c.SBOM, tc.img.SBOM) {
			t.Errorf("%s: config %+v", tc.target, c)
		}
		if tt.Descriptor.Platform == nil || tt.Descriptor.Platform.Architecture != tc.arch || tt.Descriptor.Platform.OS != "linux" {
			t.Errorf("%s: platform %+v", tc.target, tt.Descriptor.Platform)
		}
		im, err := image.Open(tc.img.Path)
		if err != nil {
			t.Fatal(err)
		}
		root, err := im.RootSquashfs(slot.A)
		if err != nil {
			t.Fatal(err)
		}
		wantRoot, _ := io.ReadAll(root)
		files, err := im.BootFiles(slot.A)
		im.Close()
		if err != nil {
			t.Fatal(err)
		}
		if tt.Root.Digest != (v1.Hash{}) || tt.ChunkIndex.MediaType != release.ChunkIndexMediaType || len(tt.Chunks) == 0 {
			t.Errorf("%s: root layer %v, chunk index %v, %d chunks: want a chunked root", tc.target, tt.Root.Digest, tt.ChunkIndex.Digest, len(tt.Chunks))
		}
		if got := readRoot(t, rel, tt); !bytes.Equal(got, wantRoot) {
			t.Errorf("%s: root: %d bytes, differs from the image's %d-byte root", tc.target, len(got), len(wantRoot))
		}
		if len(tt.BootFiles) != len(files) {
			t.Errorf("%s: %d boot files, the image has %d", tc.target, len(tt.BootFiles), len(files))
		}
		for _, d := range tt.BootFiles {
			n := d.Annotations[release.TitleAnnotation]
			if got := readBlob(t, rel, d); !bytes.Equal(got, files[n]) {
				t.Errorf("%s: boot file %s: %q, want %q", tc.target, n, got, files[n])
			}
		}
		plan, err := rel.RootPlan(tt)
		if err != nil {
			t.Fatal(err)
		}
		var blobs int64
		for _, p := range plan.Pieces {
			blobs += p.Blob.Size
		}
		if n, err := rel.VerifyBlobs(tt); err != nil || n != blobs+sumLen(files) {
			t.Errorf("%s: VerifyBlobs = %d, %v; want %d bytes of chunk blobs and boot files", tc.target, n, err, blobs+sumLen(files))
		}
	}

	// Publishing the same images again gives the same digest: the
	// release is a function of the images.
	again := publishSigned(t, host, "again", nil, amd, arm)
	if again.Digest != res.Digest {
		t.Errorf("republished digest %s, first %s", again.Digest, res.Digest)
	}
}

// TestPublishDedup: a release whose root differs from an earlier one in
// one small file uploads only the chunks around the change; publishing
// the same images again uploads nothing.
func TestPublishDedup(t *testing.T) {
	host := newRegistry(t, nil)
	big := make([]byte, 6<<20)
	rng := mathrand.New(mathrand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	text := bytes.Repeat([]byte("a line of compressible text in the root\n"), 50000)
	img1 := writeImageFiles(t, "vm-amd64", "amd64", "b1", 1, map[string][]byte{"/init": []byte("init, release 1"), "/big": big, "/text": text})
	img2 := writeImageFiles(t, "vm-amd64", "amd64", "b2", 2, map[string][]byte{"/init": []byte("init, release 2 with a longer line"), "/big": big, "/text": text})
	pushImage := func(tag string, img publish.Image) *publish.Result {
		var log bytes.Buffer
		ref, _ := name.NewTag(host + "/fleet/app:" + tag)
		res, err := publish.Push(context.Background(), ref, []publish.Image{img}, publish.WithLog(&log))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("publish %s: %d bytes, %d uploaded\n%s", tag, res.Bytes, res.BytesUploaded, log.String())
		if !strings.Contains(log.String(), "publish: vm-amd64 root: ") || !strings.Contains(log.String(), " uploaded") {
			t.Errorf("publish %s logged no chunk counts:\n%s", tag, log.String())
		}
		return res
	}
	r1 := pushImage("1", img1)
	if r1.BytesUploaded < int64(len(big)) || r1.BytesUploaded != r1.Bytes {
		t.Errorf("first publish: %d of %d bytes uploaded, want all of them and at least the %d random bytes", r1.BytesUploaded, r1.Bytes, len(big))
	}
	if again := pushImage("1-again", img1); again.BytesUploaded != 0 || again.Digest != r1.Digest {
		t.Errorf("the same image again: %d bytes uploaded, digest %s (first %s); want 0 bytes, the same digest", again.BytesUploaded, again.Digest, r1.Digest)
	}
	r2 := pushImage("2", img2)
	if r2.BytesUploaded*10 > r1.BytesUploaded {
		t.Errorf("release 2 uploaded %d bytes, release 1 %d: a one-file change should upload under a tenth", r2.BytesUploaded, r1.BytesUploaded)
	}

	// Release 2 reads back whole through its chunks.
	key := newKey(t)
	ref, _ := name.NewTag(host + "/fleet/app:2")
	if _, err := publish.Sign(context.Background(), ref.Context(), r2.Digest, key); err != nil {
		t.Fatal(err)
	}
	rel, err := release.Verify(context.Background(), ref, release.Policy{Keys: []*ecdsa.PublicKey{&key.PublicKey}})
	if err != nil {
		t.Fatal(err)
	}
	im, err := image.Open(img2.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	root, err := im.RootSquashfs(slot.A)
	if err != nil {
		t.Fatal(err)
	}
	wantRoot, _ := io.ReadAll(root)
	if got := readRoot(t, rel, &rel.Targets[0]); !bytes.Equal(got, wantRoot) {
		t.Errorf("release 2's root: %d bytes, differs from the image's %d", len(got), len(wantRoot))
	}
}

func sumLen(m map[string][]byte) int64 {
	var n int64
	for _, b := range m {
		n += int64(len(b))
	}
	return n
}

// readRoot assembles target tt's root from its RootPlan, checking the
// plan's offsets and digest.
func readRoot(t *testing.T, rel *release.Release, tt *release.Target) []byte {
	t.Helper()
	plan, err := rel.RootPlan(tt)
	if err != nil {
		t.Fatal(err)
	}
	var root []byte
	for i, p := range plan.Pieces {
		if p.Offset != int64(len(root)) || !p.Compressed() || p.Blob.MediaType != release.ChunkMediaType {
			t.Fatalf("piece %d: %+v after %d bytes", i, p, len(root))
		}
		b, err := rel.ReadPiece(p)
		if err != nil {
			t.Fatalf("piece %d: %v", i, err)
		}
		root = append(root, b...)
	}
	if sum := sha256.Sum256(root); int64(len(root)) != plan.Size || hex.EncodeToString(sum[:]) != plan.Digest.Hex {
		t.Fatalf("the root's %d pieces give %d bytes with digest %x; the plan says %d bytes, %s", len(plan.Pieces), len(root), sum, plan.Size, plan.Digest)
	}
	return root
}

func readBlob(t *testing.T, rel *release.Release, d v1.Descriptor) []byte {
	t.Helper()
	rc, err := rel.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestVerifyRefuses performs the attacks on a release: each must be
// refused with an error naming what failed.
func TestVerifyRefuses(t *testing.T) {
	ctx := context.Background()
	key, other := newKey(t), newKey(t)
	keys := []*ecdsa.PublicKey{&key.PublicKey}
	img := writeImage(t, "vm-amd64", "amd64", "b1", 3)
	img2 := writeImage(t, "vm-amd64", "amd64", "b2", 4)

	t.Run("unsigned", func(t *testing.T) {
		host := newRegistry(t, nil)
		res := publishSigned(t, host, "stable", nil, img)
		_, err := release.Verify(ctx, mustRef(t, host+"/fleet/app:stable"), release.Policy{Keys: keys})
		wantErr(t, err, "no signature at "+host+"/fleet/app:"+release.SignatureTag(res.Digest))
		if !errors.Is(err, release.ErrUnsigned) {
			t.Errorf("error %v is not ErrUnsigned", err)
		}
	})
	t.Run("other key", func(t *testing.T) {
		host := newRegistry(t, nil)
		publishSigned(t, host, "stable", other, img)
		_, err := release.Verify(ctx, mustRef(t, host+"/fleet/app:stable"), release.Policy{Keys: keys})
		wantErr(t, err, "does not verify with any of the 1 configured public keys")
	})
	t.Run("tampered payload", func(t *testing.T) {
		host := newRegistry(t, nil)
		res := publishSigned(t, host, "stable", key, img)
		repo := mustRef(t, host+"/fleet/app:stable").Context()
		payload, err := release.NewPayload(repo.Name(), res.Digest)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := release.SignPayload(rand.Reader, key, payload)
		if err != nil {
			t.Fatal(err)
		}
		// The same signature over a payload with one byte changed.
		tampered := bytes.Replace(payload, []byte("fleet/app"), []byte("fleet/apq"), 1)
		if err := publish.PushSignature(repo.Tag(release.SignatureTag(res.Digest)), tampered, sig); err != nil {
			t.Fatal(err)
		}
		_, err = release.Verify(ctx, mustRef(t, host+"/fleet/app:stable"), release.Policy{Keys: keys})
		wantErr(t, err, "does not verify with any of the 1 configured public keys")
	})
	t.Run("signature of another release", func(t *testing.T) {
		// A validly signed payload for release 1, copied to release 2's
		// signature tag: the signature verifies, the digest does not match.
		host := newRegistry(t, nil)
		r1 := publishSigned(t, host, "old", key, img)
		r2 := publishSigned(t, host, "stable", nil, img2)
		repo := mustRef(t, host+"/fleet/app:stable").Context()
		payload, _ := release.NewPayload(repo.Name(), r1.Digest)
		sig, _ := release.SignPayload(rand.Reader, key, payload)
		if err := publish.PushSignature(repo.Tag(release.SignatureTag(r2.Digest)), payload, sig); err != nil {
			t.Fatal(err)
		}
		_, err := release.Verify(ctx, mustRef(t, host+"/fleet/app:stable"), release.Policy{Keys: keys})
		wantErr(t, err, fmt.Sprintf("docker-manifest-digest is %q, not the release's %s", r1.Digest, r2.Digest))
	})
	t.Run("many bad signatures", func(t *testing.T) {
		// Bad signatures before the good one: up to MaxSignatureLayers
		// layers are tried, a good one after them is not reached, and
		// the error says why.
		host := newRegistry(t, nil)
		res := publishSigned(t, host, "stable", nil, img)
		repo := mustRef(t, host+"/fleet/app:stable").Context()
		payload, _ := release.NewPayload(repo.Name(), res.Digest)
		good, _ := release.SignPayload(rand.Reader, key, payload)
		bad, _ := release.SignPayload(rand.Reader, other, payload)
		pushSigs := func(nBad int) {
			base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
			var adds []mutate.Addendum
			for i := range nBad {
				// Distinct payload bytes (JSON whitespace) make distinct layers.
				adds = append(adds, mutate.Addendum{
					Layer:       static.NewLayer(append(append([]byte{}, payload...), bytes.Repeat([]byte(" "), i+1)...), release.SimpleSigningMediaType),
					Annotations: map[string]string{release.SignatureAnnotation: bad},
				})
			}
			adds = append(adds, mutate.Addendum{
				Layer:       static.NewLayer(payload, release.SimpleSigningMediaType),
				Annotations: map[string]string{release.SignatureAnnotation: good},
			})
			sigImg, err := mutate.Append(base, adds...)
			if err != nil {
				t.Fatal(err)
			}
			if err := remote.Write(repo.Tag(release.SignatureTag(res.Digest)), sigImg); err != nil {
				t.Fatal(err)
			}
		}
		ref := mustRef(t, host+"/fleet/app:stable")
		pushSigs(release.MaxSignatureLayers - 1)
		if _, err := release.Verify(ctx, ref, release.Policy{Keys: keys}); err != nil {
			t.Errorf("the good signature as layer %d: %v", release.MaxSignatureLayers, err)
		}
		pushSigs(release.MaxSignatureLayers)
		_, err := release.Verify(ctx, ref, release.Policy{Keys: keys})
		wantErr(t, err, fmt.Sprintf("more than %d signatures", release.MaxSignatureLayers))
	})
	t.Run("downgrade", func(t *testing.T) {
		host := newRegistry(t, nil)
		publishSigned(t, host, "stable", key, img)
		ref := mustRef(t, host+"/fleet/app:stable")
		_, err := release.Verify(ctx, ref, release.Policy{Keys: keys, RunningRelease: 5})
		wantErr(t, err, "release 3 is older than the running release 5")
		if !errors.Is(err, mgmt.ErrRejected) {
			t.Errorf("error %v is not mgmt.ErrRejected", err)
		}
		if _, err := release.Verify(ctx, ref, release.Policy{Keys: keys, RunningRelease: 5, AllowDowngrade: true}); err != nil {
			t.Errorf("with AllowDowngrade: %v", err)
		}
	})
	t.Run("no keys", func(t *testing.T) {
		host := newRegistry(t, nil)
		publishSigned(t, host, "stable", key, img)
		_, err := release.Verify(ctx, mustRef(t, host+"/fleet/app:stable"), release.Policy{})
		wantErr(t, err, "no public keys to verify with")
	})
	t.Run("tampered blob", func(t *testing.T) {
		// A registry (or a man in the middle) that serves other bytes
		// for the root blob: the signature and manifests still verify,
		// reading the blob fails at its end, naming it.
		var target string
		host := newRegistry(t, func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if target == "" || r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+target) {
					next.ServeHTTP(w, r)
					return
				}
				rec := httptest.NewRecorder()
				next.ServeHTTP(rec, r)
				body := rec.Body.Bytes()
				body[len(body)/2] ^= 0xff
				for k, v := range rec.Header() {
					w.Header()[k] = v
				}
				w.WriteHeader(rec.Code)
				w.Write(body)
			})
		})
		publishSigned(t, host, "stable", key, img)
		rel, err := release.Verify(ctx, mustRef(t, host+"/fleet/app:stable"), release.Policy{Keys: keys})
		if err != nil {
			t.Fatal(err)
		}
		tt := &rel.Targets[0]
		plan, err := rel.RootPlan(tt)
		if err != nil {
			t.Fatal(err)
		}
		target = plan.Pieces[len(plan.Pieces)-1].Blob.Digest.String()
		_, err = rel.VerifyBlobs(tt)
		wantErr(t, err, "blob "+target)
	})
	t.Run("tampered manifest", func(t *testing.T) {
		// The registry serves a manifest whose bytes differ from the
		// digest the signed index names.
		var target string
		host := newRegistry(t, func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if target == "" || !strings.HasSuffix(r.URL.Path, "/manifests/"+target) {
					next.ServeHTTP(w, r)
					return
				}
				rec := httptest.NewRecorder()
				next.ServeHTTP(rec, r)
				body := bytes.Replace(rec.Body.Bytes(), []byte(`"vm-amd64"`), []byte(`"vm-arm64"`), 1)
				for k, v := range rec.Header() {
					w.Header()[k] = v
				}
				w.WriteHeader(rec.Code)
				w.Write(body)
			})
		})
		publishSigned(t, host, "stable", key, img)
		rel, err := release.Verify(ctx, mustRef(t, host+"/fleet/app:stable"), release.Policy{Keys: keys})
		if err != nil {
			t.Fatal(err)
		}
		target = rel.Targets[0].Descriptor.Digest.String()
		_, err = release.Verify(ctx, mustRef(t, host+"/fleet/app:stable"), release.Policy{Keys: keys})
		wantErr(t, err, "manifests[0] ("+target+")")
	})
	t.Run("retagged index", func(t *testing.T) {
		// The tag moved to an unsigned index: its digest has no
		// signature, even though an older one had.
		host := newRegistry(t, nil)
		publishSigned(t, host, "stable", key, img)
		publishSigned(t, host, "stable", nil, img2)
		_, err := release.Verify(ctx, mustRef(t, host+"/fleet/app:stable"), release.Policy{Keys: keys})
		if !errors.Is(err, release.ErrUnsigned) {
			t.Errorf("Verify = %v, want ErrUnsigned", err)
		}
	})
}

func wantErr(t *testing.T, err error, want string) {
	t.Helper()
	t.Logf("error: %v", err)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error = %v, want one containing %q", err, want)
	}
}

// TestPushRefusesMixedReleases: one release holds one appliance at one
// release number.
func TestPushRefusesMixedReleases(t *testing.T) {
	host := newRegistry(t, nil)
	ref, _ := name.NewTag(host + "/fleet/app:x")
	_, err := publish.Push(context.Background(), ref, []publish.Image{
		writeImage(t, "vm-amd64", "amd64", "b1", 3), writeImage(t, "vm-arm64", "arm64", "b2", 4)})
	wantErr(t, err, "one release holds one appliance and one release number")
	_, err = publish.Push(context.Background(), ref, []publish.Image{
		writeImage(t, "vm-amd64", "amd64", "b1", 3), writeImage(t, "vm-amd64", "amd64", "b2", 3)})
	wantErr(t, err, "target vm-amd64 is published twice")
}

// TestVerifyRefusesChunks performs the attacks on a chunked root with
// manifests and chunk indexes that are signed but do not describe the
// root: each is refused, by Verify or by RootPlan, naming what is wrong.
func TestVerifyRefusesChunks(t *testing.T) {
	ctx := context.Background()
	key := newKey(t)
	keys := []*ecdsa.PublicKey{&key.PublicKey}
	big := make([]byte, 1<<20)
	rng := mathrand.New(mathrand.NewPCG(3, 4))
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	img := writeImageFiles(t, "vm-amd64", "amd64", "b1", 3, map[string][]byte{"/init": []byte("init"), "/big": big})

	// republish publishes img, lets change rewrite its manifest (and
	// upload blobs), pushes the manifest and an index naming it, signs
	// the index and returns the verified release (or Verify's error).
	republish := func(t *testing.T, change func(host string, m *v1.Manifest)) (*release.Release, error) {
		host := newRegistry(t, nil)
		publishSigned(t, host, "orig", nil, img)
		repo := mustRef(t, host+"/fleet/app:orig").Context()
		idx, err := remote.Index(mustRef(t, host+"/fleet/app:orig"))
		if err != nil {
			t.Fatal(err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		desc, err := remote.Get(repo.Digest(im.Manifests[0].Digest.String()))
		if err != nil {
			t.Fatal(err)
		}
		var m v1.Manifest
		if err := json.Unmarshal(desc.Manifest, &m); err != nil {
			t.Fatal(err)
		}
		change(host, &m)
		raw, _ := json.Marshal(m)
		sum := sha256.Sum256(raw)
		d := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
		if err := remote.Put(repo.Digest(d.String()), rawManifest{raw, types.OCIManifestSchema1}); err != nil {
			t.Fatal(err)
		}
		im.Manifests[0].Digest, im.Manifests[0].Size = d, int64(len(raw))
		rawIdx, _ := json.Marshal(im)
		tag := repo.Tag("stable")
		if err := remote.Put(tag, rawManifest{rawIdx, types.OCIImageIndex}); err != nil {
			t.Fatal(err)
		}
		sum = sha256.Sum256(rawIdx)
		if _, err := publish.Sign(ctx, repo, v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}, key); err != nil {
			t.Fatal(err)
		}
		return release.Verify(ctx, tag, release.Policy{Keys: keys})
	}
	upload := func(t *testing.T, host string, mt types.MediaType, data []byte) v1.Descriptor {
		l := static.NewLayer(data, mt)
		if err := remote.WriteLayer(mustRef(t, host+"/fleet/app:x").Context(), l); err != nil {
			t.Fatal(err)
		}
		d, _ := l.Digest()
		return v1.Descriptor{MediaType: mt, Size: int64(len(data)), Digest: d}
	}
	layerOf := func(m *v1.Manifest, mt types.MediaType) int {
		for i, l := range m.Layers {
			if l.MediaType == mt {
				return i
			}
		}
		t.Fatalf("no %s layer", mt)
		return -1
	}
	rootPlanErr := func(t *testing.T, rel *release.Release, err error, want string) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		_, err = rel.RootPlan(&rel.Targets[0])
		wantErr(t, err, want)
		_, err = rel.VerifyBlobs(&rel.Targets[0])
		wantErr(t, err, want)
	}

	t.Run("unchanged", func(t *testing.T) {
		rel, err := republish(t, func(string, *v1.Manifest) {})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rel.VerifyBlobs(&rel.Targets[0]); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("root as one layer", func(t *testing.T) {
		// The earlier form, which publish no longer writes, is still
		// read: one piece, the layer itself.
		im, err := image.Open(img.Path)
		if err != nil {
			t.Fatal(err)
		}
		defer im.Close()
		section, err := im.RootSquashfs(slot.A)
		if err != nil {
			t.Fatal(err)
		}
		wantRoot, _ := io.ReadAll(section)
		rel, err := republish(t, func(host string, m *v1.Manifest) {
			var layers []v1.Descriptor
			for _, l := range m.Layers {
				if l.MediaType != release.ChunkIndexMediaType && l.MediaType != release.ChunkMediaType {
					layers = append(layers, l)
				}
			}
			m.Layers = append([]v1.Descriptor{upload(t, host, release.RootMediaType, wantRoot)}, layers...)
		})
		if err != nil {
			t.Fatal(err)
		}
		tt := &rel.Targets[0]
		plan, err := rel.RootPlan(tt)
		if err != nil {
			t.Fatal(err)
		}
		if len(plan.Pieces) != 1 || plan.Pieces[0].Blob.Digest != tt.Root.Digest || plan.Size != int64(len(wantRoot)) {
			t.Fatalf("plan %+v for root layer %v", plan, tt.Root)
		}
		if got := readBlob(t, rel, tt.Root); !bytes.Equal(got, wantRoot) {
			t.Errorf("root layer: %d bytes, want the image's %d", len(got), len(wantRoot))
		}
		if _, err := rel.VerifyBlobs(tt); err != nil {
			t.Error(err)
		}
	})
	t.Run("both root forms", func(t *testing.T) {
		_, err := republish(t, func(host string, m *v1.Manifest) {
			m.Layers = append(m.Layers, upload(t, host, release.RootMediaType, []byte("a whole root")))
		})
		wantErr(t, err, "one root form")
	})
	t.Run("chunk layer twice", func(t *testing.T) {
		_, err := republish(t, func(host string, m *v1.Manifest) {
			m.Layers = append(m.Layers, m.Layers[layerOf(m, release.ChunkMediaType)])
		})
		wantErr(t, err, "appears twice")
	})
	t.Run("chunk layer not in the index", func(t *testing.T) {
		var extra v1.Descriptor
		rel, err := republish(t, func(host string, m *v1.Manifest) {
			extra = upload(t, host, release.ChunkMediaType, []byte("a chunk nobody names"))
			m.Layers = append(m.Layers, extra)
		})
		rootPlanErr(t, rel, err, "layer "+extra.Digest.String()+" is not in the index")
	})
	t.Run("index chunk without a layer", func(t *testing.T) {
		var gone v1.Descriptor
		rel, err := republish(t, func(host string, m *v1.Manifest) {
			i := layerOf(m, release.ChunkMediaType)
			gone = m.Layers[i]
			m.Layers = append(m.Layers[:i], m.Layers[i+1:]...)
		})
		rootPlanErr(t, rel, err, "the manifest has no "+release.ChunkMediaType+" layer "+gone.Digest.String())
	})
	t.Run("index of another root", func(t *testing.T) {
		// A well-formed index whose root digest is not what its chunks
		// make: only the assembled root can tell, and VerifyBlobs does.
		rel, err := republish(t, func(host string, m *v1.Manifest) {
			i := layerOf(m, release.ChunkIndexMediaType)
			raw := readRegistryBlob(t, host, m.Layers[i])
			var ix release.ChunkIndex
			if err := json.Unmarshal(raw, &ix); err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256([]byte("another root"))
			ix.Digest = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
			raw, _ = json.Marshal(ix)
			m.Layers[i] = upload(t, host, release.ChunkIndexMediaType, raw)
		})
		if err != nil {
			t.Fatal(err)
		}
		_, err = rel.VerifyBlobs(&rel.Targets[0])
		wantErr(t, err, "the chunk index says sha256:")
	})
	t.Run("index too large", func(t *testing.T) {
		rel, err := republish(t, func(host string, m *v1.Manifest) {
			m.Layers[layerOf(m, release.ChunkIndexMediaType)].Size = release.MaxChunkIndexBytes + 1
		})
		rootPlanErr(t, rel, err, "not within 0..8388608")
	})
}

func readRegistryBlob(t *testing.T, host string, d v1.Descriptor) []byte {
	t.Helper()
	l, err := remote.Layer(mustRef(t, host+"/fleet/app:x").Context().Digest(d.Digest.String()))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPushChunkUploadFails: a registry that refuses chunk uploads stops
// the push with an error naming the chunk, and no index is tagged.
func TestPushChunkUploadFails(t *testing.T) {
	host := newRegistry(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if (r.Method == http.MethodPatch || r.Method == http.MethodPut) && strings.Contains(r.URL.Path, "/blobs/uploads/") && r.ContentLength > 8<<10 {
				http.Error(w, "quota exceeded", http.StatusForbidden)
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	big := make([]byte, 1<<20)
	rng := mathrand.New(mathrand.NewPCG(5, 6))
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	img := writeImageFiles(t, "vm-amd64", "amd64", "b1", 1, map[string][]byte{"/big": big})
	ref, _ := name.NewTag(host + "/fleet/app:1")
	_, err := publish.Push(context.Background(), ref, []publish.Image{img})
	wantErr(t, err, "upload root chunk at offset")
	if _, err := remote.Head(ref); err == nil {
		t.Error("the tag exists after a failed push")
	}
}
