package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/internal/regtest"
	"github.com/ingotdev/ingot/internal/vmtest"
	"github.com/ingotdev/ingot/mgmt/release"
	"github.com/ingotdev/ingot/mgmt/release/cosignkey"
)

// helloCopy copies examples/hello into a new directory with the kernels
// of its VM targets set, and returns it.
func helloCopy(t *testing.T) string {
	t.Helper()
	amd64, arm64 := vmtest.Kernel(t, "amd64"), vmtest.Kernel(t, "arm64")
	repo, _ := filepath.Abs("../..")
	dir := t.TempDir()
	cfg, err := os.ReadFile(filepath.Join(repo, "examples/hello", config.FileName))
	if err != nil {
		t.Fatal(err)
	}
	y := string(cfg) + "kernel: {vm-amd64: \"debian:" + amd64 + "\", vm-arm64: \"debian:" + arm64 + "\"}\n"
	if err := os.WriteFile(filepath.Join(dir, config.FileName), []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{".ingot", "cmd"} {
		if err := os.CopyFS(filepath.Join(dir, sub), os.DirFS(filepath.Join(repo, "examples/hello", sub))); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module hellocopy\n\ngo 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestPublishToDistribution runs the CLI against a real registry
// (docker-registry, distribution 2.8, plain HTTP): ingot key new, ingot
// publish -key, ingot verify; then crane and skopeo, two independent
// clients, read the release's index and its signature.
func TestPublishToDistribution(t *testing.T) {
	host := regtest.Start(t)
	dir := helloCopy(t)
	ctx := context.Background()
	t.Setenv(cosignkey.PasswordEnv, "test password")
	var out, errs bytes.Buffer

	keyPrefix := filepath.Join(dir, "release")
	if err := runKey(ctx, &out, &errs, []string{"new", "-o", keyPrefix}); err != nil {
		t.Fatalf("key new: %v", err)
	}
	if st, err := os.Stat(keyPrefix + ".key"); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private key: %v, mode %v; want 0600", err, st.Mode().Perm())
	}
	if err := runKey(ctx, &out, &errs, []string{"new", "-o", keyPrefix}); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("key new over an existing key = %v, want a refusal", err)
	}
	otherPrefix := filepath.Join(dir, "other")
	if err := runKey(ctx, &out, &errs, []string{"new", "-o", otherPrefix}); err != nil {
		t.Fatal(err)
	}

	ref := host + "/fleet/hello:stable"
	args := []string{"-C", dir, "-target", "vm-amd64", "-release", "12", "-key", keyPrefix + ".key",
		"-cache", filepath.Join(t.TempDir(), "cache"), ref}
	out.Reset()
	errs.Reset()
	if err := runPublish(ctx, &out, &errs, args); err != nil {
		t.Fatalf("publish %q: %v\n%s", args, err, errs.String())
	}
	t.Logf("publish: %s", out.String())
	for _, line := range strings.Split(errs.String(), "\n") {
		if strings.HasPrefix(line, "publish:") {
			t.Log(line)
		}
	}
	if !strings.Contains(out.String(), "release 12") || !strings.Contains(out.String(), "signature "+host+"/fleet/hello:sha256-") {
		t.Errorf("publish printed %q", out.String())
	}
	if !strings.Contains(errs.String(), "publish: vm-amd64 root:") {
		t.Errorf("publish printed no upload progress:\n%s", errs.String())
	}
	// Publishing the same build again (the build is reproducible) gives
	// the same release and uploads no blob: the registry has every chunk.
	first := out.String()
	out.Reset()
	errs.Reset()
	if err := runPublish(ctx, &out, &errs, args); err != nil {
		t.Fatalf("publish again: %v\n%s", err, errs.String())
	}
	t.Logf("publish again: %s", out.String())
	if ref1, ref2 := strings.Fields(first)[1], strings.Fields(out.String())[1]; ref1 != ref2 || !strings.Contains(out.String(), "(0.0 MB uploaded, the rest already in the registry)") {
		t.Errorf("publish again printed %q; the first %q", out.String(), first)
	}
	// -delta-from auto took the tag's release as the base, and found it
	// is this very build: no patches.
	if !strings.Contains(errs.String(), "no patches against "+ref) {
		t.Errorf("publish again did not say why it made no patches:\n%s", errs.String())
	}

	out.Reset()
	if err := runVerify(ctx, &out, &errs, []string{"-key", keyPrefix + ".pub", ref}); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if s := out.String(); !strings.Contains(s, "hello release 12, signature verified") || !strings.Contains(s, "vm-amd64") || !strings.Contains(s, "blobs verified") {
		t.Errorf("verify printed %q", s)
	}
	t.Logf("verify: %s", out.String())
	if err := runVerify(ctx, &out, &errs, []string{"-key", otherPrefix + ".pub", ref}); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Errorf("verify with another key = %v, want a refusal", err)
	}
	// Either of two keys will do (key rotation).
	if err := runVerify(ctx, &out, &errs, []string{"-key", otherPrefix + ".pub", "-key", keyPrefix + ".pub", "-blobs=false", ref}); err != nil {
		t.Errorf("verify with two keys: %v", err)
	}

	// crane (go.mod's tool) and skopeo read the same index.
	crane := filepath.Join(t.TempDir(), "crane")
	if b, err := exec.Command("go", "build", "-o", crane, "github.com/google/go-containerregistry/cmd/crane").CombinedOutput(); err != nil {
		t.Fatalf("build crane: %v\n%s", err, b)
	}
	craneIndex, err := exec.Command(crane, "manifest", "--insecure", ref).Output()
	if err != nil {
		t.Fatalf("crane manifest: %v", err)
	}
	skopeoIndex, err := exec.Command("skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+ref).Output()
	if err != nil {
		t.Fatalf("skopeo inspect --raw: %v", err)
	}
	if !bytes.Equal(craneIndex, skopeoIndex) {
		t.Errorf("crane and skopeo read different indexes:\n%s\n%s", craneIndex, skopeoIndex)
	}
	var index struct {
		MediaType    string `json:"mediaType"`
		ArtifactType string `json:"artifactType"`
		Manifests    []struct {
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
			Platform    struct {
				Architecture string `json:"architecture"`
			} `json:"platform"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(craneIndex, &index); err != nil {
		t.Fatalf("index: %v\n%s", err, craneIndex)
	}
	if index.ArtifactType != release.ArtifactType || len(index.Manifests) != 1 ||
		index.Manifests[0].Annotations[release.TargetAnnotation] != "vm-amd64" || index.Manifests[0].Platform.Architecture != "amd64" {
		t.Errorf("index as crane reads it:\n%s", craneIndex)
	}
	manifest, err := exec.Command("skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+host+"/fleet/hello@"+index.Manifests[0].Digest).Output()
	if err != nil {
		t.Fatalf("skopeo inspect the manifest: %v", err)
	}
	for _, want := range []string{release.ConfigMediaType, release.ChunkIndexMediaType, release.ChunkMediaType, release.BootFileMediaType, `"vmlinuz"`} {
		if !bytes.Contains(manifest, []byte(want)) {
			t.Errorf("manifest lacks %s:\n%s", want, manifest)
		}
	}
	// The signature sits where cosign looks: the tag named after the
	// index's digest.
	sum := sha256.Sum256(craneIndex)
	sigTag := release.SignatureTag(v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])})
	tags, err := exec.Command(crane, "ls", "--insecure", host+"/fleet/hello").Output()
	if err != nil {
		t.Fatalf("crane ls: %v", err)
	}
	if !slices.Contains(strings.Fields(string(tags)), sigTag) {
		t.Fatalf("no tag %s among %q", sigTag, tags)
	}
	sig, err := exec.Command("skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+host+"/fleet/hello:"+sigTag).Output()
	if err != nil {
		t.Fatalf("skopeo inspect the signature: %v", err)
	}
	if !bytes.Contains(sig, []byte(release.SimpleSigningMediaType)) || !bytes.Contains(sig, []byte(release.SignatureAnnotation)) {
		t.Errorf("signature manifest:\n%s", sig)
	}
}

// TestPublishAllTargets publishes every target of examples/hello (both
// VMs and the Raspberry Pi) as one unsigned release to the in-process
// registry, and reads it back: three manifests, each with its platform,
// the Pi's with its device trees among the boot files.
func TestPublishAllTargets(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	dir := helloCopy(t)
	ctx := context.Background()
	var out, errs bytes.Buffer
	ref := host + "/fleet/hello:all"
	if err := runPublish(ctx, &out, &errs, []string{"-C", dir, "-cache", filepath.Join(t.TempDir(), "cache"), ref}); err != nil {
		t.Fatalf("publish: %v\n%s", err, errs.String())
	}
	if !strings.Contains(out.String(), "(vm-amd64, vm-arm64, rpi)") || !strings.Contains(out.String(), "unsigned") {
		t.Errorf("publish printed %q", out.String())
	}
	// Verify needs a signature; this one is unsigned, so it says so.
	t.Setenv(cosignkey.PasswordEnv, "")
	if err := runKey(ctx, &out, &errs, []string{"new", "-o", filepath.Join(dir, "k")}); err != nil {
		t.Fatal(err)
	}
	if err := runVerify(ctx, &out, &errs, []string{"-key", filepath.Join(dir, "k.pub"), ref}); !errors.Is(err, release.ErrUnsigned) {
		t.Errorf("verify of an unsigned release = %v, want ErrUnsigned", err)
	}
	idx, err := remote.Index(mustParse(t, ref))
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"vm-amd64": "amd64", "vm-arm64": "arm64", "rpi": "arm64"}
	if len(im.Manifests) != len(want) {
		t.Fatalf("%d manifests, want %d", len(im.Manifests), len(want))
	}
	for _, d := range im.Manifests {
		target := d.Annotations[release.TargetAnnotation]
		if d.Platform == nil || d.Platform.Architecture != want[target] {
			t.Errorf("%s: platform %+v, want %s", target, d.Platform, want[target])
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		m, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, l := range m.Layers {
			if l.MediaType == release.BootFileMediaType {
				names = append(names, l.Annotations[release.TitleAnnotation])
			}
		}
		hasDTB := slices.ContainsFunc(names, func(n string) bool { return strings.HasSuffix(n, ".dtb") })
		if (target == "rpi") != hasDTB {
			t.Errorf("%s: boot files %q", target, names)
		}
	}
}

func mustParse(t *testing.T, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// TestPublishDeltaFromFlag: a -delta-from that is not a reference is a
// usage error before anything is built.
func TestPublishDeltaFromFlag(t *testing.T) {
	var out, errs bytes.Buffer
	err := runPublish(t.Context(), &out, &errs, []string{"-C", t.TempDir(), "-delta-from", "Not A Reference", "localhost:5000/fleet/hello:stable"})
	var u usageError
	if !errors.As(err, &u) || !strings.Contains(err.Error(), "-delta-from") {
		t.Fatalf("runPublish with a bad -delta-from = %v, want a usage error naming the flag", err)
	}
}
