package container

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ingotdev/ingot/packer/format/spec"
)

// Sizes of the container's tmpfs mounts. Their pages are charged to the
// service's cgroup, so memory limits bound them too.
const (
	devTmpfsBytes = 64 << 10
	shmTmpfsBytes = 64 << 20
)

// device is a node of the container's /dev.
type device struct {
	name         string
	major, minor uint32
}

// permPrefix starts every volume source (spec.Container.Validate).
const permPrefix = "/perm/"

var devices = []device{
	{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7},
	{"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
}

var devLinks = [][2]string{
	{"fd", "/proc/self/fd"},
	{"stdin", "/proc/self/fd/0"},
	{"stdout", "/proc/self/fd/1"},
	{"stderr", "/proc/self/fd/2"},
	{"ptmx", "pts/ptmx"},
}

// rootBuilder assembles the container's mount tree under root (a host
// path) in the launcher's private mount namespace.
type rootBuilder struct {
	root string
	o    options
	// privileged containers see /proc and /sys unmasked.
	privileged bool
	// shadows are tmpfs mounts over read-only image directories, made
	// read-only again once every mount point exists.
	shadows []string
}

// mountTarget is one mount inside the container.
type mountTarget struct {
	target string // absolute, clean, inside the container
	mount  func(b *rootBuilder, host string) error
}

// setupRoot builds the mount tree for c and pivot_roots into it; hostname
// is the container's, dir the working directory, which must exist
// afterwards. warn reports what the container goes without; beforePivot
// runs right before pivot_root.
func setupRoot(c *spec.Container, hostname, dir string, o options, warn func(string), beforePivot func() error) error {
	// Nothing we mount may propagate back into the appliance.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fail("make mounts private", err)
	}
	b := &rootBuilder{root: filepath.Join(o.rootDir, c.Rootfs), o: o, privileged: c.Privileged}
	var st unix.Stat_t
	if err := unix.Lstat(b.root, &st); err != nil {
		return fail("rootfs", fmt.Errorf("%s: %w", b.root, err))
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fail("rootfs", fmt.Errorf("%s: not a directory", b.root))
	}
	// pivot_root wants a mount point; the bind also gets its own
	// read-only, nodev and nosuid flags, so the root is read-only even
	// where the image is not on a read-only filesystem (tests), and the
	// image's device nodes and setuid bits stay inert (a bind remount sets
	// all of them, and nosuid repeats no_new_privs for the image's files).
	if err := unix.Mount(b.root, b.root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fail("bind rootfs", fmt.Errorf("%s: %w", b.root, err))
	}
	if err := unix.Mount("", b.root, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		return fail("remount rootfs read-only", fmt.Errorf("%s: %w", b.root, err))
	}

	files, err := stageEtcFiles(c, hostname, o, warn)
	if err != nil {
		return err
	}

	targets := []mountTarget{
		{"/proc", (*rootBuilder).mountProc},
		{"/sys", (*rootBuilder).mountSys},
		{"/dev", (*rootBuilder).mountDev},
		{"/tmp", tmpfsMount("mode=1777")},
		{"/run", tmpfsMount("mode=755")},
	}
	vols := append([]spec.Volume(nil), c.Volumes...)
	for _, v := range vols {
		targets = append(targets, mountTarget{v.Target, volumeMount(v, c.UID, c.GID)})
	}
	// Parents before children; the stable sort keeps a volume that
	// replaces /tmp after our tmpfs, so the volume wins.
	sort.SliceStable(targets, func(i, j int) bool { return targets[i].target < targets[j].target })

	// First every mount point that sits in the image itself, while
	// nothing is mounted yet: shadowing a directory later would hide
	// mounts below it.
	nested := func(t string) bool {
		for _, m := range targets {
			if m.target != t && isUnder(t, m.target) {
				return true
			}
		}
		return false
	}
	for _, t := range targets {
		if !nested(t.target) {
			if _, err := b.ensureDir(t.target, false); err != nil {
				return err
			}
		}
	}
	// The /etc files are never under a mount (stageEtcFiles leaves
	// those under volumes out), so theirs can all be made now. An image
	// whose /etc cannot hold them (a symlink, say) runs without.
	var etc []etcFile
	for _, f := range files {
		host, err := b.ensureFile(f.target)
		if err != nil {
			warn(fmt.Sprintf("%s: not provided: %v", f.target, err))
			continue
		}
		f.host = host
		etc = append(etc, f)
	}
	if !nested(dir) {
		if _, err := b.ensureDir(dir, true); err != nil {
			return fail("working_dir", err)
		}
	}
	for _, t := range targets {
		host, err := b.ensureDir(t.target, false)
		if err != nil {
			return err
		}
		if err := t.mount(b, host); err != nil {
			return err
		}
	}
	for _, f := range etc {
		if err := bindEtcFile(f); err != nil {
			return err
		}
	}
	if nested(dir) {
		if _, err := b.ensureDir(dir, true); err != nil {
			return fail("working_dir", err)
		}
	}
	for _, s := range b.shadows {
		if err := unix.Mount("", s, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
			return fail("remount shadow read-only", fmt.Errorf("%s: %w", s, err))
		}
	}
	if err := beforePivot(); err != nil {
		return err
	}
	return pivot(b.root)
}

