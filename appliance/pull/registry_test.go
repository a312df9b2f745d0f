package pull

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ingotdev/ingot/appliance/update"
	"github.com/ingotdev/ingot/internal/regtest"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/mgmt/release"
	"github.com/ingotdev/ingot/packer/format/cdc"
	"github.com/ingotdev/ingot/packer/format/slot"
)

// The tests in this file pull from a real registry, Debian's
// docker-registry (distribution 2.8), started by internal/regtest.

// registryPublisher publishes to repository fleet/hello of the registry
// at host over plain HTTP.
func registryPublisher(t *testing.T, host string) publisher {
	t.Helper()
	repo, err := name.NewRepository(host+"/fleet/hello", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return publisher{repo: repo}
}

// chunkDigests are the digests ("sha256:<hex>") of the blobs of root's
// chunks, as the publisher cuts and compresses them, in order.
func chunkDigests(t *testing.T, root []byte) []string {
	t.Helper()
	var ds []string
	err := cdc.Split(context.Background(), bytes.NewReader(root), func(_ int64, data []byte) error {
		blob, err := release.EncodeChunk(data, nil)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(blob)
		ds = append(ds, "sha256:"+hex.EncodeToString(sum[:]))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

// assertNothingBootable checks that slot b holds no valid root and that
// slot.json names no trial.
func (r *rig) assertNothingBootable(t *testing.T) {
	t.Helper()
	if err := update.ValidRoot(bytes.NewReader(r.slot(t, slot.B)), partBytes); err == nil {
		t.Error("slot b has a valid superblock after a failed install")
	}
	if s := r.state(t); s.Active != slot.A || s.Trial != "" {
		t.Errorf("slot.json %+v after a failed install, want active a and no trial", s)
	}
}

// assertInstalled checks that slot b holds root and is the trial.
func (r *rig) assertInstalled(t *testing.T, root []byte) {
	t.Helper()
	if !bytes.Equal(r.slot(t, slot.B)[:len(root)], root) {
		t.Error("slot b does not hold the release's root")
	}
	if s := r.state(t); s.Active != slot.A || s.Trial != slot.B || s.TriesLeft != 1 {
		t.Errorf("slot.json %+v, want active a, trial b with one try", s)
	}
}

// TestPullThroughFaultyProxy: the registry sits behind a proxy that
// answers 503, resets the connection, cuts a body short or flips a byte
// in it on a share of the blob requests; the install still completes
// (each download is retried and each chunk verified), and slot b holds
// exactly the release's root.
func TestPullThroughFaultyProxy(t *testing.T) {
	reg := regtest.StartHTTP(t)
	proxy := regtest.StartFaultProxy(t, reg.Host)
	v1, v2 := fakeRoot(rootBytes, 1), fakeRoot(rootBytes, 4)
	key := newKey(t)
	registryPublisher(t, reg.Host).publish(t, "stable", 2, v2, testBootFiles, key)
	r := newRig(t, v1)
	tr := &countingTransport{base: http.DefaultTransport}
	p := r.puller(t, Config{Keys: []*ecdsa.PublicKey{&key.PublicKey}, Transport: tr, Insecure: true})

	// Every third download of a chunk fails, the four kinds of fault in
	// turn. The first download of every other blob (the signature's
	// payload, the config and the chunk index, which verification reads,
	// and the boot files) is cut short.
	chunks := map[string]bool{}
	for _, d := range chunkDigests(t, v2) {
		chunks[d] = true
	}
	faults := []regtest.Fault{regtest.ServerError, regtest.Reset, regtest.Truncate, regtest.Corrupt}
	seen := map[string]bool{}
	var smallCut int
	proxy.SetFaults(func(n int, path string) regtest.Fault {
		digest := path[strings.LastIndex(path, "/")+1:]
		if !chunks[digest] {
			if seen[digest] {
				return regtest.Pass
			}
			seen[digest] = true
			smallCut++
			return regtest.Truncate
		}
		if n%3 != 0 {
			return regtest.Pass
		}
		return faults[(n/3)%len(faults)]
	})
	res, err := p.PullNow(context.Background(), mgmt.PullRequest{Ref: proxy.Host + "/fleet/hello:stable"})
	if err != nil {
		t.Fatalf("PullNow through the faulty proxy: %v", err)
	}
	for _, f := range faults {
		if proxy.Injected(f) == 0 {
			t.Errorf("the proxy injected no fault of kind %d: the test did not test it", f)
		}
		t.Logf("fault %d injected %d times", f, proxy.Injected(f))
	}
	// The proxy calls SetFaults' function under its lock.
	if smallCut < 3 {
		t.Errorf("%d blobs other than chunks were cut short, want at least the payload, config and chunk index", smallCut)
	}
	t.Logf("result %+v, %d blob bytes on the wire", res, tr.blobBytes.Load())
	// Noise does not compress: every chunk costs at least its size.
	if res.BytesReused != 0 || res.BytesResumed != 0 || res.BytesFetched < int64(len(v2)) {
		t.Errorf("fetched %d bytes of a %d-byte root that shares nothing with the running one (%+v)", res.BytesFetched, len(v2), res)
	}
	r.assertInstalled(t, v2)
}

// stoppingTransport stops the registry before the blob request it is
// told to stop at, once.
type stoppingTransport struct {
	base   http.RoundTripper
	reg    *regtest.Registry
	stopAt int32
	blobs  atomic.Int32
	once   sync.Once
}

func (s *stoppingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") && s.blobs.Add(1) == s.stopAt {
		s.once.Do(s.reg.Stop)
	}
	return s.base.RoundTrip(req)
}

// TestPullRegistryStopped: the registry stops in the middle of the
// root's download. The install fails with nothing bootable; once the
// registry is back, the install resumes from the chunks already written
// and verified and fetches only the rest.
func TestPullRegistryStopped(t *testing.T) {
	reg := regtest.StartHTTP(t)
	v1, v2 := fakeRoot(rootBytes, 1), fakeRoot(rootBytes, 5)
	nChunks := len(chunkDigests(t, v2))
	key := newKey(t)
	pub := registryPublisher(t, reg.Host)
	pub.publish(t, "stable", 2, v2, testBootFiles, key)
	r := newRig(t, v1)
	// The blobs before the root's chunks: the signature's payload, the
	// config and the chunk index; the registry stops halfway through
	// the chunks.
	stop := &stoppingTransport{base: http.DefaultTransport, reg: reg, stopAt: 3 + int32(nChunks/2)}
	tr := &countingTransport{base: stop}
	p := r.puller(t, Config{Keys: []*ecdsa.PublicKey{&key.PublicKey}, Transport: tr, Insecure: true, Retries: 2})
	ref := pub.repo.Tag("stable").String()

	_, err := p.PullNow(context.Background(), mgmt.PullRequest{Ref: ref})
	if err == nil {
		t.Fatal("the install succeeded with the registry stopped")
	}
	t.Logf("PullNow with the registry stopped after %d blob requests: %v", stop.blobs.Load(), err)
	if !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("error %q does not say the registry refused the connection", err)
	}
	r.assertNothingBootable(t)
	if st := p.Status(); st.LastFailure == nil || st.LastFailure.Reason != err.Error() {
		t.Errorf("status last failure %+v, want the install's error", st.LastFailure)
	}
	firstBytes := tr.blobBytes.Load()

	if err := reg.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	res, err := p.PullNow(context.Background(), mgmt.PullRequest{Ref: ref})
	if err != nil {
		t.Fatalf("PullNow after the registry came back: %v", err)
	}
	secondBytes := tr.blobBytes.Load() - firstBytes
	t.Logf("blob bytes on the wire: %d before the stop, %d after it; result %+v", firstBytes, secondBytes, res)
	if res.BytesResumed == 0 || res.BytesFetched >= int64(len(v2)) || res.BytesResumed+res.BytesFetched < int64(len(v2)) {
		t.Errorf("resumed %d + fetched %d of a %d-byte root: want the chunks before the stop kept", res.BytesResumed, res.BytesFetched, len(v2))
	}
	// What the registry served says the same, whatever the result claims.
	if secondBytes >= int64(len(v2)) {
		t.Errorf("the second install downloaded %d blob bytes, not less than the %d-byte root", secondBytes, len(v2))
	}
	r.assertInstalled(t, v2)
}

// TestPullCorruptBlobInRegistry: a chunk whose bytes in the registry's
// storage do not match its digest fails the install, naming the digest,
// with nothing bootable; once the file is repaired, the install resumes
// and completes.
func TestPullCorruptBlobInRegistry(t *testing.T) {
	reg := regtest.StartHTTP(t)
	v1, v2 := fakeRoot(rootBytes, 1), fakeRoot(rootBytes, 6)
	chunks := chunkDigests(t, v2)
	bad := chunks[len(chunks)/2]
	key := newKey(t)
	pub := registryPublisher(t, reg.Host)
	pub.publish(t, "stable", 2, v2, testBootFiles, key)

	path, err := reg.BlobPath(bad)
	if err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the chunk's blob in the registry's storage: %v", err)
	}
	corrupt := bytes.Clone(good)
	corrupt[len(corrupt)/3] ^= 0x01
	if err := os.WriteFile(path, corrupt, 0o644); err != nil {
		t.Fatal(err)
	}

	r := newRig(t, v1)
	p := r.puller(t, Config{Keys: []*ecdsa.PublicKey{&key.PublicKey}, Insecure: true, Retries: 2})
	ref := pub.repo.Tag("stable").String()
	_, err = p.PullNow(context.Background(), mgmt.PullRequest{Ref: ref})
	if err == nil {
		t.Fatal("the install succeeded with a corrupt chunk")
	}
	t.Logf("PullNow with chunk %s corrupt in the registry: %v", bad, err)
	if !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("error %q does not name the corrupt chunk %s and the failed check", err, bad)
	}
	r.assertNothingBootable(t)

	if err := os.WriteFile(path, good, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := p.PullNow(context.Background(), mgmt.PullRequest{Ref: ref})
	if err != nil {
		t.Fatalf("PullNow after the chunk was repaired: %v", err)
	}
	t.Logf("result after the repair: %+v", res)
	if res.BytesResumed == 0 || res.BytesFetched >= int64(len(v2)) {
		t.Errorf("resumed %d, fetched %d of %d: want the chunks before the bad one kept", res.BytesResumed, res.BytesFetched, len(v2))
	}
	r.assertInstalled(t, v2)
}

// TestPullTLSBasicAuth: a registry over TLS with htpasswd authentication.
// The puller trusts the registry's CA through Config.Transport; without
// credentials it is refused (401), with the credentials stored by
// SetRegistryAuth (mode 0600 in the state directory) it installs, and
// once they are removed it is refused again.
func TestPullTLSBasicAuth(t *testing.T) {
	reg := regtest.StartTLS(t)
	trustCA := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: reg.CAPool}}
	repo, err := name.NewRepository(reg.Host+"/fleet/hello", name.StrictValidation)
	if err != nil {
		t.Fatal(err)
	}
	pub := publisher{repo: repo, ropts: []remote.Option{remote.WithTransport(trustCA), remote.WithAuth(&authn.Basic{Username: reg.User, Password: reg.Password})}}
	v1, v2 := fakeRoot(rootBytes, 1), edited(fakeRoot(rootBytes, 1))
	key := newKey(t)
	pub.publish(t, "stable", 2, v2, testBootFiles, key)
	ref := repo.Tag("stable").String()
	ctx := context.Background()

	// The system's roots do not know the test CA.
	r := newRig(t, v1)
	p := r.puller(t, Config{Keys: []*ecdsa.PublicKey{&key.PublicKey}})
	if _, err := p.PullNow(ctx, mgmt.PullRequest{Ref: ref}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("PullNow from a registry whose CA is not trusted: %v, want a certificate error", err)
	}

	p = r.puller(t, Config{Keys: []*ecdsa.PublicKey{&key.PublicKey}, Transport: trustCA.Clone()})
	unauthorized := func(what string) {
		t.Helper()
		_, err := p.PullNow(ctx, mgmt.PullRequest{Ref: ref})
		if err == nil {
			t.Fatalf("PullNow %s succeeded", what)
		}
		t.Logf("PullNow %s: %v", what, err)
		if !strings.Contains(err.Error(), "401") && !strings.Contains(strings.ToLower(err.Error()), "unauthorized") {
			t.Errorf("PullNow %s: %v, want a 401/unauthorized error", what, err)
		}
		// The registry's answer says nothing about the release.
		if errors.Is(err, mgmt.ErrRejected) || strings.Contains(err.Error(), "refused") {
			t.Errorf("PullNow %s: %v: reported as a refused release", what, err)
		}
	}
	// The refusals change nothing: slot b still holds the root it had
	// (release 1's, as newRig writes both slots).
	slotB, state := r.slot(t, slot.B), r.state(t)
	unchanged := func() {
		t.Helper()
		if !bytes.Equal(r.slot(t, slot.B), slotB) {
			t.Error("slot b changed")
		}
		if s := r.state(t); !bytes.Equal(s.Marshal(), state.Marshal()) {
			t.Errorf("slot.json %+v, was %+v", s, state)
		}
	}
	unauthorized("without credentials")
	unchanged()

	if err := p.SetRegistryAuth(ctx, mgmt.RegistryAuth{Registry: reg.Host, Username: reg.User, Password: "not the password"}); err != nil {
		t.Fatal(err)
	}
	unauthorized("with a wrong password")
	unchanged()

	if err := p.SetRegistryAuth(ctx, mgmt.RegistryAuth{Registry: reg.Host, Username: reg.User, Password: reg.Password}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(r.stateDir, authFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("credentials file mode %v, want 0600", st.Mode().Perm())
	}
	res, err := p.PullNow(ctx, mgmt.PullRequest{Ref: ref})
	if err != nil {
		t.Fatalf("PullNow with credentials: %v", err)
	}
	t.Logf("with credentials: %+v", res)
	if res.BytesReused == 0 {
		t.Errorf("result %+v: want the chunks of the running root reused", res)
	}
	r.assertInstalled(t, v2)
	waitFor(t, func() bool { return r.reboots.Load() == 1 }, "the reboot into the trial")

	if err := p.SetRegistryAuth(ctx, mgmt.RegistryAuth{Registry: reg.Host}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(r.stateDir, authFile)); err != nil || bytes.Contains(b, []byte(reg.Password)) {
		t.Errorf("credentials file after removal: %q, %v", b, err)
	}
	slotB, state = r.slot(t, slot.B), r.state(t)
	unauthorized("after the credentials were removed")
	unchanged()
}

