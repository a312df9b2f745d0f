package container

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/ingotdev/ingot/appliance/netconf"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// stageTmpfsBytes bounds the tmpfs holding the generated /etc files.
const stageTmpfsBytes = 64 << 10

// etcFile is a file of the container's /etc that the launcher provides
// over whatever the image has there, as Docker does: source is a host
// path, bound read-only onto the container's target.
type etcFile struct {
	target string
	source string
	host   string // the mount point under the root, once it exists
}

// stageEtcFiles returns the files the container gets in /etc: the
// appliance's resolver configuration (o.resolvConf, which init keeps
// current), and /etc/hosts and /etc/hostname naming the container's
// hostname, written to a tmpfs mounted on o.stageDir in the launcher's
// private mount namespace (it lives on through the bind mounts after
// pivot_root). A file under a volume's target is left to the volume.
func stageEtcFiles(c *spec.Container, hostname string, o options, warn func(string)) ([]etcFile, error) {
	var files []etcFile
	covered := func(target string) bool {
		for _, v := range c.Volumes {
			if v.Target == target || isUnder(target, v.Target) {
				warn(fmt.Sprintf("%s: not provided, volume %s is mounted there", target, v.Target))
				return true
			}
		}
		return false
	}
	if !covered("/etc/resolv.conf") {
		var st unix.Stat_t
		switch err := unix.Stat(o.resolvConf, &st); {
		case err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG:
			files = append(files, etcFile{target: "/etc/resolv.conf", source: o.resolvConf})
		case err == nil:
			return nil, fail("/etc/resolv.conf", fmt.Errorf("%s is not a regular file", o.resolvConf))
		case errors.Is(err, unix.ENOENT):
			// Init writes it at boot; without it the container resolves
			// nothing, which it must be told.
			warn(fmt.Sprintf("/etc/resolv.conf: not provided, %s does not exist", o.resolvConf))
		default:
			return nil, fail("/etc/resolv.conf", fmt.Errorf("%s: %w", o.resolvConf, err))
		}
	}
	generated := []struct {
		target string
		data   []byte
	}{
		{"/etc/hosts", netconf.Hosts(hostname)},
		{"/etc/hostname", []byte(hostname + "\n")},
	}
	staged := false
	for _, g := range generated {
		if covered(g.target) {
			continue
		}
		if !staged {
			if err := mountStage(o.stageDir); err != nil {
				return nil, err
			}
			staged = true
		}
		src := filepath.Join(o.stageDir, path.Base(g.target))
		if err := os.WriteFile(src, g.data, 0o644); err != nil {
			return nil, fail(g.target, err)
		}
		files = append(files, etcFile{target: g.target, source: src})
	}
	return files, nil
}

// mountStage mounts a fresh tmpfs on dir (created if missing), private to
// the launcher's mount namespace.
func mountStage(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail("stage /etc files", err)
	}
	opts := fmt.Sprintf("mode=755,size=%d", stageTmpfsBytes)
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, opts); err != nil {
		return fail("stage /etc files", fmt.Errorf("tmpfs on %s: %w", dir, err))
	}
	return nil
}

// ensureFile makes the container path p a regular file to mount on and
// returns its host path. Its directory is made as for any mount point; a
// symlink there is replaced (in a shadow of the directory, never in the
// image), as the file the program will read is ours, not the link's
// target.
func (b *rootBuilder) ensureFile(p string) (string, error) {
	dir, err := b.ensureDir(path.Dir(p), false)
	if err != nil {
		return "", err
	}
	host := filepath.Join(dir, path.Base(p))
	var st unix.Stat_t
	err = unix.Lstat(host, &st)
	switch {
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG:
		return host, nil
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK:
		if err := b.writable(dir, func() error { return unix.Unlink(host) }); err != nil {
			return "", fail("mount point "+p, fmt.Errorf("replace the image's symlink: %w", err))
		}
	case err == nil:
		return "", fail("mount point "+p, fmt.Errorf("exists in the image and is not a regular file"))
	case !errors.Is(err, unix.ENOENT):
		return "", fail("mount point "+p, fmt.Errorf("%s: %w", host, err))
	}
	create := func() error {
		fd, err := unix.Open(host, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o644)
		if err != nil {
			return err
		}
		return unix.Close(fd)
	}
	if err := b.writable(dir, create); err != nil {
		return "", fail("mount point "+p, fmt.Errorf("create %s: %w", host, err))
	}
	return host, nil
}

// writable runs op, which changes the directory dir; if dir is read-only
// (the image) it shadows dir and runs op again.
func (b *rootBuilder) writable(dir string, op func() error) error {
	err := op()
	if !errors.Is(err, unix.EROFS) {
		return err
	}
	if err := b.shadow(dir); err != nil {
		return err
	}
	return op()
}

// bindEtcFile binds f.source read-only onto its mount point.
func bindEtcFile(f etcFile) error {
	step := "mount " + f.target
	if err := unix.Mount(f.source, f.host, "", unix.MS_BIND, ""); err != nil {
		return fail(step, fmt.Errorf("bind %s onto %s: %w", f.source, f.host, err))
	}
	flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if err := unix.Mount("", f.host, "", flags, ""); err != nil {
		return fail(step, fmt.Errorf("remount %s read-only: %w", f.host, err))
	}
	return nil
}