// isUnder reports whether p is strictly inside dir.
func isUnder(p, dir string) bool {
	return dir == "/" && p != "/" || strings.HasPrefix(p, dir+"/")
}

// ensureDir makes the container directory p exist and returns its host
// path. A missing directory in a read-only image directory is created by
// shadowing that directory. Symlinks are not followed: for a mount target
// one is an error (it could point anywhere in the appliance before
// pivot_root); for the working directory (followSymlink) the chdir after
// pivot_root resolves it inside the container, so it is left alone.
func (b *rootBuilder) ensureDir(p string, followSymlink bool) (string, error) {
	cur := b.root
	walked := "/"
	for _, comp := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
		if comp == "" {
			continue
		}
		next := filepath.Join(cur, comp)
		walked = path.Join(walked, comp)
		var st unix.Stat_t
		err := unix.Lstat(next, &st)
		switch {
		case err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR:
			cur = next
			continue
		case err == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK:
			if followSymlink {
				return next, nil
			}
			return "", fail("mount point "+p, fmt.Errorf("%s is a symlink in the image; mount targets may not pass through symlinks, use the path it points to", walked))
		case err == nil:
			return "", fail("mount point "+p, fmt.Errorf("%s exists in the image and is not a directory", walked))
		case !errors.Is(err, unix.ENOENT):
			return "", fail("mount point "+p, fmt.Errorf("%s: %w", next, err))
		}
		err = unix.Mkdir(next, 0o755)
		if errors.Is(err, unix.EROFS) {
			if err := b.shadow(cur); err != nil {
				return "", err
			}
			err = unix.Mkdir(next, 0o755)
		}
		if err != nil {
			return "", fail("mount point "+p, fmt.Errorf("mkdir %s: %w", walked, err))
		}
		cur = next
	}
	return cur, nil
}

