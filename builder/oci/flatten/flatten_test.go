package flatten

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/ingotdev/ingot/packer/rootfs"
)

// ent is a tar entry to put in a test layer.
type ent struct {
	typ      byte
	name     string
	link     string
	body     string
	mode     int64
	uid, gid int
	major    int64
	minor    int64
	xattrs   map[string]string
}

func file(name, body string) ent { return ent{typ: tar.TypeReg, name: name, body: body, mode: 0o644} }
func dir(name string) ent        { return ent{typ: tar.TypeDir, name: name, mode: 0o755} }
func symlink(name, to string) ent {
	return ent{typ: tar.TypeSymlink, name: name, link: to, mode: 0o777}
}
func hardlink(name, to string) ent  { return ent{typ: tar.TypeLink, name: name, link: to, mode: 0o644} }
func whiteout(dir, name string) ent { return file(strings.TrimSuffix(dir, "/")+"/.wh."+name, "") }
func opaque(dir string) ent         { return file(strings.TrimSuffix(dir, "/")+"/"+opaqueMarker, "") }

// writeLayer writes entries as a tar file in dir and returns the layer.
func writeLayer(t testing.TB, dir string, n int, entries []ent) Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Typeflag: e.typ, Name: e.name, Linkname: e.link, Mode: e.mode, Uid: e.uid, Gid: e.gid,
			Size: int64(len(e.body)), Devmajor: e.major, Devminor: e.minor, ModTime: time.Unix(1000+int64(n), 0),
			Format: tar.FormatPAX}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		for k, v := range e.xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("layer %d: %s: %v", n, e.name, err)
		}
		if hdr.Size > 0 {
			if _, err := io.WriteString(tw, e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, fmt.Sprintf("layer%d.tar", n))
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return Layer{Digest: fmt.Sprintf("sha256:layer%d", n), Path: p}
}

func flattenLayers(t testing.TB, layers ...[]ent) (*rootfs.Tree, error) {
	t.Helper()
	dir := t.TempDir()
	var ls []Layer
	for i, entries := range layers {
		ls = append(ls, writeLayer(t, dir, i, entries))
	}
	return Flatten(context.Background(), ls)
}

