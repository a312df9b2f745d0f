package squashfs

import (
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/packer/rootfs"
)

// sparseContent is a file of zeros except for markWindow-byte windows of
// pattern at the given offsets, generated as it is read: a file of
// gigabytes costs no memory.
type sparseContent struct {
	size  int64
	marks []int64
}

const markWindow = 4096

func (c sparseContent) Open() (io.ReadCloser, error) {
	return &sparseReader{c: c}, nil
}

type sparseReader struct {
	c   sparseContent
	off int64
}

func (r *sparseReader) Read(p []byte) (int, error) {
	n, err := r.ReadAt(p, r.off)
	r.off += int64(n)
	return n, err
}

func (r *sparseReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.c.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), r.c.size-off))
	p = p[:n]
	clear(p)
	for _, m := range r.c.marks {
		for i := max(m, off); i < min(m+markWindow, off+int64(n)); i++ {
			p[i-off] = byte(i*7 + 1)
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (r *sparseReader) Close() error { return nil }

// textContent is compressible pseudo-text, generated as it is read.
type textContent struct {
	size int64
	seed uint64
}

func (c textContent) Open() (io.ReadCloser, error) {
	return io.NopCloser(io.LimitReader(&textReader{rng: rand.New(rand.NewPCG(c.seed, 1))}, c.size)), nil
}

type textReader struct{ rng *rand.Rand }

var words = strings.Fields("squashfs block fragment inode directory xattr the of and a kernel image zstd gzip")

func (r *textReader) Read(p []byte) (int, error) {
	for i := range p {
		if r.rng.IntN(6) == 0 {
			p[i] = ' '
			continue
		}
		w := words[r.rng.IntN(len(words))]
		p[i] = w[r.rng.IntN(len(w))]
	}
	return len(p), nil
}

// randomBytes returns incompressible bytes.
func randomBytes(n int, seed uint64) rootfs.Bytes {
	b := make([]byte, n)
	rng := rand.NewChaCha8([32]byte{byte(seed)})
	rng.Read(b)
	return b
}

const (
	gib      = int64(1) << 30
	testTime = 1700000000
)

// treeBuilder adds entries and fails the test on the first error.
type treeBuilder struct {
	t    testing.TB
	tree *rootfs.Tree
}

func (b treeBuilder) add(p string, e rootfs.Entry) {
	b.t.Helper()
	if e.ModTime == 0 && e.Kind != rootfs.KindHardlink {
		e.ModTime = testTime
	}
	if err := b.tree.Add(p, e); err != nil {
		b.t.Fatal(err)
	}
}

func (b treeBuilder) file(p string, mode uint32, c rootfs.Content, size int64) {
	b.t.Helper()
	b.add(p, rootfs.Entry{Kind: rootfs.KindFile, Mode: mode, Content: c, Size: size})
}

func (b treeBuilder) bytes(p string, data string) {
	b.t.Helper()
	b.file(p, 0o644, rootfs.Bytes(data), int64(len(data)))
}

func (b treeBuilder) dir(p string, mode uint32) {
	b.t.Helper()
	b.add(p, rootfs.Entry{Kind: rootfs.KindDir, Mode: mode})
}

// featureTree holds every kind of entry and every case the writer treats
// specially. With huge, it also holds a 5 GiB sparse file.
func featureTree(t testing.TB, huge bool) *rootfs.Tree {
	tree := rootfs.New(testTime)
	b := treeBuilder{t, tree}
	bs := int64(DefaultBlockBytes)

	// Sizes around block boundaries; incompressible and sparse blocks.
	b.dir("/sizes", 0o755)
	for _, n := range []int64{0, 1, 100, bs - 1, bs, bs + 1, 3*bs + 7, 8 * bs} {
		b.file(fmt.Sprintf("/sizes/text-%d", n), 0o644, textContent{n, uint64(n)}, n)
	}
	b.file("/sizes/random", 0o644, randomBytes(int(2*bs+500), 1), 2*bs+500)
	b.file("/sizes/hole-in-middle", 0o644, sparseContent{size: 5*bs + 3, marks: []int64{0, 4*bs + 10}}, 5*bs+3)
	b.file("/sizes/all-zero", 0o644, sparseContent{size: 3 * bs}, 3*bs)
	b.file("/sizes/zero-tail", 0o644, sparseContent{size: bs + 99, marks: []int64{5}}, bs+99)
	if huge {
		size := 5*gib + 12345
		b.file("/sizes/sparse-5g", 0o600, sparseContent{size: size, marks: []int64{0, 3 * gib, size - 100}}, size)
	}

	// Duplicates: small, tail-only and multi-block, and a same-size
	// impostor.
	b.dir("/dup", 0o755)
	for i := range 3 {
		b.file(fmt.Sprintf("/dup/big-%d", i), 0o644, textContent{4*bs + 17, 42}, 4*bs+17)
		b.file(fmt.Sprintf("/dup/block-%d", i), 0o644, textContent{bs, 43}, bs)
		b.bytes(fmt.Sprintf("/dup/small-%d", i), "same small content\n")
	}
	b.file("/dup/big-other", 0o644, textContent{4*bs + 17, 44}, 4*bs+17)
	b.bytes("/dup/small-other", "same small CONTENT\n")

	// Modes and owners.
	b.dir("/modes", 0o755)
	for i, mode := range []uint32{0, 0o4755, 0o2711, 0o6755, 0o1777, 0o4000, 0o777, 0o400} {
		b.add(fmt.Sprintf("/modes/f%d", i), rootfs.Entry{Kind: rootfs.KindFile, Mode: mode,
			UID: uint32(i * 1000), GID: uint32(i * 100), Content: rootfs.Bytes("m"), Size: 1})
	}
	b.add("/modes/sticky", rootfs.Entry{Kind: rootfs.KindDir, Mode: 0o1777, UID: 4000000000, GID: 65534})
	b.add("/modes/setgid-dir", rootfs.Entry{Kind: rootfs.KindDir, Mode: 0o2750, UID: 1000, GID: 1000})
	b.add("/modes/epoch", rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o644, ModTime: 1, Content: rootfs.Bytes("x"), Size: 1})
	b.add("/modes/far-future", rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o644, ModTime: 1<<32 - 1, Content: rootfs.Bytes("x"), Size: 1})

	// Links, devices, FIFOs, sockets.
	b.dir("/special", 0o755)
	b.add("/special/symlink", rootfs.Entry{Kind: rootfs.KindSymlink, Mode: 0o777, Target: "../sizes/text-100"})
	b.add("/special/long-symlink", rootfs.Entry{Kind: rootfs.KindSymlink, Mode: 0o777, Target: strings.Repeat("abcdefgh/", 455)})
	b.add("/special/null", rootfs.Entry{Kind: rootfs.KindCharDevice, Mode: 0o666, DevMajor: 1, DevMinor: 3})
	b.add("/special/sda1", rootfs.Entry{Kind: rootfs.KindBlockDevice, Mode: 0o660, GID: 6, DevMajor: 8, DevMinor: 1})
	b.add("/special/bigdev", rootfs.Entry{Kind: rootfs.KindBlockDevice, Mode: 0o600, DevMajor: 259, DevMinor: 70000})
	b.add("/special/maxdev", rootfs.Entry{Kind: rootfs.KindCharDevice, Mode: 0o600, DevMajor: maxDevMajor, DevMinor: maxDevMinor})
	b.add("/special/fifo", rootfs.Entry{Kind: rootfs.KindFIFO, Mode: 0o620})
	b.add("/special/socket", rootfs.Entry{Kind: rootfs.KindSocket, Mode: 0o755})
	b.dir("/special/empty-dir", 0o700)

	// Hard link groups, linked from several directories, one through a
	// chain of links.
	b.dir("/links", 0o755)
	b.dir("/links/sub", 0o755)
	b.file("/links/file", 0o4755, textContent{3*bs + 5, 7}, 3*bs+5)
	b.add("/links/file-2", rootfs.Entry{Kind: rootfs.KindHardlink, Target: "/links/file"})
	b.add("/links/sub/file-3", rootfs.Entry{Kind: rootfs.KindHardlink, Target: "/links/file-2"})
	b.add("/aaa-early-link", rootfs.Entry{Kind: rootfs.KindHardlink, Target: "/links/file"})
	b.add("/links/small", rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o644, Content: rootfs.Bytes("tiny"), Size: 4,
		Xattrs: map[string][]byte{"user.linked": []byte("yes")}})
	b.add("/links/small-2", rootfs.Entry{Kind: rootfs.KindHardlink, Target: "/links/small"})
	b.add("/links/symlink-2", rootfs.Entry{Kind: rootfs.KindHardlink, Target: "/special/symlink"})
	b.add("/links/null-2", rootfs.Entry{Kind: rootfs.KindHardlink, Target: "/special/null"})
	b.add("/links/fifo-2", rootfs.Entry{Kind: rootfs.KindHardlink, Target: "/special/fifo"})
	b.add("/links/empty", rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o644})
	b.add("/links/empty-2", rootfs.Entry{Kind: rootfs.KindHardlink, Target: "/links/empty"})

	// Xattrs: capabilities, user and trusted names, shared sets, a value
	// that spans metadata blocks, on files and directories.
	capability := []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	b.add("/xattrs", rootfs.Entry{Kind: rootfs.KindDir, Mode: 0o755, Xattrs: map[string][]byte{"user.dir": []byte("on a directory")}})
	b.add("/xattrs/ping", rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o755, Content: rootfs.Bytes("ping"), Size: 4,
		Xattrs: map[string][]byte{"security.capability": capability}})
	for i := range 3 {
		b.add(fmt.Sprintf("/xattrs/shared-%d", i), rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o644,
			Content: rootfs.Bytes(fmt.Sprint(i)), Size: 1,
			Xattrs: map[string][]byte{"user.a": []byte("1"), "trusted.b": []byte("2"), "user.empty": {}}})
	}
	// Values of 2000 bytes (ext4, where unsquashfs extracts, holds no
	// more than a block per inode) make the key/value stream cross
	// metadata blocks, some inside a value.
	for i := range 10 {
		b.add(fmt.Sprintf("/xattrs/large-%d", i), rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o644, Content: rootfs.Bytes("l"), Size: 1,
			Xattrs: map[string][]byte{"user.large": []byte(strings.Repeat(fmt.Sprint(i), 2000)), "user.z": []byte("after")}})
	}
	b.add("/xattrs/fifo", rootfs.Entry{Kind: rootfs.KindFIFO, Mode: 0o644, Xattrs: map[string][]byte{"trusted.t": []byte("fifo")}})
	b.add("/xattrs/dev", rootfs.Entry{Kind: rootfs.KindCharDevice, Mode: 0o644, DevMajor: 5, DevMinor: 1,
		Xattrs: map[string][]byte{"security.selinux": []byte("system_u:object_r:device_t:s0\x00")}})

	// Names: the longest, and bytes that need no escaping but sort oddly.
	b.dir("/names", 0o755)
	b.bytes("/names/"+strings.Repeat("n", rootfs.MaxNameBytes), "long name")
	for _, name := range []string{"UPPER", "lower", "_", "-dash", "dot.", "spa ce", "utf8-é", "\x7fdel", "\xff"} {
		b.bytes("/names/"+name, name)
	}

	// A directory of 5000 entries: several headers, index entries, and
	// inodes in several metadata blocks.
	b.dir("/many", 0o755)
	for i := range 5000 {
		p := fmt.Sprintf("/many/entry-%05d-%s", i, strings.Repeat("x", i%40))
		switch i % 5 {
		case 0:
			b.add(p, rootfs.Entry{Kind: rootfs.KindSymlink, Mode: 0o777, Target: fmt.Sprint("t", i)})
		case 1:
			b.dir(p, 0o755)
		default:
			b.bytes(p, fmt.Sprintf("entry %d\n", i))
		}
	}

	// Deep nesting.
	p := "/deep"
	for i := range 40 {
		b.dir(p, 0o755)
		p += fmt.Sprintf("/d%d", i)
	}
	b.bytes(p, "bottom")
	return tree
}
