package builder

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/packer/format/releasekey"
	"github.com/ingotdev/ingot/packer/format/spec"
	"github.com/ingotdev/ingot/packer/rootfs"
)

// TestBuildReleaseKeys: update.keys end up in the image under
// spec.ReleaseKeysDir, one file per key named by its fingerprint, listed
// in appliance.json with update.from, check and insecure; a broken key
// file fails the build.
func TestBuildReleaseKeys(t *testing.T) {
	dir := t.TempDir()
	var keys []*ecdsa.PublicKey
	for _, name := range []string{"release.pub", "next.pub"} {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := releasekey.Marshal(&k.PublicKey)
		// A comment line before the block: the image gets the key's
		// canonical file, not the source's bytes.
		if err := os.WriteFile(filepath.Join(dir, name), append([]byte("my release key\n"), data...), 0o644); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, &k.PublicKey)
	}
	cfg := testConfig(t, "  - name: hello\n    go: ./cmd/hello",
		"update: {keys: ["+filepath.Join(dir, "release.pub")+", "+filepath.Join(dir, "next.pub")+"], from: localhost:5000/fleet/hello:stable, check: 2m, insecure: true}")
	r, err := Build(context.Background(), cfg, config.TargetVMAmd64, testOptions(t, t.TempDir())...)
	if err != nil {
		t.Fatal(err)
	}
	app, err := spec.Parse(readEntry(t, r.Root, spec.AppliancePath))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, k := range keys {
		fp, _ := releasekey.Fingerprint(k)
		p := spec.ReleaseKeyPath(fp)
		want = append(want, p)
		e, ok := r.Root.Get(p)
		if !ok || e.Kind != rootfs.KindFile || e.Mode != 0o644 || e.UID != 0 {
			t.Errorf("%s: %+v, %v; want a root-owned 0644 file", p, e, ok)
			continue
		}
		got, err := releasekey.Parse(readEntry(t, r.Root, p), p)
		if err != nil || !got.Equal(k) {
			t.Errorf("%s: %v", p, err)
		}
		canon, _ := releasekey.Marshal(k)
		if string(readEntry(t, r.Root, p)) != string(canon) {
			t.Errorf("%s is not the canonical key file", p)
		}
	}
	if !slices.Equal(app.ReleaseKeys, want) {
		t.Errorf("appliance.json release_keys = %q, want %q", app.ReleaseKeys, want)
	}
	if app.UpdateFrom != "localhost:5000/fleet/hello:stable" || app.UpdateCheckSeconds != 120 || !app.UpdateInsecure {
		t.Errorf("appliance.json update_from %q, update_check_seconds %d, update_insecure %v; want update.from, 120, true",
			app.UpdateFrom, app.UpdateCheckSeconds, app.UpdateInsecure)
	}

	// Without keys, the directory is not there and the build id differs.
	plain, err := Build(context.Background(), testConfig(t, "  - name: hello\n    go: ./cmd/hello"), config.TargetVMAmd64, testOptions(t, t.TempDir())...)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := plain.Root.Get(spec.ReleaseKeysDir); ok {
		t.Errorf("%s exists in an image without keys", spec.ReleaseKeysDir)
	}
	if plain.BuildID == r.BuildID {
		t.Error("the keys do not change the build id")
	}

	if err := os.WriteFile(filepath.Join(dir, "next.pub"), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Build(context.Background(), cfg, config.TargetVMAmd64, testOptions(t, t.TempDir())...); err == nil ||
		!strings.Contains(err.Error(), "update.keys[1]: public key "+filepath.Join(dir, "next.pub")+": no PEM block") {
		t.Errorf("Build with a broken key file: %v", err)
	}
}
