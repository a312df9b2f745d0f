package update

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/format/slot"
)

func writeBoot(t *testing.T, bootDir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(bootDir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func kernelHash(t *testing.T, bootDir string, sl slot.Name) string {
	t.Helper()
	h, err := BootFileHashes(bootDir, sl)
	if err != nil {
		t.Fatal(err)
	}
	return h[string(sl)][layout.KernelFile]
}

// TestBootFileHashesServesRecord shows that BootFileHashes does not read
// a file the record vouches for: the file is replaced behind the record's
// back by other content of the same size, and the recorded digest is
// still the answer. (Nothing but the agent writes these files; the swap
// stands in for a counter of reads.) A record whose size is not the
// file's is not trusted, and is repaired.
func TestBootFileHashesServesRecord(t *testing.T) {
	r := newRig(t, slot.Initial())
	writeBoot(t, r.bootDir, "vmlinuz.b", "kernel one")
	writeBoot(t, r.bootDir, "initrd.img.b", "initrd one")
	writeBoot(t, r.bootDir, "cmdline.txt.b", "console=ttyS0\n")

	if got, want := kernelHash(t, r.bootDir, slot.B), sum([]byte("kernel one")); got != want {
		t.Fatalf("first BootFileHashes: vmlinuz = %s, want %s", got, want)
	}
	d := readDigests(r.bootDir)
	for _, p := range []string{"vmlinuz.b", "initrd.img.b", "cmdline.txt.b"} {
		if _, ok := d.Files[p]; !ok {
			t.Errorf("%s after the first BootFileHashes has no entry for %s: %+v", layout.DigestsFile, p, d.Files)
		}
	}

	writeBoot(t, r.bootDir, "vmlinuz.b", "kernel two") // same size
	if got, want := kernelHash(t, r.bootDir, slot.B), sum([]byte("kernel one")); got != want {
		t.Errorf("after a same-size swap: vmlinuz = %s, want the recorded %s: the file was read again", got, want)
	}

	writeBoot(t, r.bootDir, "vmlinuz.b", "kernel three") // another size
	if got, want := kernelHash(t, r.bootDir, slot.B), sum([]byte("kernel three")); got != want {
		t.Errorf("after a size change: vmlinuz = %s, want %s (the record's size does not match)", got, want)
	}
	if got := readDigests(r.bootDir).Files["vmlinuz.b"]; got.SHA256 != sum([]byte("kernel three")) || got.Size != int64(len("kernel three")) {
		t.Errorf("record after the re-hash = %+v, want it repaired", got)
	}

	// A corrupt record is no record: everything is hashed again.
	writeBoot(t, r.bootDir, layout.DigestsFile, "{not json")
	if got, want := kernelHash(t, r.bootDir, slot.B), sum([]byte("kernel three")); got != want {
		t.Errorf("with a corrupt record: vmlinuz = %s, want %s", got, want)
	}
	if _, err := layout.ParseDigests(mustRead(t, filepath.Join(r.bootDir, layout.DigestsFile))); err != nil {
		t.Errorf("corrupt record not repaired: %v", err)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCommitRecordsDigests shows that a commit leaves the record right
// without hashing: the new kernel, of the old one's size, is served with
// its verified digest (the record's old entry is not), and a swap behind
// the record's back afterwards shows the answer comes from the record.
// ApplyBootFiles without verified digests drops the replaced files'
// entries, so they are hashed again rather than served stale.
func TestCommitRecordsDigests(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, slot.Initial())
	writeBoot(t, r.bootDir, "vmlinuz.b", "kernel one")
	if got, want := kernelHash(t, r.bootDir, slot.B), sum([]byte("kernel one")); got != want {
		t.Fatalf("BootFileHashes = %s, want %s", got, want)
	}
	m := r.manager(t, slot.A)
	img := fakeRoot(100_000, 9)
	if _, err := m.WriteRoot(ctx, bytes.NewReader(img), int64(len(img)), sum(img), runtime.GOARCH, 0); err != nil {
		t.Fatal(err)
	}
	kernel := []byte("kernel two") // the old one's size
	if _, err := m.WriteBootFile(ctx, layout.KernelFile, bytes.NewReader(kernel), int64(len(kernel)), sum(kernel)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := readDigests(r.bootDir).Files["vmlinuz.b"]; got.SHA256 != sum(kernel) {
		t.Errorf("record after commit: vmlinuz.b = %+v, want the new kernel's digest %s", got, sum(kernel))
	}
	writeBoot(t, r.bootDir, "vmlinuz.b", "kernel 3rd")
	hashes, err := m.BootFiles(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := hashes.Slots["b"][layout.KernelFile], sum(kernel); got != want {
		t.Errorf("BootFiles after commit and a swap: vmlinuz = %s, want the committed %s from the record", got, want)
	}

	// The package function knows no verified digests.
	writeBoot(t, r.bootDir, "vmlinuz.b", "kernel two")
	if got := kernelHash(t, r.bootDir, slot.B); got != sum(kernel) {
		t.Fatalf("BootFileHashes = %s, want %s", got, sum(kernel))
	}
	four := []byte("kernel 4th")
	if _, err := StageBootFile(ctx, r.bootDir, layout.KernelFile, slot.B, bytes.NewReader(four), int64(len(four)), sum(four)); err != nil {
		t.Fatal(err)
	}
	if _, err := ApplyBootFiles(r.bootDir); err != nil {
		t.Fatal(err)
	}
	if got, want := kernelHash(t, r.bootDir, slot.B), sum(four); got != want {
		t.Errorf("after ApplyBootFiles: vmlinuz = %s, want %s (the stale entry must be gone)", got, want)
	}
}
