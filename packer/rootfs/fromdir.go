package rootfs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// FromDir loads the directory tree at dir as a Tree, as mksquashfs would
// see it: owners, mode bits (setuid, setgid and sticky included), mtimes,
// xattrs, symlinks, devices, FIFOs and sockets are taken from disk without
// following symlinks. Regular files are HostFile contents, read when a
// writer needs them. A file with several names becomes a KindHardlink for
// every name after the first in Walk order. The root entry describes dir
// itself.
func FromDir(dir string) (*Tree, error) {
	root := item{host: dir, path: "/"}
	root.stat()
	if root.err != nil {
		return nil, root.err
	}
	if root.mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, fmt.Errorf("rootfs: load %q: not a directory", dir)
	}
	root.sub = &dirJob{host: dir, path: "/"}
	loadDirs(root.sub)
	t := New(root.mtime)
	l := treeLoader{tree: t, seen: map[fileID]string{}}
	if err := l.add(&root); err != nil {
		return nil, err
	}
	return t, nil
}

// item is one path under the loaded directory, with the metadata read
// from disk.
type item struct {
	host, path string
	mode       uint32
	uid, gid   uint32
	mtime      int64
	size       int64
	nlink      uint64
	dev, ino   uint64
	rdev       uint64
	xattrs     map[string][]byte
	target     string
	err        error
	// sub is the listing of a directory.
	sub *dirJob
}

// dirJob is one directory to list: its entries in name order.
type dirJob struct {
	host, path string
	items      []item
	err        error
}

type fileID struct{ dev, ino uint64 }

