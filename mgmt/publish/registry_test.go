package publish_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ingotdev/ingot/internal/regtest"
	"github.com/ingotdev/ingot/mgmt/publish"
	"github.com/ingotdev/ingot/mgmt/release"
)

// TestPublishToDistributionTLS publishes to a real registry (distribution
// 2.8) over TLS with htpasswd basic authentication, verifies the release
// through it, and reads the index with crane (credentials from a docker
// config.json, the CA from SSL_CERT_FILE) and skopeo (--creds,
// --cert-dir). Without credentials, or without trusting the registry's
// CA, nothing is published or read.
func TestPublishToDistributionTLS(t *testing.T) {
	ctx := context.Background()
	reg := regtest.StartTLS(t)
	transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: reg.CAPool}}
	ropts := []remote.Option{remote.WithTransport(transport), remote.WithAuth(&authn.Basic{Username: reg.User, Password: reg.Password})}
	key := newKey(t)
	keys := []*ecdsa.PublicKey{&key.PublicKey}
	ref := reg.Host + "/fleet/app:stable"
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	images := []publish.Image{writeImage(t, "vm-amd64", "amd64", "t-amd", 9), writeImage(t, "vm-arm64", "arm64", "t-arm", 9)}

	if _, err := publish.Push(ctx, tag, images, publish.WithRemoteOptions(remote.WithTransport(transport))); err == nil || !strings.Contains(err.Error(), "401 Unauthorized") {
		t.Errorf("push without credentials = %v, want 401 Unauthorized", err)
	}
	if _, err := publish.Push(ctx, tag, images, publish.WithRemoteOptions(remote.WithAuth(&authn.Basic{Username: reg.User, Password: reg.Password}))); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("push to a registry whose CA is not trusted = %v, want a certificate error", err)
	}

	var log bytes.Buffer
	res, err := publish.Push(ctx, tag, images, publish.WithRemoteOptions(ropts...), publish.WithLog(&log))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := publish.Sign(ctx, tag.Context(), res.Digest, key, publish.WithRemoteOptions(ropts...)); err != nil {
		t.Fatal(err)
	}
	t.Logf("push:\n%s", log.String())

	rel, err := release.Verify(ctx, tag, release.Policy{Keys: keys}, ropts...)
	if err != nil {
		t.Fatal(err)
	}
	if rel.Digest != res.Digest || len(rel.Targets) != 2 || rel.Number != 9 {
		t.Fatalf("Verify: digest %s (pushed %s), %d targets, release %d", rel.Digest, res.Digest, len(rel.Targets), rel.Number)
	}
	for i := range rel.Targets {
		if _, err := rel.VerifyBlobs(&rel.Targets[i]); err != nil {
			t.Error(err)
		}
	}
	if _, err := release.Verify(ctx, tag, release.Policy{Keys: keys}, remote.WithTransport(transport)); err == nil || !strings.Contains(err.Error(), "UNAUTHORIZED") {
		t.Errorf("verify without credentials = %v, want UNAUTHORIZED", err)
	}

	// skopeo, with the CA directory and the credentials.
	skopeo := func(args ...string) ([]byte, error) {
		return exec.Command("skopeo", append([]string{"inspect", "--raw", "--cert-dir", reg.CertDir}, args...)...).Output()
	}
	index, err := skopeo("--creds", reg.User+":"+reg.Password, "docker://"+ref)
	if err != nil {
		t.Fatalf("skopeo inspect: %v", err)
	}
	if sum := sha256.Sum256(index); hex.EncodeToString(sum[:]) != res.Digest.Hex {
		t.Errorf("skopeo read an index with digest %x, published %s:\n%s", sum, res.Digest, index)
	}
	if !bytes.Contains(index, []byte(release.ArtifactType)) {
		t.Errorf("skopeo's index lacks the artifactType:\n%s", index)
	}
	if _, err := skopeo("docker://" + ref); err == nil {
		t.Error("skopeo read the index without credentials")
	}

	// crane, with a docker config.json and the CA through SSL_CERT_FILE.
	crane := filepath.Join(t.TempDir(), "crane")
	if b, err := exec.Command("go", "build", "-o", crane, "github.com/google/go-containerregistry/cmd/crane").CombinedOutput(); err != nil {
		t.Fatalf("build crane: %v\n%s", err, b)
	}
	dockerConfig := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte(reg.User + ":" + reg.Password))
	if err := os.WriteFile(filepath.Join(dockerConfig, "config.json"), []byte(`{"auths":{"`+reg.Host+`":{"auth":"`+auth+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(crane, "manifest", ref)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+dockerConfig, "SSL_CERT_FILE="+reg.CAFile)
	craneIndex, err := cmd.Output()
	if err != nil {
		t.Fatalf("crane manifest: %v", err)
	}
	if !bytes.Equal(craneIndex, index) {
		t.Errorf("crane and skopeo read different indexes:\n%s\n%s", craneIndex, index)
	}
}
