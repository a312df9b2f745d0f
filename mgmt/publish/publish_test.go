package publish_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log"
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
	"github.com/ingotdev/ingot/mgmt/push"
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
	tree := rootfs.New(testEpoch)
	if err := tree.Add("/init", rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o755, Content: rootfs.Bytes("init of " + buildID)}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "app-"+target+".img")
	if _, err := disk.Write(context.Background(), path, disk.Spec{
		Name: "app", Target: target, Arch: arch, BuildID: buildID, Release: rel,
		Kernel: []byte("kernel " + arch), Initrd: []byte("initrd " + buildID), Cmdline: "console=ttyS0",
		Root: tree, ModTime: testEpoch, BootBytes: 40 << 20, RootSlotBytes: 4 << 20,
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
		root, err := push.RootSection(im)
		if err != nil {
			t.Fatal(err)
		}
		wantRoot, _ := io.ReadAll(root)
		files, err := im.BootFiles(slot.A)
		im.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got := readBlob(t, rel, tt.Root); !bytes.Equal(got, wantRoot) {
			t.Errorf("%s: root blob: %d bytes, differs from the image's %d-byte root", tc.target, len(got), len(wantRoot))
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
		if n, err := rel.VerifyBlobs(tt); err != nil || n != int64(len(wantRoot))+sumLen(files) {
			t.Errorf("%s: VerifyBlobs = %d, %v", tc.target, n, err)
		}
	}

	// Publishing the same images again gives the same digest: the
	// release is a function of the images.
	again := publishSigned(t, host, "again", nil, amd, arm)
	if again.Digest != res.Digest {
		t.Errorf("republished digest %s, first %s", again.Digest, res.Digest)
	}
}

func sumLen(m map[string][]byte) int64 {
	var n int64
	for _, b := range m {
		n += int64(len(b))
	}
	return n
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
		target = tt.Root.Digest.String()
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