// loadDirs lists root and every directory below it and reads the metadata
// of every entry, with a few goroutines: a tree of tens of thousands of
// files costs as many lstat and listxattr calls, and a disk that is not
// cached answers faster with several requests in flight.
func loadDirs(root *dirJob) {
	var (
		mu      sync.Mutex
		cond    = sync.NewCond(&mu)
		queue   = []*dirJob{root}
		pending = 1 // jobs queued or being processed
		wg      sync.WaitGroup
	)
	for range max(4, runtime.GOMAXPROCS(0)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				for len(queue) == 0 && pending > 0 {
					cond.Wait()
				}
				if len(queue) == 0 {
					mu.Unlock()
					return
				}
				j := queue[len(queue)-1]
				queue = queue[:len(queue)-1]
				mu.Unlock()

				subs := j.load()
				mu.Lock()
				queue = append(queue, subs...)
				pending += len(subs) - 1
				cond.Broadcast()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// load lists the directory, reads each entry's metadata and returns the
// subdirectories to list next.
func (j *dirJob) load() []*dirJob {
	entries, err := os.ReadDir(j.host)
	if err != nil {
		j.err = fmt.Errorf("rootfs: load %q: %w", j.host, err)
		return nil
	}
	j.items = make([]item, len(entries))
	var subs []*dirJob
	for i, e := range entries {
		it := &j.items[i]
		it.host = filepath.Join(j.host, e.Name())
		it.path = Join(j.path, e.Name())
		it.stat()
		if it.err == nil && it.mode&unix.S_IFMT == unix.S_IFDIR {
			it.sub = &dirJob{host: it.host, path: it.path}
			subs = append(subs, it.sub)
		}
	}
	return subs
}

func (it *item) stat() {
	var st unix.Stat_t
	if err := unix.Lstat(it.host, &st); err != nil {
		it.err = fmt.Errorf("rootfs: load %q: %w", it.host, err)
		return
	}
	it.mode, it.uid, it.gid = st.Mode, st.Uid, st.Gid
	it.mtime, it.size = st.Mtim.Sec, st.Size
	it.nlink, it.dev, it.ino, it.rdev = uint64(st.Nlink), uint64(st.Dev), st.Ino, uint64(st.Rdev)
	if it.xattrs, it.err = readXattrs(it.host); it.err != nil {
		return
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		target, err := os.Readlink(it.host)
		if err != nil {
			it.err = fmt.Errorf("rootfs: load %q: %w", it.host, err)
		}
		it.target = target
	}
}

// treeLoader adds items to a tree in Walk order.
type treeLoader struct {
	tree *Tree
	// seen maps an inode with several names to the first name added.
	seen map[fileID]string
}

func (l *treeLoader) add(it *item) error {
	if it.err != nil {
		return it.err
	}
	if err := addItem(l.tree, it, l.seen); err != nil {
		return err
	}
	if it.sub == nil {
		return nil
	}
	if it.sub.err != nil {
		return it.sub.err
	}
	for i := range it.sub.items {
		if err := l.add(&it.sub.items[i]); err != nil {
			return err
		}
	}
	return nil
}

func addItem(t *Tree, it *item, seen map[fileID]string) error {
	e := Entry{
		Mode:    it.mode & PermMask,
		UID:     it.uid,
		GID:     it.gid,
		ModTime: it.mtime,
		Xattrs:  it.xattrs,
	}
	typ := it.mode & unix.S_IFMT
	if typ != unix.S_IFDIR && it.nlink > 1 {
		id := fileID{it.dev, it.ino}
		if first, ok := seen[id]; ok {
			return t.Add(it.path, Entry{Kind: KindHardlink, Target: first})
		}
		seen[id] = it.path
	}
	switch typ {
	case unix.S_IFDIR:
		e.Kind = KindDir
	case unix.S_IFREG:
		e.Kind = KindFile
		e.Size = it.size
		e.Content = HostFile(it.host)
	case unix.S_IFLNK:
		e.Kind = KindSymlink
		e.Target = it.target
	case unix.S_IFCHR, unix.S_IFBLK:
		e.Kind = KindCharDevice
		if typ == unix.S_IFBLK {
			e.Kind = KindBlockDevice
		}
		e.DevMajor = unix.Major(it.rdev)
		e.DevMinor = unix.Minor(it.rdev)
	case unix.S_IFIFO:
		e.Kind = KindFIFO
	case unix.S_IFSOCK:
		e.Kind = KindSocket
	default:
		return fmt.Errorf("rootfs: load %q: unknown file type %#o", it.host, typ)
	}
	if it.path == "/" {
		return t.SetRoot(e)
	}
	return t.Add(it.path, e)
}

// readXattrs returns the extended attributes of path itself (not of a
// symlink's target), or nil when it has none or the filesystem has none.
func readXattrs(path string) (map[string][]byte, error) {
	names, err := xattrCall(func(b []byte) (int, error) { return unix.Llistxattr(path, b) })
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("rootfs: load %q: list xattrs: %w", path, err)
	}
	if len(names) == 0 {
		return nil, nil
	}
	xattrs := map[string][]byte{}
	for _, name := range bytes.Split(bytes.TrimSuffix(names, []byte{0}), []byte{0}) {
		if len(name) == 0 {
			continue
		}
		value, err := xattrCall(func(b []byte) (int, error) { return unix.Lgetxattr(path, string(name), b) })
		if errors.Is(err, unix.ENODATA) {
			continue // removed since listing
		}
		if err != nil {
			return nil, fmt.Errorf("rootfs: load %q: xattr %q: %w", path, name, err)
		}
		xattrs[string(name)] = value
	}
	return xattrs, nil
}

// xattrCall runs a fill-the-buffer xattr syscall. Most answers fit a
// small buffer, which saves asking for the size first; a bigger one is
// sized and retried while the value grows between calls.
func xattrCall(call func([]byte) (int, error)) ([]byte, error) {
	var small [256]byte
	n, err := call(small[:])
	if err == nil {
		return append([]byte{}, small[:n]...), nil
	}
	for errors.Is(err, unix.ERANGE) {
		n, err = call(nil)
		if err != nil {
			return nil, err
		}
		buf := make([]byte, n)
		n, err = call(buf)
		if err == nil {
			return buf[:n], nil
		}
	}
	return nil, err
}
