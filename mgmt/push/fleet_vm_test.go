package push

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ingotdev/ingot/builder/assemble"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/internal/regtest"
	"github.com/ingotdev/ingot/internal/vmtest"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/mgmt/publish"
	"github.com/ingotdev/ingot/mgmt/release"
)

// fleetCheck is how often the appliance of TestVMFleetPull checks its tag
// (spec.MinUpdateCheckSeconds).
const fleetCheck = 10 * time.Second

// writeFleetHello writes hello as writeHello does, at release rel, pulling
// from tag from (over plain HTTP) and verifying with the public key in
// release.pub.
func writeFleetHello(t *testing.T, dir, greeting string, rel int, from string, pub []byte, extraArgs ...string) *config.Config {
	t.Helper()
	writeHello(t, dir, greeting, extraArgs...)
	if err := os.WriteFile(filepath.Join(dir, "release.pub"), pub, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, config.FileName), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// writeHello's ingot.yaml ends inside update:.
	fmt.Fprintf(f, "  from: %s\n  keys: [release.pub]\n  check: %s\n  insecure: true\nrelease: %d\n", from, fleetCheck, rel)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(filepath.Join(dir, config.FileName))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestVMFleetPull: an appliance built with update.from pulls a signed
// release published after it booted and confirms its trial; refuses a
// release signed by another key, an unsigned one and an older one, with
// the reason in its status and nothing installed; and a release whose
// service crashes falls back by itself and is not installed again.
func TestVMFleetPull(t *testing.T) {
	vmtest.Kernel(t, "amd64")
	ctx := t.Context()
	tmp := t.TempDir()
	cache := assemble.WithCacheDir(filepath.Join(tmp, "cache"))
	reg := regtest.Start(t)
	_, port, _ := strings.Cut(reg, ":")
	// The guest reaches the host's loopback registry through QEMU's user
	// network at 10.0.2.2.
	from := "10.0.2.2:" + port + "/fleet/hello:stable"
	tag, err := name.NewTag(reg+"/fleet/hello:stable", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	key, other := fleetKey(t), fleetKey(t)
	pub, err := release.MarshalPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}

	appDir := filepath.Join(tmp, "hello")
	build := func(greeting string, rel int, args ...string) (string, *assemble.Report) {
		t.Helper()
		cfg := writeFleetHello(t, appDir, greeting, rel, from, pub, args...)
		img := filepath.Join(tmp, fmt.Sprintf("hello-%d.img", rel))
		start := time.Now()
		rep, err := assemble.Image(ctx, cfg, config.TargetVMAmd64, img, cache)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("release %d: build %s in %s", rel, rep.BuildID, time.Since(start).Round(time.Millisecond))
		return img, rep
	}
	publishImage := func(img string, rep *assemble.Report, signer *ecdsa.PrivateKey) name.Digest {
		t.Helper()
		res, err := publish.Push(ctx, tag, []publish.Image{{Path: img, Created: rep.Created, SBOM: rep.SBOM}})
		if err != nil {
			t.Fatal(err)
		}
		if signer != nil {
			if _, err := publish.Sign(ctx, tag.Context(), res.Digest, signer); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("published %s (%d bytes, %d uploaded)", res.Ref, res.Bytes, res.BytesUploaded)
		return res.Ref
	}

	img1, rep1 := build("greeting v1", 1)
	httpPort := vmtest.FreePort(t)
	runDir := filepath.Join(tmp, "run")
	console := runVM(t, img1, runDir, qemu.Forward{Proto: "tcp", HostPort: httpPort, GuestPort: 8080})
	url := fmt.Sprintf("http://127.0.0.1:%d/", httpPort)
	c, _, _ := agentClient(t, appDir, runDir)
	waitGreeting(t, url, "greeting v1", 3*time.Minute)
	st, err := callStatus(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pull == nil || st.Pull.From != from || !st.HasFeature(mgmt.FeatureSignedOnly) || !st.HasFeature(mgmt.FeatureUpdatePull) {
		t.Fatalf("status of an appliance built with update.from: pull %+v, features %v", st.Pull, st.Features)
	}

	// A token alone no longer installs a root.
	if _, err := New(c, WithLog(testLog{t})).Update(ctx, writeFleetHello(t, appDir, "greeting pushed", 9, from, pub)); !errors.Is(err, mgmt.ErrSignedOnly) {
		t.Errorf("push to a signed-only appliance: %v, want %v", err, mgmt.ErrSignedOnly)
	}

	t.Run("signed release installs", func(t *testing.T) {
		phase := time.Now()
		img2, rep2 := build("greeting v2", 2)
		ref2 := publishImage(img2, rep2, key)
		st := waitPull(t, c, "release 2 confirmed", 5*time.Minute, func(st mgmt.Status) bool {
			return st.BuildID == rep2.BuildID && st.SlotState != nil && st.SlotState.Active == st.Slot && st.SlotState.Trial == "" &&
				st.Pull.Running != nil && st.Pull.Running.Digest == ref2.DigestStr()
		})
		waitGreeting(t, url, "greeting v2", time.Minute)
		if st.LastUpdate == nil || st.LastUpdate.Outcome != mgmt.OutcomeConfirmed || st.LastUpdate.FromBuildID != rep1.BuildID {
			t.Errorf("last update %+v", st.LastUpdate)
		}
		t.Logf("release 2 pulled and confirmed %s after it was published", time.Since(phase).Round(time.Millisecond))
	})
	if t.Failed() {
		return
	}

	base, err := callStatus(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	// refused waits for a check that refuses the release at the tag now
	// and checks that nothing was installed.
	refused := func(t *testing.T, ref name.Digest, want string) {
		t.Helper()
		st := waitPull(t, c, "a refusal of "+ref.DigestStr(), 2*time.Minute, func(st mgmt.Status) bool {
			f := st.Pull.LastFailure
			return f != nil && strings.Contains(f.Reason, ref.DigestStr()) && strings.Contains(f.Reason, want)
		})
		if f := st.Pull.LastFailure; !strings.Contains(f.Reason, want) {
			t.Errorf("refusal reason %q, want it to say %q", f.Reason, want)
		}
		if st.BuildID != base.BuildID || st.Slot != base.Slot || st.SlotState.Trial != "" || st.LastUpdate == nil ||
			!st.LastUpdate.Started.Equal(base.LastUpdate.Started) {
			t.Errorf("after the refusal: build %s on %s, slot.json %+v, last update %+v; want %s on %s as before",
				st.BuildID, st.Slot, st.SlotState, st.LastUpdate, base.BuildID, base.Slot)
		}
		t.Logf("refused: %s", st.Pull.LastFailure.Reason)
	}
	img3, rep3 := build("greeting v3", 3)
	t.Run("another key", func(t *testing.T) {
		refused(t, publishImage(img3, rep3, other), "signature")
	})
	t.Run("unsigned", func(t *testing.T) {
		ref3 := publishImage(img3, rep3, nil)
		// The same image publishes to the same digest: take the other
		// key's signature away.
		if err := deleteTag(ctx, tag.Context().Tag(release.SignatureTag(mustHash(t, ref3.DigestStr())))); err != nil {
			t.Fatal(err)
		}
		refused(t, ref3, "not signed")
	})
	t.Run("older release", func(t *testing.T) {
		refused(t, publishImage(img1, rep1, key), "older than")
	})

	t.Run("crashing release", func(t *testing.T) {
		img4, rep4 := build("greeting v4", 4, "-no-such-flag")
		ref4 := publishImage(img4, rep4, key)
		st := waitPull(t, c, "release 4's failed trial", 5*time.Minute, func(st mgmt.Status) bool {
			return slices.Contains(st.Pull.FailedDigests, ref4.DigestStr()) && st.BuildID == base.BuildID
		})
		if st.LastUpdate == nil || st.LastUpdate.Outcome != mgmt.OutcomeFailed || st.LastUpdate.BuildID != rep4.BuildID {
			t.Errorf("last update after the crashing release %+v", st.LastUpdate)
		}
		failedAt := st.LastUpdate.Started
		// Three more checks: release 4 is still at the tag, and never
		// installed again.
		time.Sleep(3*fleetCheck + 5*time.Second)
		st, err := callStatus(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if st.LastUpdate == nil || !st.LastUpdate.Started.Equal(failedAt) || st.BuildID != base.BuildID || st.SlotState.Trial != "" {
			t.Errorf("after three more checks: build %s, last update %+v; want %s still running and no new update", st.BuildID, st.LastUpdate, base.BuildID)
		}
		if !strings.Contains(st.Pull.LastCheckError, "not retried") {
			t.Errorf("last check error %q, want it to say the failed release is not retried", st.Pull.LastCheckError)
		}
		waitGreeting(t, url, "greeting v2", time.Minute)
	})
	if strings.Count(console.String(), "pull: installed release") < 2 {
		t.Errorf("console shows %d installs, want 2 (releases 2 and 4)", strings.Count(console.String(), "pull: installed release"))
	}
}

func fleetKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// waitPull polls the agent's status until cond holds (the appliance may
// be rebooting in between), failing after limit.
func waitPull(t *testing.T, c *mgmt.Client, what string, limit time.Duration, cond func(mgmt.Status) bool) mgmt.Status {
	t.Helper()
	deadline := time.Now().Add(limit)
	var last mgmt.Status
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		st, err := c.Status(ctx)
		cancel()
		if err == nil && st.Pull != nil {
			last = st
			if cond(st) {
				return st
			}
		}
		lastErr = err
		time.Sleep(time.Second)
	}
	t.Fatalf("no %s within %s; last status: build %s on %s, slot.json %+v, pull %+v (error %v)", what, limit, last.BuildID, last.Slot, last.SlotState, last.Pull, lastErr)
	return last
}

// deleteTag deletes the manifest tag points to (distribution deletes
// manifests by digest only).
func deleteTag(ctx context.Context, tag name.Tag) error {
	desc, err := remote.Head(tag, remote.WithContext(ctx))
	if err != nil {
		return err
	}
	return remote.Delete(tag.Context().Digest(desc.Digest.String()), remote.WithContext(ctx))
}

func mustHash(t *testing.T, s string) v1.Hash {
	t.Helper()
	h, err := v1.NewHash(s)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
