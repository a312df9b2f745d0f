package pull

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/internal/regtest"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/mgmt/release"
	"github.com/ingotdev/ingot/mgmt/release/cosignkey"
	"github.com/ingotdev/ingot/packer/format/slot"
)

// TestPullCosignSignedRelease: a release signed by cosign itself (`cosign
// sign --key`, no transparency log), not by ingot, is what an appliance
// with the matching public key installs; with another key it is refused
// and nothing is written.
func TestPullCosignSignedRelease(t *testing.T) {
	out, err := exec.Command("go", "tool", "-n", "cosign").Output()
	if err != nil {
		t.Fatalf("go tool -n cosign (scripts/setup.sh builds it): %v", err)
	}
	bin := strings.TrimSpace(string(out))
	home := t.TempDir()
	const password = "cosign password"
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Dir = home
		cmd.Env = append(os.Environ(), "HOME="+home, "TUF_ROOT="+filepath.Join(home, "tuf"),
			"DOCKER_CONFIG="+filepath.Join(home, "docker"), cosignkey.PasswordEnv+"="+password)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("cosign %s: %v\n%s", args[0], err, out)
		}
	}
	// cosign's own key pair: cosign.key (encrypted) and cosign.pub.
	run("generate-key-pair")
	pubPEM, err := os.ReadFile(filepath.Join(home, "cosign.pub"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := release.ParsePublicKey(pubPEM, "cosign.pub")
	if err != nil {
		t.Fatal(err)
	}

	reg := regtest.StartHTTP(t)
	v1 := fakeRoot(rootBytes, 1)
	v2 := edited(v1)
	pubr := registryPublisher(t, reg.Host)
	ref := pubr.publish(t, "stable", 2, v2, testBootFiles, nil) // unsigned
	run("sign", "--key", filepath.Join(home, "cosign.key"), "--tlog-upload=false", "--allow-http-registry=true", "-y", ref.String())

	other := newRig(t, v1)
	before := other.slot(t, slot.B)
	p := other.puller(t, Config{Keys: []*ecdsa.PublicKey{&newKey(t).PublicKey}, Insecure: true})
	if _, err := p.PullNow(context.Background(), mgmt.PullRequest{Ref: ref.String()}); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("a cosign signature with another key configured: %v, want a refusal", err)
	}
	if !bytes.Equal(other.slot(t, slot.B), before) {
		t.Error("slot b changed on a refused release")
	}

	r := newRig(t, v1)
	p = r.puller(t, Config{Keys: []*ecdsa.PublicKey{pub}, Insecure: true})
	res, err := p.PullNow(context.Background(), mgmt.PullRequest{Ref: ref.String()})
	if err != nil {
		t.Fatal(err)
	}
	if res.Release.Digest != ref.DigestStr() || !bytes.Equal(r.slot(t, slot.B)[:len(v2)], v2) {
		t.Errorf("result %+v: want release %s in slot b", res, ref.DigestStr())
	}
	if s := r.state(t); s.Trial != slot.B {
		t.Errorf("slot.json %+v: want slot b on trial", s)
	}
}
