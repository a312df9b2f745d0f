package squashfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	format "github.com/ingotdev/ingot/packer/format/squashfs"
	"github.com/ingotdev/ingot/packer/rootfs"
)

// TestWriteFeatures writes a tree with every feature and reads it back
// three ways: unsquashfs's listing, unsquashfs's extraction, and the
// kernel's reader through a loop mount.
func TestWriteFeatures(t *testing.T) {
	tree := featureTree(t, true)
	wants, paths, err := expect(tree)
	if err != nil {
		t.Fatal(err)
	}
	img := writeImage(t, tree, t.TempDir())

	t.Run("listing", func(t *testing.T) {
		checkListing(t, img, wants, paths)
	})
	// Reading 5 GiB of holes takes long on some disks; the huge file is
	// compared at a few offsets, and its holes are checked instead.
	t.Run("unsquashfs", func(t *testing.T) {
		dir := extract(t, img)
		compareTree(t, dir, wants, paths, compareOptions{symlinkTimes: true, sampleAbove: gib})
		checkSparse(t, dir)
	})
	t.Run("kernel", func(t *testing.T) {
		dir := mount(t, img)
		compareTree(t, dir, wants, paths, compareOptions{symlinkTimes: true, sampleAbove: gib})
		checkSparse(t, dir)
	})
}

// checkSparse checks that the 5 GiB file occupies next to nothing: the
// kernel counts its blocks from the inode's sparse byte count, unsquashfs
// turns sparse blocks into holes.
func checkSparse(t *testing.T, root string) {
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(root, "sizes/sparse-5g"), &st); err != nil {
		t.Fatal(err)
	}
	if used := st.Blocks * 512; used > 4<<20 {
		t.Errorf("sparse-5g occupies %d bytes, want at most 4 MiB", used)
	}
}

// TestCompressions reads back images of every compression and block size
// limit through the kernel.
func TestCompressions(t *testing.T) {
	tree := featureTree(t, false)
	wants, paths, err := expect(tree)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"gzip", []Option{WithCompression(Gzip)}},
		{"gzip-9-1m", []Option{WithCompression(Gzip), WithLevel(9), WithBlockSize(format.MaxBlockBytes)}},
		{"zstd-19-4k", []Option{WithCompression(Zstd), WithLevel(19), WithBlockSize(format.MinBlockBytes)}},
		{"zstd-15", []Option{WithCompression(Zstd), WithLevel(mksquashfsZstdLevel)}},
		{"none-1-worker", []Option{WithCompression(None), WithWorkers(1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := writeImage(t, tree, t.TempDir(), tc.opts...)
			compareTree(t, mount(t, img), wants, paths, compareOptions{symlinkTimes: true})
			run(t, "unsquashfs", "-s", img)
		})
	}
}

// TestDeterministic checks that the bytes depend on the tree and options
// only, not on the number of workers or on scheduling.
func TestDeterministic(t *testing.T) {
	tree := featureTree(t, false)
	for _, comp := range []Compression{Zstd, Gzip} {
		var first [sha256.Size]byte
		for i, workers := range []int{1, 3, 8} {
			var buf seekBuffer
			if err := Write(context.Background(), &buf, tree, WithCompression(comp), WithWorkers(workers)); err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(buf.b)
			if i == 0 {
				first = sum
			} else if sum != first {
				t.Errorf("%s with %d workers: sha256 %x, want %x as with 1 worker", comp, workers, sum, first)
			}
		}
	}
}

// seekBuffer is an in-memory io.WriteSeeker.
type seekBuffer struct {
	b   []byte
	off int
}

func (s *seekBuffer) Write(p []byte) (int, error) {
	if need := s.off + len(p); need > len(s.b) {
		s.b = append(s.b, make([]byte, need-len(s.b))...)
	}
	copy(s.b[s.off:], p)
	s.off += len(p)
	return len(p), nil
}

