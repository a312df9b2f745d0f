package flash

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// blockDev is a whole disk or a partition as sysfs shows it.
type blockDev struct {
	name   string // sdb1
	devNum string // "8:17", as sysfs and mountinfo write it
	dir    string // its sysfs directory
}

// inspectBlock identifies a whole-disk block device through sysfs and
// refuses it when any part of it is in use.
func inspectBlock(path string, st fs.FileInfo, o options) (Target, error) {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return Target{}, fmt.Errorf("flash: %s: no device number", path)
	}
	num := devNum(sys.Rdev)
	disk, err := sysBlock(o.sysDir, num)
	if err != nil {
		return Target{}, fmt.Errorf("flash: %s (device %s): %w", path, num, err)
	}
	if exists(filepath.Join(disk.dir, "partition")) {
		parent := filepath.Base(filepath.Dir(disk.dir))
		return Target{}, &RefusedError{Path: path, Reason: fmt.Sprintf("it is the partition %s of /dev/%s; give the whole disk /dev/%s", disk.name, parent, parent)}
	}
	t := Target{Path: path, Block: true, Name: disk.name, Model: model(disk.dir), info: st,
		Removable: readTrim(filepath.Join(disk.dir, "removable")) == "1"}
	sectors, err := strconv.ParseInt(readTrim(filepath.Join(disk.dir, "size")), 10, 64)
	if err != nil {
		return Target{}, fmt.Errorf("flash: %s: size in sysfs: %w", path, err)
	}
	// sysfs counts 512-byte sectors whatever the device's sector size.
	t.SizeBytes = sectors * 512
	if readTrim(filepath.Join(disk.dir, "ro")) == "1" {
		return Target{}, &RefusedError{Path: path, Reason: "the device is read-only (is the card's lock switch on?)"}
	}

	devs := append([]blockDev{disk}, partitions(disk)...)
	entries, err := readMountInfo(filepath.Join(o.procDir, "self", "mountinfo"))
	if err != nil {
		return Target{}, err
	}
	sysDisks, err := systemDisks(o, entries)
	if err != nil {
		return Target{}, err
	}
	if p, ok := sysDisks[disk.name]; ok {
		return Target{}, &RefusedError{Path: path, Reason: fmt.Sprintf("it holds the running system (%s is on it)", p)}
	}
	mounts := mountedDevices(entries)
	for _, d := range devs {
		if mp, ok := mounts[d.devNum]; ok {
			return Target{}, &RefusedError{Path: path, Reason: fmt.Sprintf("/dev/%s is mounted on %s; unmount it first", d.name, mp)}
		}
		if hs := listDir(filepath.Join(d.dir, "holders")); len(hs) > 0 {
			return Target{}, &RefusedError{Path: path, Reason: fmt.Sprintf("/dev/%s is in use by %s (device mapper, RAID or LVM)", d.name, strings.Join(hs, ", "))}
		}
	}
	swaps, err := swapDevices(filepath.Join(o.procDir, "swaps"))
	if err != nil {
		return Target{}, err
	}
	for _, d := range devs {
		if sp, ok := swaps[d.devNum]; ok {
			return Target{}, &RefusedError{Path: path, Reason: fmt.Sprintf("/dev/%s is in use as swap (%s)", d.name, sp)}
		}
	}
	return t, nil
}

func devNum(rdev uint64) string {
	return fmt.Sprintf("%d:%d", unix.Major(rdev), unix.Minor(rdev))
}

// sysBlock finds the sysfs directory of the block device numbered num.
func sysBlock(sysDir, num string) (blockDev, error) {
	dir, err := filepath.EvalSymlinks(filepath.Join(sysDir, "dev", "block", num))
	if err != nil {
		return blockDev{}, fmt.Errorf("not in sysfs: %w", err)
	}
	return blockDev{name: filepath.Base(dir), devNum: num, dir: dir}, nil
}

// partitions lists the partitions of disk.
func partitions(disk blockDev) []blockDev {
	var out []blockDev
	for _, n := range listDir(disk.dir) {
		dir := filepath.Join(disk.dir, n)
		if !exists(filepath.Join(dir, "partition")) {
			continue
		}
		out = append(out, blockDev{name: n, devNum: readTrim(filepath.Join(dir, "dev")), dir: dir})
	}
	return out
}

