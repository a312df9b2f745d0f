package pull

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log"
	"maps"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ingotdev/ingot/appliance/update"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/mgmt/publish"
	"github.com/ingotdev/ingot/mgmt/release"
	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/format/slot"
	"github.com/ingotdev/ingot/packer/format/squashfs"
)

const (
	partBytes = 8 << 20
	rootBytes = 3 << 20
	target    = "vm-amd64"
)

// fakeRoot is n bytes of seeded noise behind a squashfs superblock that
// declares them: what the A/B path checks of a root.
func fakeRoot(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := mrand.New(mrand.NewPCG(seed, 7))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	sb := squashfs.Superblock{BlockSize: squashfs.MinBlockBytes, BlockLog: 12, Compressor: squashfs.CompressorGzip, BytesUsed: uint64(n)}
	copy(b, sb.Encode())
	return b
}

// edited is root with a few bytes changed in its middle and some
// inserted, as a small change to one program in the root does.
func edited(root []byte) []byte {
	mid := len(root) / 2
	out := append([]byte(nil), root[:mid]...)
	out = append(out, []byte("a one-line change")...)
	out = append(out, root[mid+100:]...)
	out = out[:len(root)]
	return out
}

// rig is one appliance: a boot directory, two slot files (slot a runs
// root v1), the A/B manager of a boot of slot a and a state directory.
type rig struct {
	dir, bootDir, stateDir string
	parts                  map[slot.Name]string
	mgr                    *update.Manager
	reboots                atomic.Int32
}