func (s *seekBuffer) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += int64(s.off)
	case io.SeekEnd:
		off += int64(len(s.b))
	}
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	s.off = int(off)
	return off, nil
}

// TestWriteAtOffset writes an image behind other data, as into a partition
// of a disk image, and reads it back with unsquashfs -o.
func TestWriteAtOffset(t *testing.T) {
	tree := featureTree(t, false)
	wants, paths, err := expect(tree)
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "disk")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const offset = 1 << 20
	if _, err := f.Write(bytes.Repeat([]byte{0xAA}, offset)); err != nil {
		t.Fatal(err)
	}
	if err := Write(context.Background(), f, tree); err != nil {
		t.Fatal(err)
	}
	end, _ := f.Seek(0, io.SeekCurrent)
	if end%format.AlignBytes != 0 {
		t.Errorf("image ends at %d, want a multiple of %d", end, format.AlignBytes)
	}
	// The superblock readers parse says where the image ends.
	sb := make([]byte, format.SuperblockBytes)
	if _, err := f.ReadAt(sb, offset); err != nil {
		t.Fatal(err)
	}
	if s, err := format.Parse(sb); err != nil || int64(s.PaddedBytes()) != end-offset || s.BlockSize != DefaultBlockBytes {
		t.Errorf("format.Parse(superblock) = %+v, %v; want %d bytes padded, block size %d", s, err, end-offset, DefaultBlockBytes)
	}
	dir := filepath.Join(t.TempDir(), "x")
	run(t, "unsquashfs", "-no-progress", "-strict-errors", "-o", "1M", "-d", dir, img)
	compareTree(t, dir, wants, paths, compareOptions{symlinkTimes: true})
}

// TestDuplicatesStoredOnce checks that identical files share their data.
func TestDuplicatesStoredOnce(t *testing.T) {
	const size = 10*DefaultBlockBytes + 123
	build := func(copies int) int64 {
		tree := rootfs.New(testTime)
		for i := range copies {
			b := treeBuilder{t, tree}
			b.file("/f"+strings.Repeat("x", i), 0o644, randomBytes(size, 9), size)
		}
		var buf seekBuffer
		if err := Write(context.Background(), &buf, tree); err != nil {
			t.Fatal(err)
		}
		return int64(len(buf.b))
	}
	one, four := build(1), build(4)
	if four-one > 4096 {
		t.Errorf("4 copies of a %d-byte file take %d bytes more than 1, want at most a block of metadata", size, four-one)
	}
}