// systemDisks maps the names of the whole disks under the system paths
// (through partitions, device mapper and RAID) to the path found on each.
func systemDisks(o options, mounts []mountEntry) (map[string]string, error) {
	out := map[string]string{}
	for _, p := range o.systemPaths {
		st, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("flash: %w", err)
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !ok {
			continue
		}
		// btrfs gives its files an anonymous device number; the mount's
		// source names the disk.
		nums := []string{devNum(sys.Dev)}
		for _, m := range mounts {
			if m.devNum == nums[0] && m.sourceNum != "" {
				nums = append(nums, m.sourceNum)
			}
		}
		for _, num := range nums {
			d, err := sysBlock(o.sysDir, num)
			if err != nil {
				// Not on a block device: tmpfs, overlay, NFS.
				continue
			}
			for _, name := range underlying(d.dir, 0) {
				if _, ok := out[name]; !ok {
					out[name] = p
				}
			}
		}
	}
	return out, nil
}

// maxStackDepth bounds the walk down dm/md stacks, which cannot be cyclic
// but are read from a filesystem.
const maxStackDepth = 8

// underlying returns the whole disks below the block device at dir.
func underlying(dir string, depth int) []string {
	if depth > maxStackDepth {
		return nil
	}
	if exists(filepath.Join(dir, "partition")) {
		return []string{filepath.Base(filepath.Dir(dir))}
	}
	slaves := listDir(filepath.Join(dir, "slaves"))
	if len(slaves) == 0 {
		return []string{filepath.Base(dir)}
	}
	var out []string
	for _, s := range slaves {
		real, err := filepath.EvalSymlinks(filepath.Join(dir, "slaves", s))
		if err != nil {
			continue
		}
		out = append(out, underlying(real, depth+1)...)
	}
	return out
}

// mountEntry is a line of mountinfo.
type mountEntry struct {
	devNum string // the device number st_dev shows
	point  string
	// sourceNum is the device number of the mount source when that is a
	// block device node; it differs from devNum on btrfs.
	sourceNum string
}

// readMountInfo reads a mountinfo file.
func readMountInfo(path string) ([]mountEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("flash: %w", err)
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS...] - FSTYPE SOURCE SUPEROPTIONS
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		e := mountEntry{devNum: fields[2], point: unescapeMount(fields[4])}
		if i := slices.Index(fields, "-"); i > 0 && i+2 < len(fields) && strings.HasPrefix(fields[i+2], "/") {
			var st unix.Stat_t
			if unix.Stat(unescapeMount(fields[i+2]), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK {
				e.sourceNum = devNum(st.Rdev)
			}
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("flash: %s: %w", path, err)
	}
	return out, nil
}

// mountedDevices maps the device numbers of mounted filesystems to a mount
// point of each.
func mountedDevices(entries []mountEntry) map[string]string {
	out := map[string]string{}
	for _, e := range entries {
		for _, num := range []string{e.devNum, e.sourceNum} {
			if _, ok := out[num]; num != "" && !ok {
				out[num] = e.point
			}
		}
	}
	return out
}

// unescapeMount undoes the octal escapes (\040 for a space) of mountinfo.
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// swapDevices maps the device numbers of the swap partitions in a
// /proc/swaps file to their paths.
func swapDevices(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("flash: %w", err)
	}
	out := map[string]string{}
	for i, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if i == 0 || len(fields) == 0 {
			continue
		}
		p := unescapeMount(fields[0])
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK {
			out[devNum(st.Rdev)] = p
		}
	}
	return out, nil
}

// checkFile refuses a regular file that backs a loop device: writing it
// would change a disk the kernel is using.
func checkFile(t Target, o options) error {
	for _, n := range listDir(filepath.Join(o.sysDir, "block")) {
		backing := readTrim(filepath.Join(o.sysDir, "block", n, "loop", "backing_file"))
		if backing == "" {
			continue
		}
		st, err := os.Stat(backing)
		if err == nil && os.SameFile(st, t.info) {
			return &RefusedError{Path: t.Path, Reason: fmt.Sprintf("it is the backing file of /dev/%s; detach it first (losetup -d /dev/%s)", n, n)}
		}
	}
	return nil
}

// model describes the disk at dir: vendor and model of SCSI/USB disks,
// name and type of MMC cards, backing file of loop devices.
func model(dir string) string {
	if b := readTrim(filepath.Join(dir, "loop", "backing_file")); b != "" {
		return "loop device backed by " + b
	}
	var words []string
	for _, f := range []string{"vendor", "model", "type", "name"} {
		if s := readTrim(filepath.Join(dir, "device", f)); s != "" {
			words = append(words, s)
		}
	}
	if len(words) == 0 {
		return "unknown model"
	}
	return strings.Join(words, " ")
}

