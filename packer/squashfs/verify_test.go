package squashfs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ingotdev/ingot/packer/rootfs"
)

// want is what one path of an image must look like, derived from the tree
// the image was written from.
type want struct {
	kind         rootfs.Kind // never KindHardlink: links take their target's
	mode         uint32
	uid, gid     uint32
	mtime        int64
	size         int64
	nlink        uint32
	major, minor uint32
	target       string
	xattrs       map[string][]byte
	content      rootfs.Content
	// inode is the first path of the inode, shared by hard links.
	inode string
}

// expect lists every path of t with what it must look like.
func expect(t *rootfs.Tree) (map[string]*want, []string, error) {
	wants := map[string]*want{}
	var paths []string
	links := map[string]string{}
	err := t.Walk(func(p string, e *rootfs.Entry) error {
		paths = append(paths, p)
		if e.Kind == rootfs.KindHardlink {
			links[p] = e.Target
			return nil
		}
		w := &want{
			kind: e.Kind, mode: e.Mode, uid: e.UID, gid: e.GID, mtime: e.ModTime,
			nlink: 1, major: e.DevMajor, minor: e.DevMinor, target: e.Target,
			xattrs: e.Xattrs, content: e.Content, inode: p,
		}
		switch e.Kind {
		case rootfs.KindFile:
			w.size = e.Size
		case rootfs.KindSymlink:
			w.size = int64(len(e.Target))
			w.mode = symlinkMode
		case rootfs.KindDir:
			w.nlink = 2
			if p != "/" {
				wants[parentOf(p)].nlink++
			}
		}
		wants[p] = w
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	for p, target := range links {
		for {
			if next, ok := links[target]; ok {
				target = next
				continue
			}
			break
		}
		w, ok := wants[target]
		if !ok {
			return nil, nil, fmt.Errorf("hardlink %q: no target %q", p, target)
		}
		w.nlink++
		wants[p] = w
	}
	return wants, paths, nil
}

func parentOf(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i == 0 {
		return "/"
	}
	return p[:i]
}

// writeImage writes t to a file in dir and returns its path.
func writeImage(t testing.TB, tree *rootfs.Tree, dir string, opts ...Option) string {
	t.Helper()
	img := filepath.Join(dir, "image.sqfs")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Write(context.Background(), f, tree, opts...); err != nil {
		t.Fatalf("Write() = %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return img
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// modeString renders a mode like ls -l does.
func modeString(k rootfs.Kind, mode uint32) string {
	c := map[rootfs.Kind]byte{
		rootfs.KindDir: 'd', rootfs.KindFile: '-', rootfs.KindSymlink: 'l',
		rootfs.KindCharDevice: 'c', rootfs.KindBlockDevice: 'b',
		rootfs.KindFIFO: 'p', rootfs.KindSocket: 's',
	}[k]
	b := []byte{c}
	const rwx = "rwxrwxrwx"
	for i := range 9 {
		if mode&(1<<(8-i)) != 0 {
			b = append(b, rwx[i])
		} else {
			b = append(b, '-')
		}
	}
	special := func(i int, bit uint32, set, unset byte) {
		if mode&bit == 0 {
			return
		}
		if b[i] == '-' {
			b[i] = unset
		} else {
			b[i] = set
		}
	}
	special(3, 0o4000, 's', 'S')
	special(6, 0o2000, 's', 'S')
	special(9, 0o1000, 't', 'T')
	return string(b)
}

var listingLine = regexp.MustCompile(`^(\S{10}) (\d+)/(\d+) +(\d+|-?\d+, *\d+) \d{4}-\d\d-\d\d \d\d:\d\d squashfs-root(.*)$`)

// checkListing compares `unsquashfs -lln` with the tree: modes, owners,
// sizes, link targets and device numbers of every path.
func checkListing(t *testing.T, img string, wants map[string]*want, paths []string) {
	out := run(t, "unsquashfs", "-lln", img)
	seen := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		m := listingLine.FindStringSubmatch(sc.Text())
		if m == nil {
			t.Errorf("unsquashfs -lln: unexpected line %q", sc.Text())
			continue
		}
		p, target, _ := strings.Cut(m[5], " -> ")
		if p == "" {
			p = "/"
		}
		w, ok := wants[p]
		if !ok {
			t.Errorf("unsquashfs -lln lists %q, which is not in the tree", p)
			continue
		}
		seen[p] = true
		if got, want := m[1], modeString(w.kind, w.mode); got != want {
			t.Errorf("%s: listed mode %s, want %s", p, got, want)
		}
		if got, want := m[2]+"/"+m[3], fmt.Sprintf("%d/%d", w.uid, w.gid); got != want {
			t.Errorf("%s: listed owner %s, want %s", p, got, want)
		}
		switch w.kind {
		case rootfs.KindFile, rootfs.KindSymlink:
			if got, want := m[4], strconv.FormatInt(w.size, 10); got != want {
				t.Errorf("%s: listed size %s, want %s", p, got, want)
			}
		case rootfs.KindCharDevice, rootfs.KindBlockDevice:
			// unsquashfs shows the 32-bit device word, as a signed
			// int, split at bit 8: that is major,minor only for minors
			// below 256.
			dev := int32(encodeDev(w.major, w.minor))
			if got, want := strings.ReplaceAll(m[4], " ", ""), fmt.Sprintf("%d,%d", dev>>8, dev&0xff); got != want {
				t.Errorf("%s: listed device %s, want %s", p, got, want)
			}
		}
		if w.kind == rootfs.KindSymlink && target != w.target {
			t.Errorf("%s: listed target %q, want %q", p, target, w.target)
		}
	}
	for _, p := range paths {
		if !seen[p] {
			t.Errorf("unsquashfs -lln does not list %q", p)
		}
	}
}

// compareOptions tunes compareTree to what a reader preserves.
type compareOptions struct {
	// symlinkTimes: the reader sets symlinks' mtimes.
	symlinkTimes bool
	// sampleAbove: files larger than this are compared at a few offsets
	// only, to keep the test fast.
	sampleAbove int64
}

// compareTree compares the files under root with wants, the way diff -r
// and stat would: every path, type, mode, owner, mtime, size, link count,
// device, link target, xattrs, hard link identity and content.
func compareTree(t *testing.T, root string, wants map[string]*want, paths []string, o compareOptions) {
	inodes := map[string]uint64{}
	for _, p := range paths {
		w := wants[p]
		host := filepath.Join(root, filepath.FromSlash(p))
		var st unix.Stat_t
		if err := unix.Lstat(host, &st); err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if got, want := modeString(kindOf(st.Mode), st.Mode&rootfs.PermMask), modeString(w.kind, w.mode); got != want {
			t.Errorf("%s: mode %s, want %s", p, got, want)
			continue
		}
		if st.Uid != w.uid || st.Gid != w.gid {
			t.Errorf("%s: owner %d/%d, want %d/%d", p, st.Uid, st.Gid, w.uid, w.gid)
		}
		if st.Mtim.Sec != w.mtime && (w.kind != rootfs.KindSymlink || o.symlinkTimes) {
			t.Errorf("%s: mtime %d, want %d", p, st.Mtim.Sec, w.mtime)
		}
		if uint32(st.Nlink) != w.nlink {
			t.Errorf("%s: nlink %d, want %d", p, st.Nlink, w.nlink)
		}
		if ino, ok := inodes[w.inode]; !ok {
			inodes[w.inode] = st.Ino
		} else if ino != st.Ino {
			t.Errorf("%s: inode %d, want %d, that of hard link %s", p, st.Ino, ino, w.inode)
		}
		switch w.kind {
		case rootfs.KindFile:
			if st.Size != w.size {
				t.Errorf("%s: size %d, want %d", p, st.Size, w.size)
				continue
			}
			if err := compareContent(host, w, o.sampleAbove); err != nil {
				t.Errorf("%s: %v", p, err)
			}
		case rootfs.KindSymlink:
			if got, err := os.Readlink(host); err != nil || got != w.target {
				t.Errorf("%s: readlink = %q, %v, want %q", p, got, err, w.target)
			}
		case rootfs.KindCharDevice, rootfs.KindBlockDevice:
			if ma, mi := unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)); ma != w.major || mi != w.minor {
				t.Errorf("%s: device %d:%d, want %d:%d", p, ma, mi, w.major, w.minor)
			}
		}
		if got, err := readXattrs(host); err != nil {
			t.Errorf("%s: %v", p, err)
		} else if !equalXattrs(got, w.xattrs) {
			t.Errorf("%s: xattrs %q, want %q", p, got, w.xattrs)
		}
	}
	// Nothing more than the tree.
	err := filepath.WalkDir(root, func(host string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, host)
		p := "/" + filepath.ToSlash(rel)
		if rel == "." {
			p = "/"
		}
		if _, ok := wants[p]; !ok {
			t.Errorf("%s is not in the tree", p)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

func kindOf(mode uint32) rootfs.Kind {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return rootfs.KindDir
	case unix.S_IFREG:
		return rootfs.KindFile
	case unix.S_IFLNK:
		return rootfs.KindSymlink
	case unix.S_IFCHR:
		return rootfs.KindCharDevice
	case unix.S_IFBLK:
		return rootfs.KindBlockDevice
	case unix.S_IFIFO:
		return rootfs.KindFIFO
	case unix.S_IFSOCK:
		return rootfs.KindSocket
	}
	return 0
}

func readXattrs(path string) (map[string][]byte, error) {
	var buf [64 << 10]byte
	got := map[string][]byte{}
	n, err := unix.Llistxattr(path, buf[:])
	if errors.Is(err, unix.ENOTSUP) {
		return got, nil // the kernel's answer for an image without xattrs
	}
	if err != nil {
		return nil, fmt.Errorf("listxattr: %w", err)
	}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		m, err := unix.Lgetxattr(path, name, buf[:])
		if err != nil {
			return nil, fmt.Errorf("getxattr %s: %w", name, err)
		}
		got[name] = append([]byte{}, buf[:m]...)
	}
	return got, nil
}

func equalXattrs(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}

// compareContent compares a file with its expected content: all of it, or
// for big files the first, last and a few middle blocks plus every
// sampleAbove-th window.
func compareContent(host string, w *want, sampleAbove int64) error {
	f, err := os.Open(host)
	if err != nil {
		return err
	}
	defer f.Close()
	if w.content == nil {
		return sameReaders(f, bytes.NewReader(nil), 0)
	}
	r, err := w.content.Open()
	if err != nil {
		return err
	}
	defer r.Close()
	if sampleAbove == 0 || w.size <= sampleAbove {
		return sameReaders(f, r, 0)
	}
	const window = 1 << 20
	ra, ok := r.(io.ReaderAt)
	if !ok {
		return sameReaders(f, r, 0)
	}
	var offsets []int64
	for off := int64(0); off < w.size; off += sampleAbove {
		offsets = append(offsets, off)
	}
	offsets = append(offsets, max(0, w.size-window))
	for _, off := range offsets {
		n := min(window, w.size-off)
		got, want := make([]byte, n), make([]byte, n)
		if _, err := f.ReadAt(got, off); err != nil {
			return fmt.Errorf("read at %d: %w", off, err)
		}
		if _, err := ra.ReadAt(want, off); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("expected content at %d: %w", off, err)
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("content differs in [%d, %d)", off, off+n)
		}
	}
	return nil
}

// compareBuffers are reused by sameReaders: tests compare thousands of
// files. Tests using it must not run in parallel.
var compareBuffers [2][]byte

func sameReaders(got, want io.Reader, at int64) error {
	if compareBuffers[0] == nil {
		compareBuffers = [2][]byte{make([]byte, 1<<20), make([]byte, 1<<20)}
	}
	a, b := compareBuffers[0], compareBuffers[1]
	for {
		n, errA := io.ReadFull(got, a)
		m, errB := io.ReadFull(want, b)
		if n != m || !bytes.Equal(a[:n], b[:m]) {
			return fmt.Errorf("content differs in [%d, %d)", at, at+int64(max(n, m)))
		}
		at += int64(n)
		endA := errors.Is(errA, io.EOF) || errors.Is(errA, io.ErrUnexpectedEOF)
		endB := errors.Is(errB, io.EOF) || errors.Is(errB, io.ErrUnexpectedEOF)
		switch {
		case errA != nil && !endA:
			return errA
		case errB != nil && !endB:
			return errB
		case endA || endB:
			if endA != endB {
				return fmt.Errorf("length differs at %d", at)
			}
			return nil
		}
	}
}

// extract unpacks img with unsquashfs, which must report no error at all.
func extract(t *testing.T, img string) string {
	dir := filepath.Join(t.TempDir(), "x")
	run(t, "unsquashfs", "-no-progress", "-strict-errors", "-d", dir, img)
	return dir
}

// mount loop-mounts img read-only with the kernel's squashfs reader and
// unmounts it when the test ends.
func mount(t *testing.T, img string) string {
	dir := t.TempDir()
	run(t, "mount", "-t", "squashfs", "-o", "loop,ro", img, dir)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

func mknod(path, kind string, major, minor uint32) error {
	mode := map[string]uint32{"c": unix.S_IFCHR, "b": unix.S_IFBLK, "p": unix.S_IFIFO}[kind] | 0o644
	return unix.Mknod(path, mode, int(unix.Mkdev(major, minor)))
}

func setxattr(path, name string, value []byte) error {
	return unix.Lsetxattr(path, name, value, 0)
}

func chmod(path string, mode uint32) error { return unix.Chmod(path, mode) }