// requestCounter counts a puller's requests: all of them, and those of
// the API version check (GET /v2/, where a client learns how to
// authenticate).
type requestCounter struct {
	base            http.RoundTripper
	requests, pings atomic.Int32
}

func (c *requestCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	c.requests.Add(1)
	if req.URL.Path == "/v2/" {
		c.pings.Add(1)
	}
	return c.base.RoundTrip(req)
}

// TestPullAuthenticatesOnce: an install asks the registry how to
// authenticate once, not again for each of its blobs (with a token
// service that would be a token request per chunk, and a fleet's worth
// of them).
func TestPullAuthenticatesOnce(t *testing.T) {
	reg := regtest.StartHTTP(t)
	v1, v2 := fakeRoot(rootBytes, 1), fakeRoot(rootBytes, 7)
	key := newKey(t)
	pub := registryPublisher(t, reg.Host)
	pub.publish(t, "stable", 2, v2, testBootFiles, key)
	r := newRig(t, v1)
	c := &requestCounter{base: http.DefaultTransport}
	p := r.puller(t, Config{Keys: []*ecdsa.PublicKey{&key.PublicKey}, Transport: c, Insecure: true})
	if _, err := p.PullNow(context.Background(), mgmt.PullRequest{Ref: pub.repo.Tag("stable").String()}); err != nil {
		t.Fatal(err)
	}
	chunks := len(chunkDigests(t, v2))
	t.Logf("%d requests for a root of %d chunks, %d of them GET /v2/", c.requests.Load(), chunks, c.pings.Load())
	// An insecure registry is tried over HTTPS first, then over HTTP.
	if c.pings.Load() > 2 {
		t.Errorf("%d requests of GET /v2/ for one install (%d requests in all): want the registry asked once", c.pings.Load(), c.requests.Load())
	}
	r.assertInstalled(t, v2)
}