// shadow mounts a tmpfs over the read-only directory dir that carries a
// bind mount of each of dir's entries (symlinks are copied), so new
// entries can be made in it.
func (b *rootBuilder) shadow(dir string) error {
	step := "shadow read-only " + b.containerPath(dir)
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(step, err)
	}
	orig := os.NewFile(uintptr(fd), dir)
	defer orig.Close()
	names, err := orig.Readdirnames(-1)
	if err != nil {
		return fail(step, fmt.Errorf("read %s: %w", dir, err))
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fail(step, err)
	}
	opts := fmt.Sprintf("mode=%o,uid=%d,gid=%d", st.Mode&0o7777, st.Uid, st.Gid)
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fail(step, fmt.Errorf("mount tmpfs on %s: %w", dir, err))
	}
	b.shadows = append(b.shadows, dir)
	// The originals stay reachable through the open directory.
	origDir := "/proc/self/fd/" + strconv.Itoa(fd)
	sort.Strings(names)
	for _, n := range names {
		src := origDir + "/" + n
		dst := filepath.Join(dir, n)
		var est unix.Stat_t
		if err := unix.Fstatat(fd, n, &est, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fail(step, fmt.Errorf("%s: %w", n, err))
		}
		perm := est.Mode & 0o7777
		switch est.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			target, err := readlinkat(fd, n)
			if err != nil {
				return fail(step, err)
			}
			if err := unix.Symlink(target, dst); err != nil {
				return fail(step, err)
			}
			_ = unix.Lchown(dst, int(est.Uid), int(est.Gid))
			continue
		case unix.S_IFDIR:
			err = unix.Mkdir(dst, perm)
		default:
			// Files, devices, fifos and sockets are all mountable onto a
			// regular file.
			var f int
			f, err = unix.Open(dst, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, perm)
			if err == nil {
				unix.Close(f)
			}
		}
		if err != nil {
			return fail(step, fmt.Errorf("create %s: %w", dst, err))
		}
		if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fail(step, fmt.Errorf("bind %s: %w", b.containerPath(dst), err))
		}
	}
	return nil
}

// containerPath maps a host path under the root back to the container's
// view, for messages.
func (b *rootBuilder) containerPath(host string) string {
	rel, err := filepath.Rel(b.root, host)
	if err != nil || strings.HasPrefix(rel, "..") {
		return host
	}
	return path.Join("/", rel)
}

func readlinkat(dirfd int, name string) (string, error) {
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(dirfd, name, buf)
	if err != nil {
		return "", fmt.Errorf("readlink %s: %w", name, err)
	}
	return string(buf[:n]), nil
}

// Parts of /proc and /sys that reach beyond the container, as Docker
// (runc's default spec) treats them: a root with Docker's default
// capabilities could otherwise reboot the appliance through
// /proc/sysrq-trigger or change its sysctls, which only check file
// permissions. Privileged containers see them as they are.
var (
	readOnlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
	maskedPaths   = []string{
		"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list", "/proc/timer_stats",
		"/sys/devices/virtual/powercap", "/sys/firmware",
	}
)

func (b *rootBuilder) mountProc(host string) error {
	// Mounted by PID 1 of the new pid namespace, so it shows only the
	// container's processes.
	if err := unix.Mount("proc", host, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fail("mount /proc", fmt.Errorf("%s: %w", host, err))
	}
	if err := b.restrict(host, "/proc"); err != nil {
		return err
	}
	if b.o.readOnlyProc {
		// A bind remount: the flag is this mount's, not the proc
		// superblock's, which the appliance's /proc may share.
		if err := unix.Mount("", host, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fail("remount /proc read-only", fmt.Errorf("%s: %w", host, err))
		}
	}
	return nil
}

// mountSys mounts a read-only sysfs (of the container's network namespace,
// when it has its own). The cgroup hierarchy is mounted on its
// /sys/fs/cgroup by the exec stage, in the container's cgroup namespace.
func (b *rootBuilder) mountSys(host string) error {
	if err := unix.Mount("sysfs", host, "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fail("mount /sys", fmt.Errorf("%s: %w", host, err))
	}
	return b.restrict(host, "/sys")
}