// TestErrors checks that input the format cannot hold is an error naming
// the path, never an image.
func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		build func(b treeBuilder)
		opts  []Option
		want  string
	}{
		{
			name:  "hardlink to missing path",
			build: func(b treeBuilder) { b.add("/l", rootfs.Entry{Kind: rootfs.KindHardlink, Target: "/nowhere"}) },
			want:  `hardlink "/l": target "/nowhere" is not in the tree`,
		},
		{
			name: "hardlink to directory",
			build: func(b treeBuilder) {
				b.dir("/d", 0o755)
				b.add("/l", rootfs.Entry{Kind: rootfs.KindHardlink, Target: "/d"})
			},
			want: `hardlink "/l": target "/d" is a directory`,
		},
		{
			name: "hardlink cycle",
			build: func(b treeBuilder) {
				b.add("/a", rootfs.Entry{Kind: rootfs.KindHardlink, Target: "/b"})
				b.add("/b", rootfs.Entry{Kind: rootfs.KindHardlink, Target: "/a"})
			},
			want: `hardlink "/a": more than 64 links in a chain`,
		},
		{
			name:  "content shorter than size",
			build: func(b treeBuilder) { b.file("/short", 0o644, rootfs.Bytes("abc"), 4) },
			want:  `file "/short": content ended`,
		},
		{
			name:  "content longer than size",
			build: func(b treeBuilder) { b.file("/long", 0o644, rootfs.Bytes("abcde"), 4) },
			want:  `file "/long": content is longer than its size 4`,
		},
		{
			name:  "content that fails",
			build: func(b treeBuilder) { b.file("/bad", 0o644, failingContent{}, 4) },
			want:  `file "/bad": open content: disk on fire`,
		},
		{
			name: "unsupported xattr",
			build: func(b treeBuilder) {
				b.add("/x", rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o644, Xattrs: map[string][]byte{"system.posix_acl_access": {1}}})
			},
			want: `"/x": xattr "system.posix_acl_access": squashfs stores only`,
		},
		{
			name: "empty xattr name",
			build: func(b treeBuilder) {
				b.add("/x", rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o644, Xattrs: map[string][]byte{"user.": {1}}})
			},
			want: `"/x": xattr "user.": empty name`,
		},
		{
			name:  "mtime before 1970",
			build: func(b treeBuilder) { b.add("/old", rootfs.Entry{Kind: rootfs.KindFIFO, ModTime: -1}) },
			want:  `"/old": mtime -1 outside`,
		},
		{
			name:  "device number too large",
			build: func(b treeBuilder) { b.add("/dev", rootfs.Entry{Kind: rootfs.KindCharDevice, DevMajor: 4096}) },
			want:  `"/dev": device 4096:0 outside`,
		},
		{
			name: "symlink too long",
			build: func(b treeBuilder) {
				b.add("/s", rootfs.Entry{Kind: rootfs.KindSymlink, Target: strings.Repeat("a", 4096)})
			},
			want: `"/s": symlink target of 4096 bytes`,
		},
		{name: "block size not a power of two", opts: []Option{WithBlockSize(100000)}, want: "block size 100000"},
		{name: "block size too small", opts: []Option{WithBlockSize(2048)}, want: "block size 2048"},
		{name: "zstd level", opts: []Option{WithLevel(23)}, want: "zstd level 23 outside 1..22"},
		{name: "gzip level", opts: []Option{WithCompression(Gzip), WithLevel(0)}, want: "gzip level 0 outside 1..9"},
		{name: "no workers", opts: []Option{WithWorkers(0)}, want: "0 workers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tree := rootfs.New(testTime)
			if tc.build != nil {
				tc.build(treeBuilder{t, tree})
			}
			var buf seekBuffer
			err := Write(context.Background(), &buf, tree, tc.opts...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Write() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

type failingContent struct{}

func (failingContent) Open() (io.ReadCloser, error) { return nil, errors.New("disk on fire") }

// TestTreeRejectsBadNames documents that names with '/' and duplicate
// names cannot reach the writer: the tree refuses them.
func TestTreeRejectsBadNames(t *testing.T) {
	tree := rootfs.New(testTime)
	file := rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o644}
	if err := tree.Add("/a", file); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/a", "/b//c", "/a/b", "/x/../a", "relative"} {
		if err := tree.Add(p, file); err == nil {
			t.Errorf("Add(%q) = nil, want an error", p)
		}
	}
	if err := rootfs.ValidName("a/b"); err == nil {
		t.Errorf("ValidName(%q) = nil, want an error", "a/b")
	}
}

// TestCanceled checks that a canceled context stops the writer.
func TestCanceled(t *testing.T) {
	tree := featureTree(t, true)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var buf seekBuffer
	if err := Write(ctx, &buf, tree); !errors.Is(err, context.Canceled) {
		t.Errorf("Write(canceled) = %v, want context.Canceled", err)
	}
}

