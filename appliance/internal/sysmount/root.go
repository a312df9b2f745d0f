package sysmount

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// RootFlags are the mount flags of the appliance's root filesystem:
// read-only, and neither setuid bits nor device nodes take effect on it.
// The root holds every image service's files (/oci/<service>/rootfs), and
// an image may ship a 0666 node of the root disk or a setuid-root program;
// on this mount they are inert outside their container, whose launcher
// mounts the image again with the flags it wants.
const RootFlags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV

// Restrict remounts the mount at target nosuid and nodev unless it already
// is, keeping it read-only or writable and exec or noexec as it was (the
// kernel keeps the atime flags). It reports whether it remounted. stage0
// mounts the root with RootFlags; a root the kernel mounted itself (the
// Pi's, root= on the command line) can have only ro, so stage1 restricts
// "/" with this.
func Restrict(target string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil {
		return false, fmt.Errorf("restrict %s: %w", target, err)
	}
	if st.Flags&unix.ST_NOSUID != 0 && st.Flags&unix.ST_NODEV != 0 {
		return false, nil
	}
	flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_NOSUID | unix.MS_NODEV)
	if st.Flags&unix.ST_RDONLY != 0 {
		flags |= unix.MS_RDONLY
	}
	if st.Flags&unix.ST_NOEXEC != 0 {
		flags |= unix.MS_NOEXEC
	}
	if err := unix.Mount("", target, "", flags, ""); err != nil {
		return false, fmt.Errorf("remount %s nosuid,nodev: %w", target, err)
	}
	return true, nil
}