// openTarget opens the block device or regular file at path for writing
// and reading back, and inspects what it opened. The path is resolved
// once: first without opening any driver (O_PATH), so that nothing but a
// block device or a regular file is ever opened, then that same inode is
// opened through /proc, never through the path again. The descriptor
// returned is what Flash checks, writes and reads back, and holding it
// open keeps the kernel from giving the device's number to another card.
func openTarget(path string, o options) (*os.File, Target, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, Target{}, notFound(path)
	}
	if err != nil {
		return nil, Target{}, fmt.Errorf("flash: open %s: %w", path, err)
	}
	named := os.NewFile(uintptr(fd), path)
	defer named.Close()
	nst, err := named.Stat()
	if err != nil {
		return nil, Target{}, fmt.Errorf("flash: %w", err)
	}
	if !nst.Mode().IsRegular() && !isBlock(nst) {
		return nil, Target{}, &RefusedError{Path: path, Reason: "not a block device or a regular file"}
	}
	t := Target{Path: path, Block: isBlock(nst)}
	f, err := reopen(named, t, t.Block)
	if err != nil {
		// Most often a device claimed by a mount: say by what when the
		// checks can tell.
		if _, ierr := inspect(path, nst, o); ierr != nil {
			return nil, Target{}, ierr
		}
		return nil, Target{}, err
	}
	st, err := f.Stat()
	if err == nil {
		t, err = inspect(path, st, o)
	}
	if err != nil {
		f.Close()
		return nil, Target{}, err
	}
	return f, t, nil
}

// reopen opens for reading and writing the device or file that f has
// open, through /proc/self/fd rather than any path, so that it is the
// same one whatever the path names now. With exclusive a block device is
// claimed (O_EXCL), which the kernel refuses while anything (a mount,
// device mapper, another flash) claims it or a partition of it.
func reopen(f *os.File, t Target, exclusive bool) (*os.File, error) {
	flags := unix.O_RDWR | unix.O_CLOEXEC
	if exclusive {
		flags |= unix.O_EXCL
	}
	fd, err := unix.Open(fdPath(f), flags, 0)
	if errors.Is(err, unix.EBUSY) {
		return nil, &RefusedError{Path: t.Path, Reason: "the device is busy (in use by a mount or another program)"}
	}
	if errors.Is(err, unix.ENOENT) {
		return nil, fmt.Errorf("flash: open %s through %s (is /proc mounted?): %w", t.Path, fdPath(f), err)
	}
	if err != nil {
		return nil, fmt.Errorf("flash: open %s: %w", t.Path, err)
	}
	return os.NewFile(uintptr(fd), t.Path), nil
}

func fdPath(f *os.File) string { return "/proc/self/fd/" + strconv.Itoa(int(f.Fd())) }

// childTarget is how a child process (mke2fs) opens the target that held
// has open: as its descriptor 3, through /proc, never through the path.
func childTarget(held *os.File) (path string, extra []*os.File) {
	return "/proc/self/fd/3", []*os.File{held}
}

// identity names what st is for a refusal: a block device by its number,
// which is what the kernel opens, anything else by its inode and
// filesystem.
func identity(st fs.FileInfo) string {
	sys, ok := st.Sys().(*syscall.Stat_t)
	switch {
	case !ok:
		return "a file of unknown identity"
	case isBlock(st):
		return "block device " + devNum(sys.Rdev)
	case st.Mode().IsRegular():
		return fmt.Sprintf("inode %d on device %s", sys.Ino, devNum(sys.Dev))
	default:
		return fmt.Sprintf("inode %d on device %s, not a block device or a regular file", sys.Ino, devNum(sys.Dev))
	}
}

// sameTarget reports whether now, a fresh stat of the target's path,
// names what was, the stat of the descriptor opened for it: the same
// device number for a block device, the same inode for a file.
func sameTarget(was, now fs.FileInfo) bool {
	w, okW := was.Sys().(*syscall.Stat_t)
	n, okN := now.Sys().(*syscall.Stat_t)
	switch {
	case !okW || !okN:
		return false
	case isBlock(was):
		return isBlock(now) && w.Rdev == n.Rdev
	default:
		return now.Mode().IsRegular() && w.Dev == n.Dev && w.Ino == n.Ino
	}
}

// dropCache syncs f and drops it from the page cache, so that reading it
// back reads the device, not what was just written into memory.
func dropCache(f *os.File) error {
	if err := f.Sync(); err != nil {
		return err
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("dropping the page cache: %w", err)
	}
	// For a block device BLKFLSBUF also empties the buffer cache; it needs
	// CAP_SYS_ADMIN, and the fadvise above is the part that matters.
	_ = unix.IoctlSetInt(int(f.Fd()), unix.BLKFLSBUF, 0)
	return nil
}

// rereadPartitions asks the kernel to read the new partition table.
func rereadPartitions(f *os.File) error {
	err := unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0)
	if errors.Is(err, unix.EINVAL) {
		// A device without partition support (a loop device without
		// partscan): there is nothing to re-read.
		return nil
	}
	return err
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// listDir returns the sorted names in dir, none when it cannot be read.
func listDir(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}