// TestMatchesMksquashfs packs a directory from disk with FromDir and Write
// and with mksquashfs, and compares what unsquashfs says both contain.
func TestMatchesMksquashfs(t *testing.T) {
	src := t.TempDir()
	populate(t, src)
	tree, err := rootfs.FromDir(src)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ours := writeImage(t, tree, dir)
	theirs := filepath.Join(dir, "mksquashfs.sqfs")
	run(t, "mksquashfs", src, theirs, "-noappend", "-quiet", "-no-progress")
	pseudo := func(img string) string {
		out := filepath.Join(t.TempDir(), "pseudo")
		run(t, "unsquashfs", "-pf", out, img)
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got, want := pseudo(ours), pseudo(theirs); got != want {
		t.Errorf("unsquashfs -pf of our image:\n%s\nwant, as of mksquashfs's:\n%s", got, want)
	}
	// unsquashfs -pf leaves out xattrs; the kernel shows them.
	wants, paths, err := expect(tree)
	if err != nil {
		t.Fatal(err)
	}
	compareTree(t, mount(t, ours), wants, paths, compareOptions{symlinkTimes: true})
}

// populate fills dir with what FromDir must pick up.
func populate(t *testing.T, dir string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	at := func(p string) string { return filepath.Join(dir, p) }
	must(os.MkdirAll(at("a/b/c"), 0o755))
	must(os.WriteFile(at("a/file"), []byte("hello\n"), 0o644))
	must(os.WriteFile(at("a/b/big"), bytes.Repeat([]byte("0123456789abcdef"), 30000), 0o644))
	must(os.Link(at("a/file"), at("a/b/c/link")))
	must(os.Symlink("../file", at("a/b/sym")))
	must(os.WriteFile(at("suid"), []byte("#!/bin/sh\n"), 0o755))
	must(os.WriteFile(at("cap"), []byte("#!/bin/sh\n"), 0o755))
	must(os.Chown(at("a/b"), 1000, 100))
	must(os.Mkdir(at("tmp"), 0o755))
	must(mknod(at("null"), "c", 1, 3))
	must(mknod(at("fifo"), "p", 0, 0))
	must(setxattr(at("cap"), "security.capability", []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}))
	must(setxattr(at("a/file"), "user.note", []byte("kept")))
	// os.Chmod cannot set setuid and sticky bits from Unix mode bits.
	must(chmod(at("suid"), 0o4755))
	must(chmod(at("tmp"), 0o1777))
}

// TestOutputFailure checks that a destination that stops taking bytes, a
// partition that is too small say, fails the write.
func TestOutputFailure(t *testing.T) {
	tree := featureTree(t, false)
	for _, limit := range []int{10, 200 << 10, 2 << 20} {
		w := &limitedBuffer{limit: limit}
		err := Write(context.Background(), w, tree)
		if err == nil || !strings.Contains(err.Error(), "no space") {
			t.Errorf("Write(limit %d) = %v, want the destination's error", limit, err)
		}
	}
}

// limitedBuffer fails writes past limit bytes.
type limitedBuffer struct {
	seekBuffer
	limit int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if l.off+len(p) > l.limit {
		return 0, errors.New("no space left")
	}
	return l.seekBuffer.Write(p)
}

// TestLargeTables fills the id and fragment tables past one metadata
// block each (2048 ids, 512 fragments per block), which spreads their
// lookups over several index entries.
func TestLargeTables(t *testing.T) {
	tree := rootfs.New(testTime)
	b := treeBuilder{t, tree}
	for i := range 3000 {
		// 3000-byte files with 4 KiB blocks: one fragment each.
		b.add(fmt.Sprintf("/f%04d", i), rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o644,
			UID: uint32(100000 + i), GID: uint32(i % 7),
			Content: textContent{3000, uint64(i)}, Size: 3000})
	}
	wants, paths, err := expect(tree)
	if err != nil {
		t.Fatal(err)
	}
	img := writeImage(t, tree, t.TempDir(), WithBlockSize(format.MinBlockBytes))
	if out := run(t, "unsquashfs", "-s", img); !strings.Contains(out, "Number of fragments 3000") || !strings.Contains(out, "Number of ids 3007") {
		t.Errorf("unsquashfs -s = %s, want 3000 fragments and 3007 ids", out)
	}
	compareTree(t, mount(t, img), wants, paths, compareOptions{symlinkTimes: true})
}