// restrict applies readOnlyPaths and maskedPaths under mount, the
// container path whose host path is host: read-only binds of themselves,
// and masks (the appliance's /dev/null over a file, an empty read-only
// tmpfs over a directory). Paths the kernel does not have are skipped.
func (b *rootBuilder) restrict(host, mount string) error {
	if b.privileged {
		return nil
	}
	const ro = unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	under := func(paths []string, f func(p, h string, st *unix.Stat_t) error) error {
		for _, p := range paths {
			rel, ok := strings.CutPrefix(p, mount+"/")
			if !ok {
				continue
			}
			h := filepath.Join(host, rel)
			var st unix.Stat_t
			if err := unix.Lstat(h, &st); errors.Is(err, unix.ENOENT) {
				continue
			} else if err != nil {
				return fail("restrict "+p, err)
			}
			if err := f(p, h, &st); err != nil {
				return err
			}
		}
		return nil
	}
	err := under(readOnlyPaths, func(p, h string, _ *unix.Stat_t) error {
		if err := unix.Mount(h, h, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fail("read-only "+p, err)
		}
		if err := unix.Mount("", h, "", ro, ""); err != nil {
			return fail("read-only "+p, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return under(maskedPaths, func(p, h string, st *unix.Stat_t) error {
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if err := unix.Mount("tmpfs", h, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=0,mode=555"); err != nil {
				return fail("mask "+p, err)
			}
			return nil
		}
		// Reads find nothing: /dev/null, usable (not nodev) but read-only.
		null := filepath.Join(b.o.hostDev, "null")
		if err := unix.Mount(null, h, "", unix.MS_BIND, ""); err != nil {
			return fail("mask "+p, fmt.Errorf("bind %s: %w", null, err))
		}
		if err := unix.Mount("", h, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NOEXEC, ""); err != nil {
			return fail("mask "+p, err)
		}
		return nil
	})
}

func (b *rootBuilder) mountDev(host string) error {
	opts := fmt.Sprintf("mode=755,size=%d", devTmpfsBytes)
	if err := unix.Mount("tmpfs", host, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, opts); err != nil {
		return fail("mount /dev", fmt.Errorf("tmpfs on %s: %w", host, err))
	}
	for _, d := range devices {
		if err := b.makeDevice(host, d); err != nil {
			return err
		}
	}
	for _, l := range devLinks {
		if err := unix.Symlink(l[1], filepath.Join(host, l[0])); err != nil {
			return fail("/dev/"+l[0], err)
		}
	}
	pts := filepath.Join(host, "pts")
	shm := filepath.Join(host, "shm")
	if err := unix.Mkdir(pts, 0o755); err != nil {
		return fail("/dev/pts", err)
	}
	if err := unix.Mkdir(shm, 0o1777); err != nil {
		return fail("/dev/shm", err)
	}
	if err := unix.Chmod(shm, 0o1777); err != nil { // umask
		return fail("/dev/shm", err)
	}
	if err := unix.Mount("devpts", pts, "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
		return fail("mount /dev/pts", fmt.Errorf("devpts on %s: %w", pts, err))
	}
	if err := unix.Mount("shm", shm, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, fmt.Sprintf("mode=1777,size=%d", shmTmpfsBytes)); err != nil {
		return fail("mount /dev/shm", fmt.Errorf("tmpfs on %s: %w", shm, err))
	}
	// See the package doc: no writable place that honours device nodes.
	// Mounts below (pts, shm) keep their own flags.
	if err := unix.Mount("", host, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NOEXEC, ""); err != nil {
		return fail("remount /dev read-only", fmt.Errorf("%s: %w", host, err))
	}
	return nil
}

// makeDevice creates a character device in the container's /dev, or binds
// the appliance's node where mknod is not allowed (nested containers).
func (b *rootBuilder) makeDevice(dev string, d device) error {
	p := filepath.Join(dev, d.name)
	step := "/dev/" + d.name
	err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(d.major, d.minor)))
	if err == nil {
		if err := unix.Chmod(p, 0o666); err != nil { // umask
			return fail(step, err)
		}
		return nil
	}
	if !errors.Is(err, unix.EPERM) {
		return fail(step, fmt.Errorf("mknod %s: %w", p, err))
	}
	f, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o666)
	if err != nil {
		return fail(step, err)
	}
	unix.Close(f)
	src := filepath.Join(b.o.hostDev, d.name)
	if err := unix.Mount(src, p, "", unix.MS_BIND, ""); err != nil {
		return fail(step, fmt.Errorf("mknod not permitted, and bind %s: %w", src, err))
	}
	return nil
}

func tmpfsMount(opts string) func(*rootBuilder, string) error {
	return func(b *rootBuilder, host string) error {
		if err := unix.Mount("tmpfs", host, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
			return fail("mount "+b.containerPath(host), fmt.Errorf("tmpfs on %s: %w", host, err))
		}
		return nil
	}
}

