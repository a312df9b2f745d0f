package flatten

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/packer/rootfs"
)

// TestFlattenBoundedMemory flattens a layer with a 128 MiB file and checks
// that the heap does not grow with it: contents stay in the layer file.
func TestFlattenBoundedMemory(t *testing.T) {
	const fileBytes = 128 << 20
	p := filepath.Join(t.TempDir(), "big.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	if err := tw.WriteHeader(&tar.Header{Name: "big", Mode: 0o644, Size: fileBytes}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(tw, bytes.NewReader(bytes.Repeat([]byte("0123456789abcdef"), fileBytes/16)), fileBytes); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	tree, err := Flatten(context.Background(), []Layer{{Digest: "sha256:big", Path: p}})
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if grew := int64(after.TotalAlloc - before.TotalAlloc); grew > 4<<20 {
		t.Errorf("Flatten allocated %d bytes for a %d-byte file; want contents left in the layer", grew, fileBytes)
	}
	e, _ := tree.Get("/big")
	rc, err := e.Content.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	n, err := io.Copy(io.Discard, rc)
	if err != nil || n != fileBytes || e.Size != fileBytes {
		t.Errorf("/big: read %d bytes (%v), size %d, want %d", n, err, e.Size, fileBytes)
	}
}

// TestFlattenSparse reads GNU tar's sparse files, which archive/tar
// expands and Flatten copies out (a spool directory, or memory).
func TestFlattenSparse(t *testing.T) {
	src := t.TempDir()
	sparsePath := filepath.Join(src, "sparse")
	f, err := os.Create(sparsePath)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("head"), 0)
	f.WriteAt([]byte("tail"), 8<<20)
	f.Close()
	if err := os.WriteFile(filepath.Join(src, "plain"), []byte("plain"), 0o644); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(sparsePath)
	for _, format := range []string{"pax", "gnu"} {
		layer := filepath.Join(t.TempDir(), "layer.tar")
		if out, err := exec.Command("tar", "--sparse", "--format="+format, "-cf", layer, "-C", src, "sparse", "plain").CombinedOutput(); err != nil {
			t.Fatalf("tar: %v: %s", err, out)
		}
		for _, spool := range []string{"", t.TempDir()} {
			tree, err := Flatten(context.Background(), []Layer{{Digest: "sha256:sparse", Path: layer}}, WithSpoolDir(spool))
			if err != nil {
				t.Fatalf("Flatten(%s sparse) = %v", format, err)
			}
			for p, w := range map[string][]byte{"/sparse": want, "/plain": []byte("plain")} {
				if got := readAll(t, tree, p); !bytes.Equal(got, w) {
					t.Errorf("Flatten(%s sparse, spool %q): %s = %d bytes, want %d", format, spool, p, len(got), len(w))
				}
			}
			if e, _ := tree.Get("/sparse"); spool != "" {
				if _, ok := e.Content.(rootfs.HostFile); !ok {
					t.Errorf("sparse content with a spool dir is %T, want a spooled file", e.Content)
				}
			}
		}
	}
}

func readAll(t *testing.T, tree *rootfs.Tree, p string) []byte {
	t.Helper()
	e, ok := tree.Get(p)
	if !ok || e.Kind != rootfs.KindFile {
		t.Fatalf("%s missing or not a file", p)
	}
	rc, err := e.Content.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFlattenSparseBomb performs the sparse-file bomb: a tar of a few
// kilobytes declares a 32 GiB file of holes, which the spool would write out
// in full and fill the build host's disk. The default bound refuses it,
// naming the layer and the entry, before a byte is spooled.
func TestFlattenSparseBomb(t *testing.T) {
	src := t.TempDir()
	f, err := os.Create(filepath.Join(src, "bomb"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(32 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	layer := filepath.Join(t.TempDir(), "bomb.tar")
	if out, err := exec.Command("tar", "--sparse", "--format=pax", "-cf", layer, "-C", src, "bomb").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
	if fi, err := os.Stat(layer); err != nil || fi.Size() > 1<<20 {
		t.Fatalf("bomb layer: %v, %v; want a small tar", fi, err)
	}
	spool := t.TempDir()
	_, err = Flatten(context.Background(), []Layer{{Digest: "sha256:bomb", Path: layer}}, WithSpoolDir(spool))
	var fe *Error
	if !errors.As(err, &fe) || fe.Layer != "sha256:bomb" || fe.Path != "bomb" || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("Flatten(32 GiB sparse file) = %v, want an *Error naming layer sha256:bomb, entry bomb and the limit", err)
	}
	if left, _ := os.ReadDir(spool); len(left) != 0 {
		t.Errorf("spool holds %d files after the refusal, want none", len(left))
	}
	// A small explicit bound refuses an ordinary file too.
	l := writeLayer(t, t.TempDir(), 0, []ent{{typ: tar.TypeReg, name: "big", mode: 0o644, body: strings.Repeat("x", 4096)}})
	if _, err := Flatten(context.Background(), []Layer{l}, WithMaxBytes(4095)); !errors.As(err, &fe) || fe.Path != "big" {
		t.Errorf("Flatten(4096-byte file, WithMaxBytes(4095)) = %v, want an *Error for big", err)
	}
	if _, err := Flatten(context.Background(), []Layer{l}, WithMaxBytes(4096)); err != nil {
		t.Errorf("Flatten(4096-byte file, WithMaxBytes(4096)) = %v, want it accepted", err)
	}
}