func newRig(t *testing.T, running []byte) *rig {
	t.Helper()
	dir := t.TempDir()
	r := &rig{dir: dir, bootDir: filepath.Join(dir, "boot"), stateDir: filepath.Join(dir, "perm", ".ingot-pull"), parts: map[slot.Name]string{}}
	if err := os.MkdirAll(r.bootDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := slot.Save(r.bootDir, slot.State{Active: slot.A}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []slot.Name{slot.A, slot.B} {
		content := make([]byte, partBytes)
		copy(content, running)
		r.parts[n] = filepath.Join(dir, n.PartitionLabel())
		if err := os.WriteFile(r.parts[n], content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r.boot(t, slot.A)
	return r
}

// boot makes the manager of a new boot of slot n.
func (r *rig) boot(t *testing.T, n slot.Name) {
	t.Helper()
	open := func(ctx context.Context, n slot.Name) (update.Partition, error) { return update.OpenFile(r.parts[n]) }
	m, err := update.NewManager(r.bootDir, n, open, update.WithArch(runtime.GOARCH))
	if err != nil {
		t.Fatal(err)
	}
	r.mgr = m
}

func (r *rig) puller(t *testing.T, cfg Config) *Puller {
	t.Helper()
	cfg.Name, cfg.Target, cfg.Arch = "hello", target, runtime.GOARCH
	if cfg.Release == 0 {
		cfg.Release = 1
	}
	if cfg.StateDir == "" {
		cfg.StateDir = r.stateDir
	}
	cfg.Slots = r.mgr
	cfg.Reboot = func(context.Context) error { r.reboots.Add(1); return nil }
	cfg.RebootDelay = time.Millisecond
	cfg.RetryWait = time.Millisecond
	cfg.Logf = t.Logf
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (r *rig) slot(t *testing.T, n slot.Name) []byte {
	t.Helper()
	b, err := os.ReadFile(r.parts[n])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (r *rig) state(t *testing.T) slot.State {
	t.Helper()
	s, err := update.ReadState(r.bootDir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// publisher publishes synthetic releases to one repository.
type publisher struct {
	repo  name.Repository
	ropts []remote.Option
	// appliance is the releases' appliance name ("hello" when empty).
	appliance string
	// deltaFrom, when set, makes the releases carry patches against it.
	deltaFrom name.Reference
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var testBootFiles = map[string][]byte{
	layout.KernelFile:  []byte("kernel v1"),
	layout.InitrdFile:  []byte("initramfs v1"),
	layout.CmdlineFile: []byte("console=ttyS0 ingot.build=b1\n"),
}

// publish pushes root as release number rel under tag, signed with key
// (nil: unsigned), and returns its digest reference.
func (p publisher) publish(t *testing.T, tag string, rel uint64, root []byte, boot map[string][]byte, key *ecdsa.PrivateKey) name.Digest {
	t.Helper()
	ctx := context.Background()
	appliance := cmp.Or(p.appliance, "hello")
	cfg := release.Config{Name: appliance, Target: target, Arch: runtime.GOARCH, BuildID: "build-" + tag + "-" + hexSum(root)[:12], Release: rel, Created: time.Unix(1700000000, 0).UTC()}
	// The command line names the build, as a built image's does: the
	// record of an update takes the build id from there.
	boot = maps.Clone(boot)
	boot[layout.CmdlineFile] = []byte("console=ttyS0 " + layout.ParamBuild + "=" + cfg.BuildID + "\n")
	opts := []publish.Option{publish.WithRemoteOptions(p.ropts...)}
	if p.deltaFrom != nil {
		opts = append(opts, publish.WithDeltaFrom(p.deltaFrom))
	}
	res, err := publish.PushTargets(ctx, p.repo.Tag(tag), []publish.Target{{Config: cfg, Root: io.NewSectionReader(bytes.NewReader(root), 0, int64(len(root))), BootFiles: boot}}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if key != nil {
		if _, err := publish.Sign(ctx, p.repo, res.Digest, key, publish.WithRemoteOptions(p.ropts...)); err != nil {
			t.Fatal(err)
		}
	}
	return res.Ref
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// countingTransport counts the bytes of blob bodies and can fail requests.
type countingTransport struct {
	base      http.RoundTripper
	blobBytes atomic.Int64
	// fail, when set, decides per request whether it fails.
	mu   sync.Mutex
	fail func(*http.Request) bool
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c.mu.Lock()
	f := c.fail
	c.mu.Unlock()
	if f != nil && f(req) {
		return nil, errors.New("connection reset by the test")
	}
	resp, err := c.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if strings.Contains(req.URL.Path, "/blobs/") && req.Method == http.MethodGet {
		resp.Body = &countingBody{ReadCloser: resp.Body, n: &c.blobBytes}
	}
	return resp, nil
}

func (c *countingTransport) setFail(f func(*http.Request) bool) {
	c.mu.Lock()
	c.fail = f
	c.mu.Unlock()
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// inProcessRegistry serves go-containerregistry's registry on loopback.
func inProcessRegistry(t *testing.T) (publisher, *countingTransport) {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	repo, err := name.NewRepository(strings.TrimPrefix(srv.URL, "http://")+"/fleet/hello", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return publisher{repo: repo}, &countingTransport{base: http.DefaultTransport}
}

func TestPullInstallsOnlyWhatChanged(t *testing.T) {
	v1 := fakeRoot(rootBytes, 1)
	v2 := edited(v1)
	key := newKey(t)
	pub, tr := inProcessRegistry(t)
	r := newRig(t, v1)
	boot2 := map[string][]byte{layout.KernelFile: []byte("kernel v1"), layout.InitrdFile: []byte("initramfs v2"), layout.CmdlineFile: []byte("console=ttyS0 ingot.build=b2\n")}
	ref := pub.publish(t, "stable", 2, v2, boot2, key)
	p := r.puller(t, Config{Keys: []*ecdsa.PublicKey{&key.PublicKey}, Transport: tr, Insecure: true})

	res, err := p.PullNow(context.Background(), mgmt.PullRequest{Ref: pub.repo.Tag("stable").String()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("result: %+v, blob bytes on the wire %d", res, tr.blobBytes.Load())
	if res.Release.Digest != ref.DigestStr() || res.Release.Release != 2 || res.Slot != "b" {
		t.Errorf("result %+v, want release 2 %s into slot b", res, ref.DigestStr())
	}
	if got := r.slot(t, slot.B)[:len(v2)]; !bytes.Equal(got, v2) {
		t.Error("slot b does not hold release 2's root")
	}
	if s := r.state(t); s.Active != slot.A || s.Trial != slot.B || s.TriesLeft != 1 {
		t.Errorf("slot.json %+v, want active a, trial b with one try", s)
	}
	if res.BytesReused < int64(len(v2))*3/4 || res.BytesFetched > int64(len(v2))/4 {
		t.Errorf("fetched %d + reused %d of a %d-byte root: want most of it reused", res.BytesFetched, res.BytesReused, len(v2))
	}
	if got, err := os.ReadFile(filepath.Join(r.bootDir, slot.B.BootFile(layout.InitrdFile))); err != nil || string(got) != "initramfs v2" {
		t.Errorf("slot b's initramfs: %q, %v", got, err)
	}
	waitFor(t, func() bool { return r.reboots.Load() == 1 }, "the reboot into the trial")
	if st := p.Status(); st.LastFailure != nil || st.Progress != nil {
		t.Errorf("status after a good install: %+v", st)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPullRefusesWithoutWriting: releases that must not install are
// refused before a byte reaches the inactive slot or slot.json changes.
func TestPullRefusesWithoutWriting(t *testing.T) {
	v1 := fakeRoot(rootBytes, 1)
	key, other := newKey(t), newKey(t)
	pub, tr := inProcessRegistry(t)
	pub.publish(t, "other-key", 3, edited(v1), testBootFiles, other)
	pub.publish(t, "unsigned", 3, edited(v1), testBootFiles, nil)
	pub.publish(t, "older", 1, edited(v1), testBootFiles, key)
	pub2 := pub
	pub2.appliance = "hello2"
	pub2.publish(t, "other-appliance", 3, edited(v1), testBootFiles, key)
	for _, c := range []struct{ tag, want string }{
		{"other-key", "refused"},
		{"unsigned", "not signed"},
		{"older", "older than"},
		{"other-appliance", `of appliance "hello2", this is "hello"`},
	} {
		t.Run(c.tag, func(t *testing.T) {
			r := newRig(t, v1)
			before, beforeState := r.slot(t, slot.B), r.state(t)
			p := r.puller(t, Config{Keys: []*ecdsa.PublicKey{&key.PublicKey}, Transport: tr, Insecure: true, Release: 2})
			_, err := p.PullNow(context.Background(), mgmt.PullRequest{Ref: pub.repo.Tag(c.tag).String()})
			if err == nil || !errors.Is(err, mgmt.ErrRejected) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("PullNow: %v, want a rejection saying %q", err, c.want)
			}
			if !bytes.Equal(r.slot(t, slot.B), before) {
				t.Error("slot b changed")
			}
			if s := r.state(t); !bytes.Equal(s.Marshal(), beforeState.Marshal()) {
				t.Errorf("slot.json %+v, was %+v", s, beforeState)
			}
			st := p.Status()
			if st.LastFailure == nil || !strings.Contains(st.LastFailure.Reason, c.want) {
				t.Errorf("status last failure %+v, want the reason %q", st.LastFailure, c.want)
			}
			if r.reboots.Load() != 0 {
				t.Error("rebooted")
			}
		})
	}
}

// TestPullResumes: an install cut off after some chunks resumes from
// what it wrote and verified, and fetches only the rest.
func TestPullResumes(t *testing.T) {
	v1 := fakeRoot(rootBytes, 1)
	v2 := fakeRoot(rootBytes, 2) // nothing in common: every chunk is fetched
	key := newKey(t)
	pub, tr := inProcessRegistry(t)
	pub.publish(t, "stable", 2, v2, testBootFiles, key)
	r := newRig(t, v1)
	p := r.puller(t, Config{Keys: []*ecdsa.PublicKey{&key.PublicKey}, Transport: tr, Insecure: true, Retries: 1})

	// The network goes away after ~half the root's chunks.
	var blobs atomic.Int32
	tr.setFail(func(req *http.Request) bool {
		return strings.Contains(req.URL.Path, "/blobs/") && blobs.Add(1) > 30
	})
	if _, err := p.PullNow(context.Background(), mgmt.PullRequest{Ref: pub.repo.Tag("stable").String()}); err == nil {
		t.Fatal("the install succeeded without a network")
	}
	if err := update.ValidRoot(bytes.NewReader(r.slot(t, slot.B)), partBytes); err == nil {
		t.Error("slot b has a valid superblock after an interrupted install")
	}
	if s := r.state(t); s.Trial != "" {
		t.Errorf("slot.json %+v after an interrupted install", s)
	}
	firstBytes := tr.blobBytes.Load()

	// The next boot (a power cut, say): a new manager and puller.
	tr.setFail(nil)
	r.boot(t, slot.A)
	p = r.puller(t, Config{Keys: []*ecdsa.PublicKey{&key.PublicKey}, Transport: tr, Insecure: true})
	res, err := p.PullNow(context.Background(), mgmt.PullRequest{Ref: pub.repo.Tag("stable").String()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first attempt %d blob bytes, result %+v", firstBytes, res)
	if res.BytesResumed == 0 || res.BytesFetched >= int64(len(v2)) {
		t.Errorf("resumed %d, fetched %d of %d: want the first attempt's chunks kept", res.BytesResumed, res.BytesFetched, len(v2))
	}
	if !bytes.Equal(r.slot(t, slot.B)[:len(v2)], v2) {
		t.Error("slot b does not hold release 2's root")
	}
}

// TestPullBadBlob: a registry that serves a chunk whose bytes do not
// match its digest gets nothing marked bootable; once it serves the right
// bytes, the install completes.
func TestPullBadBlob(t *testing.T) {
	v1 := fakeRoot(rootBytes, 1)
	v2 := fakeRoot(rootBytes, 3)
	key := newKey(t)
	pub, tr := inProcessRegistry(t)
	pub.publish(t, "stable", 2, v2, testBootFiles, key)
	r := newRig(t, v1)
	corrupt := &corruptingTransport{base: tr, nth: 12}
	p := r.puller(t, Config{Keys: []*ecdsa.PublicKey{&key.PublicKey}, Transport: corrupt, Insecure: true, Retries: 2})
	corrupt.always.Store(true)
	_, err := p.PullNow(context.Background(), mgmt.PullRequest{Ref: pub.repo.Tag("stable").String()})
	if err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Fatalf("PullNow with a corrupt blob: %v, want a digest error", err)
	}
	if err := update.ValidRoot(bytes.NewReader(r.slot(t, slot.B)), partBytes); err == nil {
		t.Error("slot b is valid after a corrupt chunk")
	}
	if s := r.state(t); s.Trial != "" {
		t.Errorf("slot.json %+v", s)
	}
	corrupt.always.Store(false) // the fault clears
	res, err := p.PullNow(context.Background(), mgmt.PullRequest{Ref: pub.repo.Tag("stable").String()})
	if err != nil {
		t.Fatal(err)
	}
	if res.BytesResumed == 0 {
		t.Errorf("result %+v: want the chunks before the bad one resumed", res)
	}
	if !bytes.Equal(r.slot(t, slot.B)[:len(v2)], v2) {
		t.Error("slot b does not hold release 2's root")
	}
}

// corruptingTransport flips a byte in the nth blob body, and in every
// later one while always is set.
type corruptingTransport struct {
	base   http.RoundTripper
	nth    int32
	n      atomic.Int32
	always atomic.Bool
}

func (c *corruptingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(req)
	if err != nil || req.Method != http.MethodGet || !strings.Contains(req.URL.Path, "/blobs/") {
		return resp, err
	}
	if c.n.Add(1) < c.nth || !c.always.Load() {
		return resp, nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if len(body) > 0 {
		body[len(body)/2] ^= 0xff
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// TestScheduledCheck: a check installs a newer release; after its trial
// failed, checks do not install it again; a newer one still installs.
func TestScheduledCheck(t *testing.T) {
	v1 := fakeRoot(rootBytes, 1)
	key := newKey(t)
	pub, tr := inProcessRegistry(t)
	r := newRig(t, v1)
	cfg := Config{Keys: []*ecdsa.PublicKey{&key.PublicKey}, Transport: tr, Insecure: true, From: pub.repo.Tag("stable").String(), Check: time.Hour}
	p := r.puller(t, cfg)

	pub.publish(t, "stable", 1, v1, testBootFiles, key) // what runs: nothing to do
	if p.CheckNow(context.Background()) {
		t.Fatal("installed the running release")
	}
	st := p.Status()
	if st.Available == nil || st.Available.Release != 1 || st.LastCheck.IsZero() {
		t.Errorf("status %+v", st)
	}
	bad := pub.publish(t, "stable", 2, edited(v1), testBootFiles, key)
	if !p.CheckNow(context.Background()) {
		t.Fatalf("release 2 was not installed: %+v", p.Status())
	}
	// Its trial fails: the loader fell back to a, which says why.
	if err := slot.Save(r.bootDir, slot.State{Active: slot.A, LastFailed: &slot.Failure{Slot: slot.B, Reason: "trial health check: service hello exited"}}); err != nil {
		t.Fatal(err)
	}
	r.boot(t, slot.A)
	p = r.puller(t, cfg)
	st = p.Status()
	if len(st.FailedDigests) != 1 || st.FailedDigests[0] != bad.DigestStr() || st.LastFailure == nil || !strings.Contains(st.LastFailure.Reason, "service hello exited") {
		t.Fatalf("status after the failed trial %+v", st)
	}
	if p.CheckNow(context.Background()) {
		t.Fatal("the failed release was installed again")
	}
	if st := p.Status(); !strings.Contains(st.LastCheckError, "not retried") {
		t.Errorf("last check error %q, want it to say the release is not retried", st.LastCheckError)
	}
	if s := r.state(t); s.Trial != "" {
		t.Errorf("slot.json %+v after the check", s)
	}
	pub.publish(t, "stable", 3, fakeRoot(rootBytes, 9), testBootFiles, key)
	if !p.CheckNow(context.Background()) {
		t.Fatalf("release 3 was not installed: %+v", p.Status())
	}
	if s := r.state(t); s.Trial != slot.B {
		t.Errorf("slot.json %+v", s)
	}
}

// retouched is root with one byte in every 4 KiB of its second MiB
// changed, as a program whose code moved by a few bytes changes the
// addresses throughout it: no chunk of that MiB is the same, but each is
// nearly what it was.
func retouched(root []byte) []byte {
	out := bytes.Clone(root)
	for i := 1 << 20; i < 2<<20 && i < len(out); i += 4096 {
		out[i] ^= 0x5a
	}
	return out
}

// TestPullPatches: chunks that changed a little come as patches against
// the running root when it is the release's base, a small fraction of
// the chunks' size; an appliance that runs another root ignores the
// patches and fetches the chunks.
func TestPullPatches(t *testing.T) {
	v1 := fakeRoot(rootBytes, 1)
	v2 := retouched(v1)
	key := newKey(t)
	pub, tr := inProcessRegistry(t)
	pub.publish(t, "stable", 1, v1, testBootFiles, key)
	pub.deltaFrom = pub.repo.Tag("stable")
	ref := pub.publish(t, "stable", 2, v2, testBootFiles, key)

	// The release: patches against release 1's root.
	rel, err := release.Verify(context.Background(), ref, release.Policy{Keys: []*ecdsa.PublicKey{&key.PublicKey}, RunningRelease: 1}, remote.WithTransport(tr))
	if err != nil {
		t.Fatal(err)
	}
	plan, err := rel.RootPlan(&rel.Targets[0])
	if err != nil {
		t.Fatal(err)
	}
	patches := 0
	for _, p := range plan.Pieces {
		if p.Patch != nil {
			patches++
		}
	}
	if plan.Base == nil || plan.Base.Digest.Hex != hexSum(v1) || patches == 0 {
		t.Fatalf("release 2: base %+v, %d patches; want patches against release 1's root %s", plan.Base, patches, hexSum(v1))
	}

	r := newRig(t, v1)
	p := r.puller(t, Config{Keys: []*ecdsa.PublicKey{&key.PublicKey}, Transport: tr, Insecure: true})
	res, err := p.PullNow(context.Background(), mgmt.PullRequest{Ref: ref.String()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("on release 1: %+v (%d patches)", res, patches)
	if !bytes.Equal(r.slot(t, slot.B)[:len(v2)], v2) {
		t.Fatal("slot b does not hold release 2's root")
	}
	if res.BytesPatched < 1<<20 || res.BytesFetched > 1<<20/8 {
		t.Errorf("patched %d bytes of the changed MiB with %d bytes fetched: want all of it, for a small fraction", res.BytesPatched, res.BytesFetched)
	}

	// Another running root: the patches do not apply, the chunks come.
	other := newRig(t, fakeRoot(rootBytes, 77))
	p = other.puller(t, Config{Keys: []*ecdsa.PublicKey{&key.PublicKey}, Transport: tr, Insecure: true})
	res, err = p.PullNow(context.Background(), mgmt.PullRequest{Ref: ref.String()})
	if err != nil {
		t.Fatal(err)
	}
	if res.BytesPatched != 0 || res.BytesFetched < int64(len(v2)) || !bytes.Equal(other.slot(t, slot.B)[:len(v2)], v2) {
		t.Errorf("on another root: %+v; want every chunk fetched and no patch used", res)
	}
}