// volumeMount binds a directory of /perm: created when missing (each
// created level owned by the container user), opened without following
// symlinks (the container can plant them in its volumes), bound through
// the open handle, and remounted nosuid, nodev and read-only if asked.
func volumeMount(v spec.Volume, uid, gid uint32) func(*rootBuilder, string) error {
	return func(b *rootBuilder, host string) error {
		step := fmt.Sprintf("volume %s:%s", v.Source, v.Target)
		rel := strings.TrimPrefix(v.Source, permPrefix)
		src, err := openCreateDir(b.o.permDir, rel, uid, gid, !v.ReadOnly)
		if err != nil {
			return fail(step, err)
		}
		defer src.Close()
		if err := unix.Mount("/proc/self/fd/"+strconv.Itoa(int(src.Fd())), host, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fail(step, fmt.Errorf("bind onto %s: %w", host, err))
		}
		flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_NOSUID | unix.MS_NODEV)
		if v.ReadOnly {
			flags |= unix.MS_RDONLY
		}
		if err := unix.Mount("", host, "", flags, ""); err != nil {
			return fail(step, fmt.Errorf("remount %s: %w", host, err))
		}
		return nil
	}
}

// openCreateDir opens base/rel (rel slash-separated, clean, relative)
// component by component without following symlinks, creating missing
// directories owned by uid:gid. With chownLeaf an existing last component
// is re-owned to uid:gid when it differs (the image user changed with an
// update; the supervisor treats /perm/<service> the same way).
func openCreateDir(base, rel string, uid, gid uint32, chownLeaf bool) (*os.File, error) {
	fd, err := unix.Open(base, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", base, err)
	}
	walked := base
	comps := strings.Split(rel, "/")
	for i, comp := range comps {
		if comp == "" || comp == "." || comp == ".." {
			unix.Close(fd)
			return nil, fmt.Errorf("%s: bad path component %q", rel, comp)
		}
		walked = filepath.Join(walked, comp)
		created := false
		if err := unix.Mkdirat(fd, comp, 0o755); err == nil {
			created = true
			if err := unix.Fchownat(fd, comp, int(uid), int(gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
				unix.Close(fd)
				return nil, fmt.Errorf("chown %s: %w", walked, err)
			}
		} else if !errors.Is(err, unix.EEXIST) {
			unix.Close(fd)
			return nil, fmt.Errorf("mkdir %s: %w", walked, err)
		}
		next, err := unix.Openat(fd, comp, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
				return nil, fmt.Errorf("%s: not a directory (symlinks are not followed): %w", walked, err)
			}
			return nil, fmt.Errorf("open %s: %w", walked, err)
		}
		fd = next
		if i == len(comps)-1 && !created && chownLeaf {
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				unix.Close(fd)
				return nil, fmt.Errorf("stat %s: %w", walked, err)
			}
			if st.Uid != uid || st.Gid != gid {
				if err := unix.Fchownat(fd, "", int(uid), int(gid), unix.AT_EMPTY_PATH); err != nil {
					unix.Close(fd)
					return nil, fmt.Errorf("chown %s: %w", walked, err)
				}
			}
		}
	}
	return os.NewFile(uintptr(fd), walked), nil
}

// pivot makes root the container's root and detaches the appliance's.
func pivot(root string) error {
	oldRoot, err := unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail("pivot_root", err)
	}
	defer unix.Close(oldRoot)
	newRoot, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail("pivot_root", err)
	}
	defer unix.Close(newRoot)
	if err := unix.Fchdir(newRoot); err != nil {
		return fail("pivot_root", err)
	}
	// pivot_root(".", ".") stacks the old root on top of the new one, so
	// the read-only image needs no directory to put it in.
	if err := unix.PivotRoot(".", "."); err != nil {
		return fail("pivot_root", fmt.Errorf("%s: %w", root, err))
	}
	if err := unix.Fchdir(oldRoot); err != nil {
		return fail("pivot_root", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fail("detach old root", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fail("pivot_root", err)
	}
	return nil
}
