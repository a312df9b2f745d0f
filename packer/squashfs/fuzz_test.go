package squashfs

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	format "github.com/ingotdev/ingot/packer/format/squashfs"
	"github.com/ingotdev/ingot/packer/rootfs"
)

// FuzzWrite builds trees from the input bytes (names, sizes, contents,
// modes, link graphs, devices, xattrs) and checks that unsquashfs extracts
// every image without complaint and exactly, and that the image does not
// depend on the number of workers. Without -fuzz it runs the seeds.
func FuzzWrite(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 'a', 1, 0, 'b', 40, 3, 2})
	f.Add([]byte("\x00d\x01\x01f\xff\x10\x03\x03\x00\x04\x01\x05\x02\x07\x01\x20"))
	f.Add(bytes.Repeat([]byte{1, 0, 'x', 200, 1, 2}, 40))
	f.Add([]byte("\xf7\x00\x05\x01\x00\x04\x00\x00\x01\x00\x00\x01\x00\x00\x00\x04\x01\x00\x07\x00\x04\x00\x03\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tree, opts := fuzzTree(data)
		wants, paths, err := expect(tree)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		img := writeImage(t, tree, dir, opts...)
		out := filepath.Join(dir, "x")
		run(t, "unsquashfs", "-no-progress", "-strict-errors", "-d", out, img)
		compareTree(t, out, wants, paths, compareOptions{symlinkTimes: true})

		var a, b seekBuffer
		if err := Write(context.Background(), &a, tree, append(opts, WithWorkers(1))...); err != nil {
			t.Fatal(err)
		}
		if err := Write(context.Background(), &b, tree, append(opts, WithWorkers(5))...); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a.b, b.b) {
			t.Error("images written with 1 and 5 workers differ")
		}
	})
}

// fuzzReader hands out input bytes, then zeros.
type fuzzReader struct{ data []byte }

func (r *fuzzReader) byte() byte {
	if len(r.data) == 0 {
		return 0
	}
	b := r.data[0]
	r.data = r.data[1:]
	return b
}

func (r *fuzzReader) uint16() int { return int(r.byte())<<8 | int(r.byte()) }

// name returns a valid, usually short directory entry name.
func (r *fuzzReader) name() string {
	n := int(r.byte())
	switch {
	case n < 200:
		n = n%8 + 1
	case n < 250:
		n = n % 64
	default:
		n = rootfs.MaxNameBytes
	}
	b := make([]byte, max(n, 1))
	for i := range b {
		c := r.byte()
		if c == 0 || c == '/' {
			c = 'a' + c%26
		}
		b[i] = c
	}
	s := string(b)
	if s == "." || s == ".." {
		s += "_"
	}
	return s
}

const fuzzBlockBytes = format.MinBlockBytes

// fuzzTree decodes data into a tree and writer options. Invalid steps
// (a name that exists, say) are skipped: the tree rejects them itself.
func fuzzTree(data []byte) (*rootfs.Tree, []Option) {
	r := &fuzzReader{data: data}
	tree := rootfs.New(testTime)
	dirs := []string{"/"}
	var others []string // non-directories, targets for hard links
	var contents []rootfs.Bytes
	comp := []Compression{Zstd, Gzip, None}[r.byte()%3]
	// Files with a name of even length are stored raw, so that identical
	// contents under different names are stored both ways.
	storeRaw := func(path string, _ []byte) bool { return len(path)%2 == 0 }
	opts := []Option{WithCompression(comp), WithBlockSize(fuzzBlockBytes), WithUncompressed(storeRaw)}

	for steps := 0; len(r.data) > 0 && steps < 300; steps++ {
		op := r.byte()
		parent := dirs[int(r.byte())%len(dirs)]
		p := rootfs.Join(parent, r.name())
		e := rootfs.Entry{
			Mode:    uint32(r.uint16()) & rootfs.PermMask,
			UID:     uint32(r.byte()%4) * 1000,
			GID:     uint32(r.byte() % 3),
			ModTime: int64(r.uint16()) * 65537,
		}
		if op&0x80 != 0 {
			e.Xattrs = map[string][]byte{
				[]string{"user.", "trusted.", "security."}[op%3] + "k" + fmt.Sprint(op%5): bytes.Repeat([]byte{op}, int(r.byte()%50)),
			}
		}
		switch op % 8 {
		case 0:
			e.Kind = rootfs.KindDir
		case 1, 2:
			e.Kind = rootfs.KindFile
			c := fuzzContent(r, contents)
			contents = append(contents, c)
			e.Content, e.Size = c, int64(len(c))
		case 3:
			e.Kind, e.Xattrs = rootfs.KindSymlink, nil
			e.Target = r.name()
		case 4:
			if len(others) == 0 {
				continue
			}
			e = rootfs.Entry{Kind: rootfs.KindHardlink, Target: others[r.uint16()%len(others)]}
		case 5:
			e.Kind, e.Xattrs = rootfs.KindCharDevice, nil
			if op&0x40 != 0 {
				e.Kind = rootfs.KindBlockDevice
			}
			e.DevMajor, e.DevMinor = uint32(r.uint16())%(maxDevMajor+1), uint32(r.uint16())<<4|uint32(r.byte()%16)
		case 6:
			e.Kind, e.Xattrs = rootfs.KindFIFO, nil
			if op&0x40 != 0 {
				e.Kind = rootfs.KindSocket
			}
		case 7:
			if op>>4 != 0xf {
				continue
			}
			// Rarely, a wide directory: several directory headers.
			if err := tree.Add(p, rootfs.Entry{Kind: rootfs.KindDir, Mode: 0o755, ModTime: testTime}); err != nil {
				continue
			}
			dirs = append(dirs, p)
			for i := range 250 + int(r.byte()%20) {
				q := rootfs.Join(p, fmt.Sprintf("%03d", i))
				if tree.Add(q, rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o644, ModTime: testTime, Content: rootfs.Bytes(q), Size: int64(len(q))}) == nil {
					others = append(others, q)
				}
			}
			continue
		}
		if tree.Add(p, e) != nil {
			continue
		}
		if e.Kind == rootfs.KindDir {
			dirs = append(dirs, p)
		} else {
			others = append(others, p)
		}
	}
	return tree, opts
}

// fuzzContent returns file bytes: empty, zeros (sparse blocks), a repeated
// byte, random bytes, or a copy of an earlier file (a duplicate).
func fuzzContent(r *fuzzReader, earlier []rootfs.Bytes) rootfs.Bytes {
	kind := r.byte()
	if kind%5 == 4 && len(earlier) > 0 {
		return earlier[int(r.byte())%len(earlier)]
	}
	size := r.uint16() % (3*fuzzBlockBytes + 100)
	if r.byte()%4 == 0 {
		size = r.uint16() // up to 16 blocks
	}
	b := make([]byte, size)
	switch kind % 5 {
	case 0: // zeros
	case 1:
		for i := range b {
			b[i] = kind
		}
	default:
		rand.NewChaCha8([32]byte{kind, r.byte()}).Read(b)
		if kind%5 == 3 && size > fuzzBlockBytes {
			clear(b[fuzzBlockBytes : 2*min(size/2, fuzzBlockBytes)])
		}
	}
	return b
}
