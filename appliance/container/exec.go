package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// runExec is stage 2, inside the container's root: it reads its plan,
// gives up privileges and execs the program; it returns only on failure,
// with the exit status.
func runExec(service string) int {
	// Capabilities, the bounding set and no_new_privs belong to a thread,
	// and execve keeps the calling thread's: everything below must happen
	// on this one.
	runtime.LockOSThread()
	os.NewFile(execReadyFD, "ready").Close()
	f := os.NewFile(execPlanFD, "plan")
	var p plan
	err := json.NewDecoder(f).Decode(&p)
	f.Close()
	if errors.Is(err, io.EOF) {
		// Stage 1 failed and said why; we are about to be killed with
		// its namespace.
		return ExitSetup
	}
	if err != nil {
		return report(service, fail("exec stage", fmt.Errorf("reading the plan: %w", err)))
	}
	if err := enterCgroupNamespace(p.Privileged); err != nil {
		// The program runs anyway, seeing the appliance's cgroup paths
		// and no /sys/fs/cgroup.
		fmt.Fprintf(os.Stderr, "container: %s: note: %v\n", service, err)
	}
	if err := dropPrivileges(p); err != nil {
		return report(service, err)
	}
	if err := unix.Chdir(p.Dir); err != nil {
		return report(service, fail("working_dir", fmt.Errorf("chdir %s as uid %d: %w", p.Dir, p.UID, err)))
	}
	prog, err := lookPath(p.Argv[0], envValue(p.Env, "PATH"))
	if err != nil {
		return report(service, err)
	}
	// Docker's umask; init's would leak into the container otherwise.
	unix.Umask(0o022)
	if !p.Privileged {
		// Last: nothing below but execve needs a syscall.
		if err := installSeccomp(); err != nil {
			return report(service, fail("seccomp", err))
		}
	}
	err = unix.Exec(prog, p.Argv, p.Env)
	code := ExitCannotExec
	if errors.Is(err, unix.ENOENT) {
		code = ExitNotFound // e.g. the #! interpreter is missing
	}
	return report(service, &stepError{step: "exec", err: fmt.Errorf("%s: %w", prog, err), code: code})
}

// cgroupMount is where the container sees its cgroup.
const cgroupMount = "/sys/fs/cgroup"

// enterCgroupNamespace makes the service's cgroup (the launcher was started
// in it) the root of the program's cgroup namespace and mounts that part
// of the hierarchy on /sys/fs/cgroup, read-only unless privileged, as
// Docker does on cgroup v2: the program reads its own memory.max and
// cpu.max there (runtimes size heaps and thread pools by them) and sees
// nothing of the appliance's other groups. It runs on the exec stage's
// locked thread: a cgroup namespace belongs to a thread, and the mount
// takes its root from the caller's.
func enterCgroupNamespace(privileged bool) error {
	if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
		return fmt.Errorf("cgroup namespace: %w", err)
	}
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if !privileged {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount("cgroup2", cgroupMount, "cgroup2", flags, ""); err != nil {
		return fmt.Errorf("mount cgroup2 on %s: %w", cgroupMount, err)
	}
	return nil
}

// dropPrivileges reduces the calling thread to what the program may
// have: the bounding set (Docker's default unless privileged), no
// inheritable or ambient capabilities, no_new_privs, and the image user.
func dropPrivileges(p plan) error {
	keep := dockerDefaultCaps
	if p.Privileged {
		keep = allCaps
	}
	if p.DropAllCaps {
		keep = 0
	}
	if err := dropBounding(keep); err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		return fail("capabilities", fmt.Errorf("clear ambient set: %w", err))
	}
	// Permitted and effective down to the bounding set now, so a root
	// program's set does not depend on execve's rules; inheritable empty,
	// so nothing comes back through file capabilities.
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fail("capabilities", fmt.Errorf("capget: %w", err))
	}
	held := keep
	if p.DropAllCaps && p.UID != 0 {
		// Only for the switch below, which clears both sets for a uid
		// other than 0; the bounding set is empty already.
		held |= 1<<unix.CAP_SETUID | 1<<unix.CAP_SETGID
	}
	for i := range data {
		mask := uint32(held >> (32 * i))
		data[i].Effective &= mask
		data[i].Permitted &= mask
		data[i].Inheritable = 0
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fail("capabilities", fmt.Errorf("capset: %w", err))
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fail("no_new_privs", err)
	}
	groups := make([]int, len(p.Groups))
	for i, g := range p.Groups {
		groups[i] = int(g)
	}
	if err := unix.Setgroups(groups); err != nil {
		return fail("setgroups", fmt.Errorf("%v: %w", p.Groups, err))
	}
	if err := unix.Setresgid(int(p.GID), int(p.GID), int(p.GID)); err != nil {
		return fail("setgid", fmt.Errorf("%d: %w", p.GID, err))
	}
	// For a uid other than 0 this also clears the permitted and effective
	// sets (no SECBIT_KEEP_CAPS), and execve with no_new_privs grants
	// nothing back.
	if err := unix.Setresuid(int(p.UID), int(p.UID), int(p.UID)); err != nil {
		return fail("setuid", fmt.Errorf("%d: %w", p.UID, err))
	}
	return nil
}

// dropBounding removes every capability outside keep from the bounding
// set, up to the last one this kernel knows.
func dropBounding(keep uint64) error {
	for c := 0; c < 64; c++ {
		if keep&(1<<c) != 0 {
			continue
		}
		if _, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(c), 0, 0, 0); errors.Is(err, unix.EINVAL) {
			return nil // past the kernel's last capability
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return fail("capabilities", fmt.Errorf("drop %s from the bounding set: %w", capName(c), err))
		}
	}
	return nil
}

// lookPath resolves argv[0] as execvp does: a name with a slash is used as
// is (relative to the working directory), otherwise PATH is searched for
// an executable regular file.
func lookPath(name, pathEnv string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, dir := range strings.Split(pathEnv, ":") {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Mode&0o111 != 0 {
			return p, nil
		}
	}
	return "", &stepError{step: "exec", err: fmt.Errorf("%q: not found in PATH %s", name, pathEnv), code: ExitNotFound}
}

// envValue returns the value of key in a KEY=VALUE list.
func envValue(env []string, key string) string {
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}