// describe renders a tree as path -> "kind mode uid:gid detail", reading
// file contents.
func describe(t testing.TB, tree *rootfs.Tree) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := tree.Walk(func(p string, e *rootfs.Entry) error {
		if p == "/" {
			return nil
		}
		s := fmt.Sprintf("%v %o %d:%d", e.Kind, e.Mode, e.UID, e.GID)
		switch e.Kind {
		case rootfs.KindFile:
			rc, err := e.Content.Open()
			if err != nil {
				return err
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				return err
			}
			if int64(len(b)) != e.Size {
				return fmt.Errorf("%s: content %d bytes, size %d", p, len(b), e.Size)
			}
			s += " " + string(b)
		case rootfs.KindSymlink, rootfs.KindHardlink:
			s += " -> " + e.Target
		case rootfs.KindCharDevice, rootfs.KindBlockDevice:
			s += fmt.Sprintf(" %d,%d", e.DevMajor, e.DevMinor)
		}
		for k, v := range e.Xattrs {
			s += fmt.Sprintf(" %s=%s", k, v)
		}
		out[p] = s
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestFlatten(t *testing.T) {
	for _, tt := range []struct {
		name   string
		layers [][]ent
		want   map[string]string
	}{{
		name: "kinds, owners, modes, xattrs, implicit parents",
		layers: [][]ent{{
			{typ: tar.TypeReg, name: "./usr/bin/tool", body: "ELF", mode: 0o4755, uid: 0, gid: 50,
				xattrs: map[string]string{"security.capability": "\x01\x02"}},
			{typ: tar.TypeDir, name: "home/user/", mode: 0o700, uid: 1000, gid: 1000},
			symlink("bin", "usr/bin"),
			hardlink("usr/bin/tool2", "usr/bin/tool"),
			{typ: tar.TypeChar, name: "dev/null", mode: 0o666, major: 1, minor: 3},
			{typ: tar.TypeBlock, name: "dev/sda", mode: 0o660, major: 8, minor: 0},
			{typ: tar.TypeFifo, name: "run/fifo", mode: 0o600},
			file("/etc/abs", "absolute names stay inside"),
			file("a/b/../c", "cleaned"),
		}},
		want: map[string]string{
			"/usr":           "dir 755 0:0",
			"/usr/bin":       "dir 755 0:0",
			"/usr/bin/tool":  "file 4755 0:50 ELF security.capability=\x01\x02",
			"/usr/bin/tool2": "hardlink 0 0:0 -> /usr/bin/tool",
			"/home":          "dir 755 0:0",
			"/home/user":     "dir 700 1000:1000",
			"/bin":           "symlink 777 0:0 -> usr/bin",
			"/dev":           "dir 755 0:0",
			"/dev/null":      "char device 666 0:0 1,3",
			"/dev/sda":       "block device 660 0:0 8,0",
			"/run":           "dir 755 0:0",
			"/run/fifo":      "fifo 600 0:0",
			"/etc":           "dir 755 0:0",
			"/etc/abs":       "file 644 0:0 absolute names stay inside",
			"/a":             "dir 755 0:0",
			"/a/c":           "file 644 0:0 cleaned",
		},
	}, {
		name: "later layers replace; dir over dir merges",
		layers: [][]ent{
			{dir("d"), file("d/x", "old"), file("d/y", "y"), dir("f"), file("f/z", "z"), symlink("s", "d")},
			{{typ: tar.TypeDir, name: "d", mode: 0o750, uid: 7}, file("d/x", "new"), file("f", "file over dir"), dir("s")},
		},
		want: map[string]string{
			"/d":   "dir 750 7:0",
			"/d/x": "file 644 0:0 new",
			"/d/y": "file 644 0:0 y",
			"/f":   "file 644 0:0 file over dir",
			"/s":   "dir 755 0:0",
		},
	}, {
		name: "whiteouts of a file and a directory",
		layers: [][]ent{
			{file("etc/a", "a"), file("etc/b", "b"), file("var/cache/x/1", "1"), file("var/keep", "k")},
			{whiteout("etc", "a"), whiteout("var", "cache"), whiteout("nodir", "x"), whiteout("etc", "missing")},
		},
		want: map[string]string{
			"/etc":      "dir 755 0:0",
			"/etc/b":    "file 644 0:0 b",
			"/var":      "dir 755 0:0",
			"/var/keep": "file 644 0:0 k",
		},
	}, {
		name: "whiteout hides lower layers only, before or after the entry",
		layers: [][]ent{
			{file("x", "lower"), file("y", "lower")},
			{whiteout("", "x"), file("x", "upper"), file("y", "upper"), whiteout("", "y")},
		},
		want: map[string]string{
			"/x": "file 644 0:0 upper",
			"/y": "file 644 0:0 upper",
		},
	}, {
		name: "opaque directory keeps this layer's entries",
		layers: [][]ent{
			{file("d/lower", "l"), file("d/sub/lower", "l"), file("d/sub2/deep/x", "x"), file("e/kept", "k")},
			{file("d/sub/upper", "u"), opaque("d"), file("d/new", "n")},
		},
		want: map[string]string{
			"/d":           "dir 755 0:0",
			"/d/sub":       "dir 755 0:0",
			"/d/sub/upper": "file 644 0:0 u",
			"/d/new":       "file 644 0:0 n",
			"/e":           "dir 755 0:0",
			"/e/kept":      "file 644 0:0 k",
		},
	}, {
		name: "hardlink keeps old content when its target is replaced",
		layers: [][]ent{
			{file("bin/a", "old"), hardlink("bin/b", "bin/a"), hardlink("bin/c", "bin/b")},
			{file("bin/a", "new")},
		},
		want: map[string]string{
			"/bin":   "dir 755 0:0",
			"/bin/a": "file 644 0:0 new",
			"/bin/b": "file 644 0:0 old",
			"/bin/c": "hardlink 0 0:0 -> /bin/b",
		},
	}, {
		name: "hardlink keeps content when its target is whited out",
		layers: [][]ent{
			{file("a", "content"), hardlink("z", "a")},
			{whiteout("", "a")},
		},
		want: map[string]string{"/z": "file 644 0:0 content"},
	}, {
		name: "hardlink keeps content when its target's directory goes",
		layers: [][]ent{
			{file("lib/x.so", "so"), hardlink("usr/x.so", "lib/x.so"), hardlink("lib/y.so", "lib/x.so")},
			{whiteout("", "lib")},
		},
		want: map[string]string{
			"/usr":      "dir 755 0:0",
			"/usr/x.so": "file 644 0:0 so",
		},
	}, {
		name: "hardlink keeps content under an opaque directory",
		layers: [][]ent{
			{file("d/f", "f"), hardlink("g", "d/f")},
			{opaque("d")},
		},
		want: map[string]string{
			"/d": "dir 755 0:0",
			"/g": "file 644 0:0 f",
		},
	}, {
		name: "a deleted hardlink leaves its target alone",
		layers: [][]ent{
			{file("a", "a"), hardlink("b", "a")},
			{whiteout("", "b"), file("c", "c"), hardlink("d", "c"), file("d", "own")},
		},
		want: map[string]string{
			"/a": "file 644 0:0 a",
			"/c": "file 644 0:0 c",
			"/d": "file 644 0:0 own",
		},
	}} {
		t.Run(tt.name, func(t *testing.T) {
			tree, err := flattenLayers(t, tt.layers...)
			if err != nil {
				t.Fatalf("Flatten = %v", err)
			}
			if diff := cmp.Diff(tt.want, describe(t, tree)); diff != "" {
				t.Errorf("Flatten tree mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFlattenHostile(t *testing.T) {
	for _, tt := range []struct {
		name   string
		layers [][]ent
		path   string // the offending entry's name
		want   string
	}{
		{"dotdot", [][]ent{{file("../../x", "x")}}, "../../x", "escapes the root"},
		{"dotdot inside", [][]ent{{file("a/../../x", "x")}}, "a/../../x", "escapes the root"},
		{"write through symlink out", [][]ent{{symlink("evil", "/etc"), file("evil/passwd", "x")}}, "evil/passwd", "symlink"},
		{"write through relative symlink out", [][]ent{{symlink("evil", "../../.."), file("evil/x", "x")}}, "evil/x", "symlink"},
		{"write through symlink in a later layer", [][]ent{{symlink("lib", "usr/lib")}, {file("lib/x", "x")}}, "lib/x", "symlink"},
		{"whiteout through symlink", [][]ent{{symlink("l", "/"), file("etc/x", "x")}, {whiteout("l/etc", "x")}}, "l/etc/.wh.x", "symlink"},
		{"hardlink out", [][]ent{{hardlink("x", "../../etc/passwd")}}, "x", "escapes the root"},
		{"hardlink to missing", [][]ent{{hardlink("x", "/etc/shadow")}}, "x", "not in the image"},
		{"hardlink through symlink", [][]ent{{file("real/f", "f"), symlink("l", "real"), hardlink("x", "l/f")}}, "x", "not in the image"},
		{"hardlink to dir", [][]ent{{dir("d"), hardlink("x", "d")}}, "x", "directory"},
		{"file as parent", [][]ent{{file("f", "f"), file("f/x", "x")}}, "f/x", "not a directory"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tree, err := flattenLayers(t, tt.layers...)
			var fe *Error
			if !errors.As(err, &fe) {
				t.Fatalf("Flatten = %v, %v; want an *Error", tree != nil, err)
			}
			if tree != nil {
				t.Errorf("Flatten returned a tree with error %v", err)
			}
			n := len(tt.layers) - 1
			if fe.Layer != fmt.Sprintf("sha256:layer%d", n) || fe.Path != tt.path || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Flatten error = %v (layer %s, path %q), want layer%d, path %q, %q", err, fe.Layer, fe.Path, n, tt.path, tt.want)
			}
			if !strings.Contains(err.Error(), fe.Layer) || !strings.Contains(err.Error(), fmt.Sprintf("%q", tt.path)) {
				t.Errorf("Flatten error %q does not name the layer and path", err)
			}
		})
	}
}

func TestFlattenCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	l := writeLayer(t, t.TempDir(), 0, []ent{file("a", "a")})
	if _, err := Flatten(ctx, []Layer{l}); !errors.Is(err, context.Canceled) {
		t.Errorf("Flatten(cancelled) = %v, want context.Canceled", err)
	}
}

func TestFlattenBadTar(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.tar")
	if err := os.WriteFile(p, bytes.Repeat([]byte("x"), 1024), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Flatten(context.Background(), []Layer{{Digest: "sha256:bad", Path: p}}); err == nil || !strings.Contains(err.Error(), "sha256:bad") {
		t.Errorf("Flatten(garbage) = %v, want an error naming the layer", err)
	}
}

func TestFlattenRootEntry(t *testing.T) {
	tree, err := flattenLayers(t, []ent{{typ: tar.TypeDir, name: "./", mode: 0o700, uid: 3}, file("x", "x")})
	if err != nil {
		t.Fatal(err)
	}
	if e, _ := tree.Get("/"); e.Mode != 0o700 || e.UID != 3 {
		t.Errorf("root = %o %d, want 700 uid 3", e.Mode, e.UID)
	}
	if _, err := flattenLayers(t, []ent{file(".", "x")}); err == nil {
		t.Errorf("Flatten(root as a file) succeeded")
	}
}
