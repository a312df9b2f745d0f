package flatten

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/packer/rootfs"
)

// fuzzNames are the path components fuzz entries are made of: enough to
// collide, climb, whiteout and link.
var fuzzNames = []string{"a", "b", "c", "..", ".", "", ".wh.a", ".wh.b", ".wh..wh..opq", ".wh..wh.plnk", "/etc", "d"}

var fuzzTypes = []byte{tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeChar, tar.TypeFifo, tar.TypeBlock}

// fuzzBytes hands out the fuzzer's bytes, zeros once they run out.
type fuzzBytes struct{ b []byte }

func (r *fuzzBytes) next() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *fuzzBytes) path() string {
	n := 1 + int(r.next()%4)
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fuzzNames[int(r.next())%len(fuzzNames)]
	}
	return strings.Join(parts, "/")
}

// fuzzLayers turns data into up to three layers of up to 12 entries each.
func fuzzLayers(data []byte) [][]ent {
	r := &fuzzBytes{data}
	layers := make([][]ent, 1+int(r.next()%3))
	for i := range layers {
		for range int(r.next() % 13) {
			e := ent{typ: fuzzTypes[int(r.next())%len(fuzzTypes)], name: r.path(), mode: int64(r.next()) << 4}
			switch e.typ {
			case tar.TypeReg:
				e.body = strings.Repeat("x", int(r.next()%5))
			case tar.TypeSymlink, tar.TypeLink:
				e.link = r.path()
				if e.link == "" {
					e.link = "a"
				}
			}
			layers[i] = append(layers[i], e)
		}
	}
	return layers
}

// FuzzFlatten checks that any sequence of layers either flattens into a
// well-formed tree inside the root or fails with an error naming the
// layer, and never panics.
func FuzzFlatten(f *testing.F) {
	f.Add([]byte{1, 3, 0, 1, 0, 2, 1, 2, 0, 0, 3, 3, 5, 1, 0, 0})
	f.Add([]byte{2, 4, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 3, 2, 1})
	f.Add([]byte("hardlink whiteout opaque symlink escape"))
	f.Fuzz(func(t *testing.T, data []byte) {
		layers := fuzzLayers(data)
		dir := t.TempDir()
		var ls []Layer
		for i, entries := range layers {
			l, err := writeFuzzLayer(dir, i, entries)
			if err != nil {
				return // not encodable by archive/tar; nothing to test
			}
			ls = append(ls, l)
		}
		tree, err := Flatten(context.Background(), ls)
		if err != nil {
			var fe *Error
			if !errors.As(err, &fe) && !strings.Contains(err.Error(), "sha256:fuzz") {
				t.Fatalf("Flatten error %v names no layer", err)
			}
			return
		}
		checkTree(t, tree)
	})
}

func writeFuzzLayer(dir string, n int, entries []ent) (Layer, error) {
	p := filepath.Join(dir, fmt.Sprintf("l%d.tar", n))
	f, err := os.Create(p)
	if err != nil {
		return Layer{}, err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, e := range entries {
		hdr := &tar.Header{Typeflag: e.typ, Name: e.name, Linkname: e.link, Mode: e.mode, Size: int64(len(e.body)), Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return Layer{}, err
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			return Layer{}, err
		}
	}
	if err := tw.Close(); err != nil {
		return Layer{}, err
	}
	return Layer{Digest: fmt.Sprintf("sha256:fuzz%d", n), Path: p}, nil
}

// checkTree checks what any flattened tree must satisfy: valid absolute
// paths, hard links naming an existing non-directory that is not itself a
// link, file contents of the stated size.
func checkTree(t *testing.T, tree *rootfs.Tree) {
	err := tree.Walk(func(p string, e *rootfs.Entry) error {
		if _, err := rootfs.SplitPath(p); err != nil {
			return err
		}
		switch e.Kind {
		case rootfs.KindHardlink:
			te, ok := tree.Get(e.Target)
			if !ok || te.Kind == rootfs.KindDir || te.Kind == rootfs.KindHardlink {
				return fmt.Errorf("%s: hardlink to %s (%v, %v)", p, e.Target, ok, te.Kind)
			}
		case rootfs.KindFile:
			if e.Size > 0 {
				rc, err := e.Content.Open()
				if err != nil {
					return err
				}
				n, err := io.Copy(io.Discard, rc)
				rc.Close()
				if err != nil || n != e.Size {
					return fmt.Errorf("%s: read %d bytes (%v), size %d", p, n, err, e.Size)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
