package publish_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ingotdev/ingot/internal/regtest"
	"github.com/ingotdev/ingot/mgmt/publish"
	"github.com/ingotdev/ingot/mgmt/release"
	"github.com/ingotdev/ingot/mgmt/release/cosignkey"
)

// cosignPassword is the password of every key file these tests write.
const cosignPassword = "cosign interop password"

// cosign is the cosign CLI (go.mod's tool, built once into Go's build
// cache; scripts/setup.sh warms it) run with a home of its own, no
// network use beyond the registry, and the key password in
// cosignkey.PasswordEnv.
type cosign struct {
	bin, home, dir string
	// trustedRoot is an empty sigstore trusted root: without
	// --trusted-root, cosign verify fetches the public one through TUF
	// even when it verifies with a key and ignores the log.
	trustedRoot string
}

func newCosign(t *testing.T) *cosign {
	t.Helper()
	// go tool -n builds the tool into the build cache if it is not there
	// and prints the binary's path.
	out, err := exec.Command("go", "tool", "-n", "cosign").Output()
	if err != nil {
		var stderr []byte
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			stderr = ee.Stderr
		}
		t.Fatalf("go tool -n cosign: %v\n%s", err, stderr)
	}
	c := &cosign{bin: strings.TrimSpace(string(out)), home: t.TempDir(), dir: t.TempDir()}
	c.trustedRoot = filepath.Join(c.home, "trusted_root.json")
	if err := os.WriteFile(c.trustedRoot, []byte(`{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return c
}

// run runs cosign with args in c.dir and returns its combined output.
func (c *cosign) run(args ...string) (string, error) {
	cmd := exec.Command(c.bin, args...)
	cmd.Dir = c.dir
	// HOME and TUF_ROOT: cosign keeps its TUF cache and docker config
	// there; a fresh one per test keeps the machine's out of the way.
	cmd.Env = append(os.Environ(), "HOME="+c.home, "TUF_ROOT="+filepath.Join(c.home, "tuf"),
		"DOCKER_CONFIG="+filepath.Join(c.home, "docker"), cosignkey.PasswordEnv+"="+cosignPassword)
	out, err := cmd.CombinedOutput()
	if strings.Contains(string(out), "TUF") {
		// Not offline: cosign tried to reach the public sigstore.
		return string(out), fmt.Errorf("cosign %s used TUF: %w", args[0], errOffline)
	}
	return string(out), err
}

// errOffline is returned by cosign.run when cosign tried to fetch sigstore's
// public trust root, which these tests must never need.
var errOffline = errors.New("cosign went online")

// verify runs cosign verify with public key pub on ref, offline: no Rekor,
// no Fulcio, no TUF, the registry over plain HTTP.
func (c *cosign) verify(pub, ref string) (string, error) {
	return c.run("verify", "--key", pub, "--insecure-ignore-tlog=true", "--offline=true",
		"--trusted-root", c.trustedRoot, "--allow-http-registry=true", "--output", "json", ref)
}

// sign runs cosign sign with private key priv on ref, without uploading
// to a transparency log, writing the classic signature manifest under the
// sha256-<hex>.sig tag.
func (c *cosign) sign(priv, ref string) (string, error) {
	return c.run("sign", "--key", priv, "--tlog-upload=false", "--allow-http-registry=true", "-y", ref)
}

// writeIngotKey writes an encrypted private key and its public key as
// `ingot key new -o PREFIX` does (cosignkey and release.MarshalPublicKey)
// and returns the key and the two paths.
func writeIngotKey(t *testing.T, prefix string) (*ecdsa.PrivateKey, string, string) {
	t.Helper()
	k := newKey(t)
	priv, err := cosignkey.EncryptPrivateKey(k, []byte(cosignPassword))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := release.MarshalPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(prefix+".key", priv, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(prefix+".pub", pub, 0o644); err != nil {
		t.Fatal(err)
	}
	return k, prefix + ".key", prefix + ".pub"
}

// pushRelease pushes an unsigned two-target release of appliance "app"
// under host/repo:stable and returns its tag and index digest.
func pushRelease(t *testing.T, host, repo string, rel uint64) (name.Tag, v1.Hash) {
	t.Helper()
	tag, err := name.NewTag(host + "/" + repo + ":stable")
	if err != nil {
		t.Fatal(err)
	}
	images := []publish.Image{writeImage(t, "vm-amd64", "amd64", repo+"-amd", rel), writeImage(t, "vm-arm64", "arm64", repo+"-arm", rel)}
	res, err := publish.Push(context.Background(), tag, images)
	if err != nil {
		t.Fatal(err)
	}
	return tag, res.Digest
}

func loadKey(t *testing.T, path string) *ecdsa.PublicKey {
	t.Helper()
	keys, err := release.LoadPublicKeys(path)
	if err != nil {
		t.Fatal(err)
	}
	return keys[0]
}

// TestCosignVerifiesIngotReleases publishes a release to a real registry
// (distribution 2.8 over plain HTTP), signs it as `ingot publish -key`
// does, and has cosign verify it with the public key `ingot key new`
// writes; cosign refuses it with another key. A release signed by ingot
// with a key from `cosign generate-key-pair` verifies as well, and so
// does one signed by ingot and co-signed by cosign, with either key.
func TestCosignVerifiesIngotReleases(t *testing.T) {
	ctx := context.Background()
	host := regtest.Start(t)
	c := newCosign(t)
	keyDir := t.TempDir()
	key, _, pub := writeIngotKey(t, filepath.Join(keyDir, "release"))
	_, _, otherPub := writeIngotKey(t, filepath.Join(keyDir, "other"))

	tag, digest := pushRelease(t, host, "fleet/app", 7)
	if _, err := publish.Sign(ctx, tag.Context(), digest, key); err != nil {
		t.Fatal(err)
	}
	ref := tag.Context().Digest(digest.String()).String()
	out, err := c.verify(pub, ref)
	if err != nil {
		t.Fatalf("cosign verify --key %s %s: %v\n%s", pub, ref, err, out)
	}
	t.Logf("cosign verify:\n%s", out)
	checkCosignVerified(t, out, digest)
	// By tag as well: cosign resolves it to the index's digest.
	if out, err := c.verify(pub, tag.String()); err != nil {
		t.Errorf("cosign verify by tag: %v\n%s", err, out)
	}
	if out, err := c.verify(otherPub, ref); err == nil {
		t.Errorf("cosign verify with another key accepted the release:\n%s", out)
	} else if t.Logf("cosign verify with another key: %v\n%s", err, out); !strings.Contains(out, "no matching signatures") {
		t.Errorf("cosign verify with another key failed for another reason: %v\n%s", err, out)
	}
	// A release of another digest carries no signature of this one.
	_, unsigned := pushRelease(t, host, "fleet/app", 8)
	if out, err := c.verify(pub, tag.Context().Digest(unsigned.String()).String()); err == nil {
		t.Errorf("cosign verify accepted an unsigned release:\n%s", out)
	}

	// A key from cosign generate-key-pair signs with ingot (publish -key
	// reads it through cosignkey) and cosign verifies that signature.
	if out, err := c.run("generate-key-pair"); err != nil {
		t.Fatalf("cosign generate-key-pair: %v\n%s", err, out)
	}
	data, err := os.ReadFile(filepath.Join(c.dir, "cosign.key"))
	if err != nil {
		t.Fatal(err)
	}
	cosignKey, err := cosignkey.DecryptPrivateKey(data, []byte(cosignPassword), "cosign.key")
	if err != nil {
		t.Fatalf("ingot reads cosign's private key: %v", err)
	}
	tag2, digest2 := pushRelease(t, host, "fleet/cosignkey", 3)
	if _, err := publish.Sign(ctx, tag2.Context(), digest2, cosignKey); err != nil {
		t.Fatal(err)
	}
	if out, err := c.verify(filepath.Join(c.dir, "cosign.pub"), tag2.Context().Digest(digest2.String()).String()); err != nil {
		t.Errorf("cosign verify of a release signed by ingot with cosign's key: %v\n%s", err, out)
	}

	// Co-signing (a key rotation): cosign sign adds its signature to the
	// one ingot pushed, as a second layer of the same manifest; both
	// cosign and release.Verify accept the release with either key. (The
	// tag has moved on to the unsigned release 8: by digest.)
	cosignPub := filepath.Join(c.dir, "cosign.pub")
	byDigest := tag.Context().Digest(digest.String())
	if out, err := c.sign(filepath.Join(c.dir, "cosign.key"), ref); err != nil {
		t.Fatalf("cosign sign of an ingot-signed release: %v\n%s", err, out)
	}
	desc, err := remote.Get(tag.Context().Tag(release.SignatureTag(digest)))
	if err != nil {
		t.Fatal(err)
	}
	if m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest)); err != nil || len(m.Layers) != 2 {
		t.Fatalf("signature manifest after cosign co-signed (%v):\n%s", err, desc.Manifest)
	}
	for _, p := range []string{pub, cosignPub} {
		if out, err := c.verify(p, ref); err != nil {
			t.Errorf("cosign verify --key %s of the co-signed release: %v\n%s", filepath.Base(p), err, out)
		}
		if _, err := release.Verify(ctx, byDigest, release.Policy{Keys: []*ecdsa.PublicKey{loadKey(t, p)}}); err != nil {
			t.Errorf("Verify with %s of the co-signed release: %v", filepath.Base(p), err)
		}
	}
	if _, err := release.Verify(ctx, byDigest, release.Policy{Keys: []*ecdsa.PublicKey{loadKey(t, otherPub)}}); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Errorf("Verify with a third key of the co-signed release = %v, want a refusal", err)
	}
}

// checkCosignVerified checks cosign verify's JSON output: one entry per
// verified signature, each a simple-signing payload naming digest.
func checkCosignVerified(t *testing.T, out string, digest v1.Hash) {
	t.Helper()
	// cosign prints its checks on stderr and the JSON array on stdout;
	// the array is the last line of the combined output.
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var verified []release.Payload
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &verified); err != nil {
		t.Fatalf("cosign verify output: %v\n%s", err, out)
	}
	if len(verified) != 1 || verified[0].Critical.Image.DockerManifestDigest != digest.String() || verified[0].Critical.Type != release.SignatureType {
		t.Errorf("cosign verified %+v, want one signature of %s\n%s", verified, digest, out)
	}
}

// TestIngotVerifiesCosignSignatures pushes unsigned releases to a real
// registry (distribution 2.8 over plain HTTP), which release.Verify
// refuses with ErrUnsigned, signs them with `cosign sign --key`, once
// with a key from `cosign generate-key-pair` and once with one written as
// `ingot key new` writes it, and checks that release.Verify (what the
// appliance runs before it installs) accepts each with its key and
// refuses it with the other.
func TestIngotVerifiesCosignSignatures(t *testing.T) {
	ctx := context.Background()
	host := regtest.Start(t)
	c := newCosign(t)
	if out, err := c.run("generate-key-pair"); err != nil {
		t.Fatalf("cosign generate-key-pair: %v\n%s", err, out)
	}
	cosignPriv, cosignPub := filepath.Join(c.dir, "cosign.key"), filepath.Join(c.dir, "cosign.pub")
	_, ingotPriv, ingotPub := writeIngotKey(t, filepath.Join(t.TempDir(), "release"))
	cosignKey, ingotKey := loadKey(t, cosignPub), loadKey(t, ingotPub)

	for _, tc := range []struct {
		name, repo string
		priv       string
		key, other *ecdsa.PublicKey
		number     uint64
	}{
		{"cosign generate-key-pair", "fleet/cosignkey", cosignPriv, cosignKey, ingotKey, 4},
		{"ingot key new", "fleet/ingotkey", ingotPriv, ingotKey, cosignKey, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tag, digest := pushRelease(t, host, tc.repo, tc.number)
			_, err := release.Verify(ctx, tag, release.Policy{Keys: []*ecdsa.PublicKey{tc.key}})
			if !errors.Is(err, release.ErrUnsigned) {
				t.Fatalf("Verify of the unsigned release = %v, want ErrUnsigned", err)
			}

			ref := tag.Context().Digest(digest.String()).String()
			if out, err := c.sign(tc.priv, ref); err != nil {
				t.Fatalf("cosign sign --key %s %s: %v\n%s", tc.priv, ref, err, out)
			}
			checkCosignSignatureManifest(t, tag.Context(), digest)

			rel, err := release.Verify(ctx, tag, release.Policy{Keys: []*ecdsa.PublicKey{tc.key}})
			if err != nil {
				t.Fatalf("Verify of the release cosign signed: %v", err)
			}
			if rel.Digest != digest || rel.Number != tc.number || len(rel.Targets) != 2 {
				t.Errorf("Verify: digest %s (pushed %s), release %d, %d targets", rel.Digest, digest, rel.Number, len(rel.Targets))
			}
			for i := range rel.Targets {
				if _, err := rel.VerifyBlobs(&rel.Targets[i]); err != nil {
					t.Error(err)
				}
			}
			// Either key of a rotation will do.
			if _, err := release.Verify(ctx, tag, release.Policy{Keys: []*ecdsa.PublicKey{tc.other, tc.key}}); err != nil {
				t.Errorf("Verify with the signing key second of two: %v", err)
			}
			_, err = release.Verify(ctx, tag, release.Policy{Keys: []*ecdsa.PublicKey{tc.other}})
			if err == nil || errors.Is(err, release.ErrUnsigned) || !strings.Contains(err.Error(), "does not verify") {
				t.Errorf("Verify with another key = %v, want a refusal because the signature does not verify", err)
			}
		})
	}
}

// checkCosignSignatureManifest reads what cosign sign pushed under the
// signature tag of digest and checks it has the shape release.Verify
// reads (so a change in cosign's output shows here first): a manifest
// with a simple-signing layer annotated with the signature.
func checkCosignSignatureManifest(t *testing.T, repo name.Repository, digest v1.Hash) {
	t.Helper()
	desc, err := remote.Get(repo.Tag(release.SignatureTag(digest)))
	if err != nil {
		t.Fatalf("cosign pushed no signature under %s: %v", release.SignatureTag(digest), err)
	}
	t.Logf("cosign's signature manifest (%s):\n%s", desc.MediaType, desc.Manifest)
	var m v1.Manifest
	if err := json.Unmarshal(desc.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Layers) != 1 || m.Layers[0].MediaType != types.MediaType(release.SimpleSigningMediaType) || m.Layers[0].Annotations[release.SignatureAnnotation] == "" {
		t.Errorf("cosign's signature manifest is not one annotated simple-signing layer:\n%s", desc.Manifest)
	}
}

// TestIngotVerifiesCosignBundles: `cosign sign --new-bundle-format`
// attaches a Sigstore bundle as an OCI referrer of
// the index instead of the .sig tag (distribution 2.8 has no referrers
// API: under the fallback tag sha256-<hex>). release.Verify accepts it
// with the signing key and refuses it with another; a bundle of one
// release attached as a referrer to another release (a replay) is
// refused, by cosign too.
func TestIngotVerifiesCosignBundles(t *testing.T) {
	ctx := context.Background()
	host := regtest.Start(t)
	c := newCosign(t)
	keyDir := t.TempDir()
	_, priv, pub := writeIngotKey(t, filepath.Join(keyDir, "release"))
	_, _, otherPub := writeIngotKey(t, filepath.Join(keyDir, "other"))
	key, otherKey := loadKey(t, pub), loadKey(t, otherPub)
	tag, digest := pushRelease(t, host, "fleet/bundle", 2)
	ref := tag.Context().Digest(digest.String())
	if out, err := c.run("sign", "--key", priv, "--tlog-upload=false", "--allow-http-registry=true", "-y", "--new-bundle-format", ref.String()); err != nil {
		t.Fatalf("cosign sign --new-bundle-format: %v\n%s", err, out)
	}
	if _, err := remote.Get(tag.Context().Tag(release.SignatureTag(digest))); err == nil {
		t.Fatal("cosign --new-bundle-format wrote a .sig tag too; this test would not test bundles")
	}
	referrers, err := remote.Referrers(ref)
	if err != nil {
		t.Fatal(err)
	}
	im, err := referrers.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].ArtifactType != release.BundleMediaType {
		t.Fatalf("cosign attached %+v, want one Sigstore bundle", im.Manifests)
	}
	if out, err := c.verify(pub, ref.String()); err != nil {
		t.Fatalf("cosign verify of its bundle: %v\n%s", err, out)
	}

	rel, err := release.Verify(ctx, ref, release.Policy{Keys: []*ecdsa.PublicKey{key}})
	if err != nil {
		t.Fatalf("Verify of a release cosign signed with a bundle: %v", err)
	}
	for i := range rel.Targets {
		if _, err := rel.VerifyBlobs(&rel.Targets[i]); err != nil {
			t.Error(err)
		}
	}
	_, err = release.Verify(ctx, ref, release.Policy{Keys: []*ecdsa.PublicKey{otherKey}})
	if err == nil || errors.Is(err, release.ErrUnsigned) || !strings.Contains(err.Error(), "verifies with any") {
		t.Errorf("Verify with another key = %v, want a refusal because the bundle does not verify", err)
	}

	// Replay: release 3 gets release 2's bundle as its referrer.
	_, digest3 := pushRelease(t, host, "fleet/bundle", 3)
	ref3 := tag.Context().Digest(digest3.String())
	bundleManifest, err := remote.Get(tag.Context().Digest(im.Manifests[0].Digest.String()))
	if err != nil {
		t.Fatal(err)
	}
	index3, err := remote.Get(ref3)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(bundleManifest.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	m["subject"] = map[string]any{"mediaType": string(types.OCIImageIndex), "digest": digest3.String(), "size": len(index3.Manifest)}
	replayed := putRaw(t, tag.Context(), m, types.OCIManifestSchema1, "")
	putRaw(t, tag.Context(), map[string]any{
		"schemaVersion": 2, "mediaType": string(types.OCIImageIndex),
		"manifests": []any{map[string]any{"mediaType": string(types.OCIManifestSchema1), "digest": replayed.Digest.String(),
			"size": replayed.Size, "artifactType": release.BundleMediaType}},
	}, types.OCIImageIndex, strings.Replace(digest3.String(), ":", "-", 1))
	_, err = release.Verify(ctx, ref3, release.Policy{Keys: []*ecdsa.PublicKey{key}})
	if err == nil || errors.Is(err, release.ErrUnsigned) || !strings.Contains(err.Error(), "no subject has digest "+digest3.String()) {
		t.Errorf("Verify of a release with another release's bundle = %v, want a refusal naming the digest", err)
	}
	if out, err := c.verify(pub, ref3.String()); err == nil {
		t.Errorf("cosign verify accepted another release's bundle:\n%s", out)
	}
}

// rawManifest is a manifest pushed as given.
type rawManifest struct {
	data []byte
	mt   types.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.data, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mt, nil }

// putRaw pushes v as a manifest of media type mt into repo, under tag or
// (tag "") by digest, and returns its descriptor.
func putRaw(t *testing.T, repo name.Repository, v any, mt types.MediaType, tag string) v1.Descriptor {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	d := v1.Descriptor{MediaType: mt, Size: int64(len(data)), Digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}}
	var ref name.Reference = repo.Digest(d.Digest.String())
	if tag != "" {
		ref = repo.Tag(tag)
	}
	if err := remote.Put(ref, rawManifest{data, mt}); err != nil {
		t.Fatal(err)
	}
	return d
}
