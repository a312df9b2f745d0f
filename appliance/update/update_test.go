package update

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/format/slot"
	"github.com/ingotdev/ingot/packer/format/squashfs"
)

const partBytes = 1 << 20

// fakeRoot returns a fake squashfs of n bytes: a superblock that passes the
// checks, then pseudo-random bytes derived from seed.
func fakeRoot(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	sb := squashfs.Superblock{BlockSize: squashfs.MinBlockBytes, BlockLog: 12, Compressor: squashfs.CompressorGzip, BytesUsed: uint64(n)}
	copy(b, sb.Encode())
	return b
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// rig is a boot directory and two partition files standing in for an
// appliance's disk, slot a holding the running root and slot b an older one.
type rig struct {
	bootDir string
	parts   map[slot.Name]string
	old     map[slot.Name][]byte
}

func newRig(t *testing.T, state slot.State) *rig {
	t.Helper()
	dir := t.TempDir()
	r := &rig{bootDir: filepath.Join(dir, "boot"), parts: map[slot.Name]string{}, old: map[slot.Name][]byte{}}
	if err := os.Mkdir(r.bootDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := slot.Save(r.bootDir, state); err != nil {
		t.Fatal(err)
	}
	for i, n := range []slot.Name{slot.A, slot.B} {
		content := make([]byte, partBytes)
		copy(content, fakeRoot(300_000, uint64(i+100)))
		r.parts[n] = filepath.Join(dir, n.PartitionLabel())
		r.old[n] = content
		if err := os.WriteFile(r.parts[n], content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func (r *rig) open(ctx context.Context, n slot.Name) (Partition, error) {
	return OpenFile(r.parts[n])
}

func (r *rig) partition(t *testing.T, n slot.Name) []byte {
	t.Helper()
	b, err := os.ReadFile(r.parts[n])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (r *rig) slotJSON(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.bootDir, layout.SlotFile))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func (r *rig) state(t *testing.T) slot.State {
	t.Helper()
	s, err := ReadState(r.bootDir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (r *rig) manager(t *testing.T, booted slot.Name, opts ...Option) *Manager {
	t.Helper()
	m, err := NewManager(r.bootDir, booted, r.open, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// partitionAfter says what a failed or successful write must leave.
type partitionAfter int

const (
	unchanged   partitionAfter = iota // byte for byte as before
	invalidated                       // first 4 KiB zero
	written                           // the new image, rest as before
)

func TestManagerWriteRoot(t *testing.T) {
	good := fakeRoot(200_000, 1)
	other := arch()
	tests := []struct {
		name    string
		body    []byte
		size    int64
		sha     string
		arch    string
		wantErr error
		errText string
		after   partitionAfter
	}{
		{"good", good, int64(len(good)), sum(good), runtime.GOARCH, nil, "", written},
		{"upper-case sha", good, int64(len(good)), strings.ToUpper(sum(good)), runtime.GOARCH, nil, "", written},
		{"wrong sha256", good, int64(len(good)), sum(good[1:]), runtime.GOARCH, mgmt.ErrRejected, "sha256", invalidated},
		{"truncated body", good[:150_000], int64(len(good)), sum(good), runtime.GOARCH, mgmt.ErrRejected, "ended after 150000 of 200000", invalidated},
		{"body longer than declared", append(append([]byte(nil), good...), "extra"...), int64(len(good)), sum(good), runtime.GOARCH, mgmt.ErrRejected, "longer", invalidated},
		{"not squashfs", bytes.Repeat([]byte("ELF!"), 50_000), 200_000, sum(bytes.Repeat([]byte("ELF!"), 50_000)), runtime.GOARCH, mgmt.ErrRejected, "magic", unchanged},
		{"larger than the partition", fakeRoot(partBytes+1, 2), partBytes + 1, sum(fakeRoot(partBytes+1, 2)), runtime.GOARCH, mgmt.ErrTooLarge, "does not fit", unchanged},
		{"other architecture", good, int64(len(good)), sum(good), other, mgmt.ErrRejected, "image is for " + other, unchanged},
		{"no architecture", good, int64(len(good)), sum(good), "", mgmt.ErrInvalid, "architecture", unchanged},
		{"malformed sha256", good, int64(len(good)), "abc", runtime.GOARCH, mgmt.ErrInvalid, "64 hex", unchanged},
		{"tiny", good[:50], 50, sum(good[:50]), runtime.GOARCH, mgmt.ErrRejected, "too small", unchanged},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, slot.Initial())
			m := r.manager(t, slot.A)
			before := r.slotJSON(t)
			res, err := m.WriteRoot(context.Background(), bytes.NewReader(tt.body), tt.size, tt.sha, tt.arch, 0)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("WriteRoot = %v, want success", err)
				}
				if res.Slot != "b" || res.Bytes != tt.size || res.SHA256 != sum(good) {
					t.Errorf("WriteRoot = %+v, want slot b, %d bytes, sha256 %s", res, tt.size, sum(good))
				}
			} else {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("WriteRoot error = %v, want %v mentioning %q", err, tt.wantErr, tt.errText)
				}
				if _, cerr := m.Commit(context.Background()); !errors.Is(cerr, mgmt.ErrConflict) {
					t.Errorf("Commit after a failed write = %v, want ErrConflict (nothing staged)", cerr)
				}
			}
			if got := r.slotJSON(t); got != before {
				t.Errorf("slot.json after WriteRoot = %s, want it untouched: %s", got, before)
			}
			if got := r.partition(t, slot.A); !bytes.Equal(got, r.old[slot.A]) {
				t.Error("the running slot a changed")
			}
			got := r.partition(t, slot.B)
			switch tt.after {
			case unchanged:
				if !bytes.Equal(got, r.old[slot.B]) {
					t.Error("slot b changed, want it untouched (rejected before writing)")
				}
			case invalidated:
				if !bytes.Equal(got[:headBytes], make([]byte, headBytes)) {
					t.Error("slot b's first 4 KiB are not zero, want it invalidated")
				}
				if err := ValidRoot(bytes.NewReader(got), partBytes); err == nil {
					t.Error("ValidRoot(slot b) = nil, want an error")
				}
			case written:
				want := append(append([]byte(nil), good...), r.old[slot.B][len(good):]...)
				if !bytes.Equal(got, want) {
					t.Error("slot b does not hold the image")
				}
			}
		})
	}
}

// arch returns a GOARCH other than the running one.
func arch() string {
	if runtime.GOARCH == "arm64" {
		return "amd64"
	}
	return "arm64"
}

// watchingReader delivers data and, once half of it was read, records the
// partition's first bytes: what a power cut at that moment would leave.
type watchingReader struct {
	t    *testing.T
	r    io.Reader
	path string
	n    int
	half int
	head []byte
}

func (w *watchingReader) Read(b []byte) (int, error) {
	if w.n >= w.half && w.head == nil {
		f, err := os.ReadFile(w.path)
		if err != nil {
			w.t.Fatal(err)
		}
		w.head = f[:headBytes]
	}
	n, err := w.r.Read(b[:min(len(b), 8192)])
	w.n += n
	return n, err
}

func TestWriteRootSuperblockLast(t *testing.T) {
	r := newRig(t, slot.Initial())
	good := fakeRoot(500_000, 3)
	p, err := OpenFile(r.parts[slot.B])
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	wr := &watchingReader{t: t, r: bytes.NewReader(good), path: r.parts[slot.B], half: len(good) / 2}
	if _, err := WriteRoot(context.Background(), p, p.SizeBytes(), wr, int64(len(good)), sum(good), runtime.GOARCH); err != nil {
		t.Fatal(err)
	}
	if wr.head == nil || !bytes.Equal(wr.head, make([]byte, headBytes)) {
		t.Error("mid-stream the partition's first 4 KiB were not zero: a power cut there would leave a mountable half-written slot")
	}
	if err := ValidRoot(p, p.SizeBytes()); err != nil {
		t.Errorf("ValidRoot after the write = %v", err)
	}
}

func TestWriteRootCancelled(t *testing.T) {
	r := newRig(t, slot.Initial())
	good := fakeRoot(500_000, 4)
	p, err := OpenFile(r.parts[slot.B])
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithCancel(context.Background())
	body := io.MultiReader(bytes.NewReader(good[:100_000]), readerFunc(func([]byte) (int, error) {
		cancel()
		return 0, context.Canceled
	}))
	_, err = WriteRoot(ctx, p, p.SizeBytes(), body, int64(len(good)), sum(good), runtime.GOARCH)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("WriteRoot with a failing body = %v, want context.Canceled", err)
	}
	if ValidRoot(p, p.SizeBytes()) == nil {
		t.Error("slot b is valid after an aborted write")
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(b []byte) (int, error) { return f(b) }

func TestStateTransitions(t *testing.T) {
	valid := func(slot.Name) error { return nil }
	invalid := func(n slot.Name) error { return errors.New("no superblock") }
	type step struct {
		op      string // commit, boot (the loader's Decide), confirm, rollback
		arg     slot.Name
		check   func(slot.Name) error
		want    slot.State
		wantErr error
	}
	fail := func(n slot.Name, reason string) *slot.Failure { return &slot.Failure{Slot: n, Reason: reason} }
	tests := []struct {
		name  string
		start slot.State
		steps []step
	}{
		{"update confirmed", slot.Initial(), []step{
			{op: "commit", arg: slot.B, want: slot.State{Active: slot.A, Trial: slot.B, TriesLeft: 1}},
			{op: "boot", want: slot.State{Active: slot.A, Trial: slot.B, TriesLeft: 0}},
			{op: "confirm", arg: slot.B, want: slot.State{Active: slot.B}},
			{op: "confirm", arg: slot.B, want: slot.State{Active: slot.B}}, // idempotent
		}},
		{"trial never confirms", slot.Initial(), []step{
			{op: "commit", arg: slot.B, want: slot.State{Active: slot.A, Trial: slot.B, TriesLeft: 1}},
			{op: "boot", want: slot.State{Active: slot.A, Trial: slot.B}},
			{op: "boot", want: slot.State{Active: slot.A, LastFailed: fail(slot.B, "trial boot did not confirm (services not healthy in time, or the system did not come up)")}},
			{op: "confirm", arg: slot.B, wantErr: mgmt.ErrConflict},
		}},
		{"commit of the active slot", slot.Initial(), []step{
			{op: "commit", arg: slot.A, wantErr: mgmt.ErrConflict},
		}},
		{"confirm a slot that is neither", slot.State{Active: slot.A}, []step{
			{op: "confirm", arg: slot.B, wantErr: mgmt.ErrConflict},
		}},
		{"rollback cancels a staged trial", slot.Initial(), []step{
			{op: "commit", arg: slot.B, want: slot.State{Active: slot.A, Trial: slot.B, TriesLeft: 1}},
			{op: "rollback", arg: slot.A, want: slot.State{Active: slot.A}},
		}},
		{"rollback during the trial boot", slot.State{Active: slot.A, Trial: slot.B}, []step{
			{op: "rollback", arg: slot.B, want: slot.State{Active: slot.A, LastFailed: fail(slot.B, "rolled back by request during its trial boot")}},
			{op: "confirm", arg: slot.B, wantErr: mgmt.ErrConflict},
		}},
		{"rollback to the other slot goes through a trial", slot.State{Active: slot.B}, []step{
			{op: "rollback", arg: slot.B, check: valid, want: slot.State{Active: slot.B, Trial: slot.A, TriesLeft: 1}},
			{op: "boot", want: slot.State{Active: slot.B, Trial: slot.A}},
			{op: "confirm", arg: slot.A, want: slot.State{Active: slot.A}},
		}},
		{"rollback to an invalid slot", slot.State{Active: slot.B}, []step{
			{op: "rollback", arg: slot.B, check: invalid, wantErr: mgmt.ErrConflict},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, tt.start)
			for i, s := range tt.steps {
				before := r.state(t)
				var got slot.State
				var err error
				switch s.op {
				case "commit":
					got, err = Commit(r.bootDir, s.arg)
				case "boot":
					got = before.Decide().Next
					if err := slot.Save(r.bootDir, got); err != nil {
						t.Fatal(err)
					}
				case "confirm":
					got, err = Confirm(r.bootDir, s.arg)
				case "rollback":
					check := s.check
					if check == nil {
						check = invalid // must not be needed
					}
					got, err = Rollback(r.bootDir, s.arg, check)
				}
				if s.wantErr != nil {
					if !errors.Is(err, s.wantErr) {
						t.Fatalf("step %d: %s(%s) error = %v, want %v", i, s.op, s.arg, err, s.wantErr)
					}
					if after := r.state(t); !equalState(after, before) {
						t.Fatalf("step %d: failed %s changed slot.json to %+v", i, s.op, after)
					}
					continue
				}
				if err != nil {
					t.Fatalf("step %d: %s(%s) = %v", i, s.op, s.arg, err)
				}
				if !equalState(got, s.want) {
					t.Fatalf("step %d: %s(%s) = %+v, want %+v", i, s.op, s.arg, got, s.want)
				}
				if saved := r.state(t); !equalState(saved, s.want) {
					t.Fatalf("step %d: slot.json after %s = %+v, want %+v", i, s.op, saved, s.want)
				}
			}
		})
	}
}

func equalState(a, b slot.State) bool {
	if a.Active != b.Active || a.Trial != b.Trial || a.TriesLeft != b.TriesLeft || (a.LastFailed == nil) != (b.LastFailed == nil) {
		return false
	}
	return a.LastFailed == nil || *a.LastFailed == *b.LastFailed
}

func TestManagerCommitAndRollback(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, slot.Initial())
	m := r.manager(t, slot.A)
	img := fakeRoot(100_000, 5)
	if _, err := m.WriteRoot(ctx, bytes.NewReader(img), int64(len(img)), sum(img), runtime.GOARCH, 0); err != nil {
		t.Fatal(err)
	}
	s, err := m.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := (mgmt.SlotState{Active: "a", Trial: "b", TriesLeft: 1}); s != want {
		t.Errorf("Commit = %+v, want %+v", s, want)
	}
	if _, err := m.Commit(ctx); !errors.Is(err, mgmt.ErrConflict) {
		t.Errorf("second Commit = %v, want ErrConflict", err)
	}

	// A rejected push leaves the staged trial alone.
	if _, err := m.WriteRoot(ctx, strings.NewReader("nope"), 200, sum(img), runtime.GOARCH, 0); !errors.Is(err, mgmt.ErrRejected) {
		t.Fatalf("WriteRoot(garbage) = %v, want ErrRejected", err)
	}
	if got := r.state(t); got.Trial != slot.B {
		t.Errorf("slot.json after a rejected push = %+v, want the trial of b kept", got)
	}
	// A push that starts writing over the staged trial cancels it first.
	short := img[:50_000]
	if _, err := m.WriteRoot(ctx, bytes.NewReader(short), int64(len(img)), sum(img), runtime.GOARCH, 0); !errors.Is(err, mgmt.ErrRejected) {
		t.Fatalf("WriteRoot(truncated) = %v, want ErrRejected", err)
	}
	if got := r.state(t); got.Trial != "" || got.Active != slot.A {
		t.Errorf("slot.json after a failed write over the trial slot = %+v, want no trial", got)
	}

	// Rollback with nothing pending: slot b was invalidated, so no.
	if _, err := m.Rollback(ctx); !errors.Is(err, mgmt.ErrConflict) {
		t.Errorf("Rollback to the invalidated slot = %v, want ErrConflict", err)
	}
	if _, err := m.WriteRoot(ctx, bytes.NewReader(img), int64(len(img)), sum(img), runtime.GOARCH, 0); err != nil {
		t.Fatal(err)
	}
	if s, err := m.Rollback(ctx); err != nil || s.Trial != "b" {
		t.Errorf("Rollback to the rewritten slot = %+v, %v, want a trial of b", s, err)
	}
}

func TestManagerDuringTrialBoot(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, slot.State{Active: slot.A, Trial: slot.B})
	m := r.manager(t, slot.B) // running the unconfirmed trial
	img := fakeRoot(100_000, 6)
	if _, err := m.WriteRoot(ctx, bytes.NewReader(img), int64(len(img)), sum(img), runtime.GOARCH, 0); !errors.Is(err, mgmt.ErrConflict) {
		t.Errorf("WriteRoot during a trial boot = %v, want ErrConflict", err)
	}
	if got := r.partition(t, slot.A); !bytes.Equal(got, r.old[slot.A]) {
		t.Error("the fallback slot a changed")
	}
	if s, err := m.Confirm(); err != nil || s.Active != slot.B {
		t.Errorf("Confirm = %+v, %v, want b active", s, err)
	}
	// Now a is the update slot again.
	if _, err := m.WriteRoot(ctx, bytes.NewReader(img), int64(len(img)), sum(img), runtime.GOARCH, 0); err != nil {
		t.Errorf("WriteRoot after the confirm = %v", err)
	}
}

func TestManagerOneAtATime(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, slot.Initial())
	m := r.manager(t, slot.A)
	img := fakeRoot(100_000, 7)
	release := make(chan struct{})
	started := make(chan struct{})
	body := io.MultiReader(bytes.NewReader(img[:10_000]), readerFunc(func([]byte) (int, error) {
		close(started)
		<-release
		return 0, io.EOF
	}), bytes.NewReader(img[10_000:]))
	done := make(chan error)
	go func() {
		_, err := m.WriteRoot(ctx, body, int64(len(img)), sum(img), runtime.GOARCH, 0)
		done <- err
	}()
	<-started
	if _, err := m.WriteRoot(ctx, bytes.NewReader(img), int64(len(img)), sum(img), runtime.GOARCH, 0); !errors.Is(err, mgmt.ErrConflict) {
		t.Errorf("concurrent WriteRoot = %v, want ErrConflict", err)
	}
	if _, err := m.Commit(ctx); !errors.Is(err, mgmt.ErrConflict) {
		t.Errorf("Commit during WriteRoot = %v, want ErrConflict", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Errorf("first WriteRoot = %v", err)
	}
}

func TestBootFiles(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, slot.Initial())
	if err := os.WriteFile(filepath.Join(r.bootDir, "vmlinuz"), []byte("old kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := r.manager(t, slot.A)
	kernel := []byte("new kernel")
	if _, err := m.WriteBootFile(ctx, "vmlinuz", bytes.NewReader(kernel), int64(len(kernel)), sum(kernel)); !errors.Is(err, mgmt.ErrConflict) {
		t.Errorf("WriteBootFile before WriteRoot = %v, want ErrConflict", err)
	}
	img := fakeRoot(100_000, 8)
	if _, err := m.WriteRoot(ctx, bytes.NewReader(img), int64(len(img)), sum(img), runtime.GOARCH, 0); err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		name, file string
		body       []byte
		sha        string
		want       error
	}{
		{"wrong sha256", "vmlinuz", kernel, sum([]byte("other")), mgmt.ErrRejected},
		{"not a boot file", "slot.json", kernel, sum(kernel), mgmt.ErrNotFound},
		{"path", "../x", kernel, sum(kernel), mgmt.ErrNotFound},
	}
	for _, tt := range bad {
		if _, err := m.WriteBootFile(ctx, tt.file, bytes.NewReader(tt.body), int64(len(tt.body)), tt.sha); !errors.Is(err, tt.want) {
			t.Errorf("%s: WriteBootFile = %v, want %v", tt.name, err, tt.want)
		}
	}
	if staged, _ := StagedBootFiles(r.bootDir); len(staged) != 0 {
		t.Errorf("staged after rejected files: %v, want none", staged)
	}
	res, err := m.WriteBootFile(ctx, "vmlinuz", bytes.NewReader(kernel), int64(len(kernel)), sum(kernel))
	if err != nil || res.SHA256 != sum(kernel) || res.File != "vmlinuz" {
		t.Fatalf("WriteBootFile = %+v, %v", res, err)
	}
	if got, _ := os.ReadFile(filepath.Join(r.bootDir, "vmlinuz.b")); got != nil {
		t.Errorf("vmlinuz.b before commit = %q, want none", got)
	}
	if _, err := m.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// The kernel went to slot b's own copy; slot a still boots the shared
	// file of the old image.
	if got, _ := os.ReadFile(filepath.Join(r.bootDir, "vmlinuz.b")); string(got) != "new kernel" {
		t.Errorf("vmlinuz.b after commit = %q, want the new kernel", got)
	}
	if got, _ := os.ReadFile(filepath.Join(r.bootDir, "vmlinuz")); string(got) != "old kernel" {
		t.Errorf("shared vmlinuz after commit = %q, want the old kernel, untouched", got)
	}
	hashes, err := m.BootFiles(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := hashes.Slots["a"]["vmlinuz"], sum([]byte("old kernel")); got != want {
		t.Errorf("BootFiles a/vmlinuz = %s, want %s (the shared file)", got, want)
	}
	if got, want := hashes.Slots["b"]["vmlinuz"], sum(kernel); got != want {
		t.Errorf("BootFiles b/vmlinuz = %s, want %s (slot b's copy)", got, want)
	}
	if _, ok := hashes.Slots["a"]["initrd.img"]; ok {
		t.Errorf("BootFiles a has initrd.img, but the boot partition has none")
	}
	entries, _ := os.ReadDir(r.bootDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("left behind on the boot partition: %s", e.Name())
		}
	}
}

// TestWriteRootRealSquashfs writes an image made by mksquashfs and reads
// it back from the partition with unsquashfs, so the superblock offsets the
// checks use are the real ones.
func TestWriteRootRealSquashfs(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(filepath.Join(src, "etc", "ingot"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "etc", "ingot", "appliance.json"), []byte(`{"name":"x"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "root.squashfs")
	if out, err := exec.Command("mksquashfs", src, img, "-noappend", "-quiet").CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs (from squashfs-tools): %v\n%s", err, out)
	}
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, slot.Initial())
	p, err := OpenFile(r.parts[slot.B])
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := WriteRoot(context.Background(), p, p.SizeBytes(), bytes.NewReader(data), int64(len(data)), sum(data), runtime.GOARCH); err != nil {
		t.Fatal(err)
	}
	if err := ValidRoot(p, p.SizeBytes()); err != nil {
		t.Errorf("ValidRoot = %v", err)
	}
	out, err := exec.Command("unsquashfs", "-cat", r.parts[slot.B], "etc/ingot/appliance.json").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `{"name":"x"}`) {
		t.Errorf("unsquashfs -cat on the written partition: %v\n%s", err, out)
	}
}
