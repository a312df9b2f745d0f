package container

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The seccomp filter of unprivileged containers. Docker's default profile
// is an allowlist; ours is the denylist that matters in an appliance with
// a recent kernel: syscalls whose only use in a container is to reach the
// kernel's less-travelled, non-namespaced or capability-gated code. Most
// of them also need a capability the container does not have; the filter
// is the second wall, for kernel bugs behind those checks. Everything
// else, including the Go runtime's and libc's needs, is allowed.
//
// Denied with EPERM: kernel keyrings (not namespaced), bpf,
// perf_event_open, userfaultfd, io_uring, module and kexec loading,
// mounts of every API, namespaces (unshare, setns, and clone with a
// namespace flag), reboot, swap, clocks, quotas, accounting, handle-based
// opens, cross-process memory access, and AF_VSOCK sockets (socket with
// domain AF_VSOCK: vsock ports are not network-namespaced, so a container
// could bind the management agent's port or reach the host's vsock
// services; a service that needs vsock runs privileged, which has no
// filter, or as a Go service). clone3 gets ENOSYS, since its
// flags are out of the filter's reach, and libc falls back to clone.
// Syscalls of another ABI (i386 or x32 on amd64) kill the process: their
// numbers differ and would slip through the list.
var deniedSyscalls = append([]uintptr{
	unix.SYS_ACCT, unix.SYS_ADD_KEY, unix.SYS_BPF, unix.SYS_CLOCK_ADJTIME, unix.SYS_CLOCK_SETTIME,
	unix.SYS_DELETE_MODULE, unix.SYS_FINIT_MODULE, unix.SYS_INIT_MODULE, unix.SYS_KCMP,
	unix.SYS_KEXEC_FILE_LOAD, unix.SYS_KEXEC_LOAD, unix.SYS_KEYCTL, unix.SYS_REQUEST_KEY,
	unix.SYS_LOOKUP_DCOOKIE, unix.SYS_MOUNT, unix.SYS_UMOUNT2, unix.SYS_PIVOT_ROOT,
	unix.SYS_MOVE_MOUNT, unix.SYS_FSOPEN, unix.SYS_FSCONFIG, unix.SYS_FSMOUNT, unix.SYS_FSPICK,
	unix.SYS_OPEN_TREE, unix.SYS_OPEN_TREE_ATTR, unix.SYS_MOUNT_SETATTR,
	unix.SYS_NAME_TO_HANDLE_AT, unix.SYS_OPEN_BY_HANDLE_AT, unix.SYS_PERF_EVENT_OPEN,
	unix.SYS_PROCESS_VM_READV, unix.SYS_PROCESS_VM_WRITEV, unix.SYS_QUOTACTL, unix.SYS_QUOTACTL_FD,
	unix.SYS_REBOOT, unix.SYS_SETNS, unix.SYS_UNSHARE, unix.SYS_SETTIMEOFDAY,
	unix.SYS_SWAPON, unix.SYS_SWAPOFF, unix.SYS_USERFAULTFD, unix.SYS_NFSSERVCTL,
	unix.SYS_IO_URING_SETUP, unix.SYS_IO_URING_ENTER, unix.SYS_IO_URING_REGISTER,
}, archDeniedSyscalls...)

// namespaceCloneFlags make clone create namespaces. (CLONE_NEWTIME is
// clone3's and unshare's only: in clone's flags its bit is part of the exit
// signal.)
const namespaceCloneFlags = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWUSER |
	unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP

// Offsets in struct seccomp_data: the syscall number, the audit arch and
// the low 32 bits of the first argument (little-endian on amd64 and
// arm64).
const (
	seccompDataNR    = 0
	seccompDataArch  = 4
	seccompDataArg0  = 16
	x32SyscallBit    = 0x40000000
	seccompRetAllow  = unix.SECCOMP_RET_ALLOW
	seccompRetKill   = unix.SECCOMP_RET_KILL_PROCESS
	seccompRetEPERM  = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	seccompRetENOSYS = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
)

// seccompFilter assembles the classic BPF program of the filter for the
// audit architecture arch and the denied syscall numbers.
func seccompFilter(arch uint32, denied []uintptr) ([]unix.SockFilter, error) {
	const (
		ld  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		jge = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
		jst = unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K
		ret = unix.BPF_RET | unix.BPF_K
	)
	stmt := func(code uint16, k uint32) unix.SockFilter { return unix.SockFilter{Code: code, K: k} }
	jump := func(code uint16, k uint32, jt, jf uint8) unix.SockFilter {
		return unix.SockFilter{Code: code, Jt: jt, Jf: jf, K: k}
	}
	// The denial list jumps forward to the shared EPERM return at its
	// end; a conditional jump reaches at most 255 instructions.
	if len(denied) > 250 {
		return nil, fmt.Errorf("seccomp: %d denied syscalls, at most 250", len(denied))
	}
	p := []unix.SockFilter{
		stmt(ld, seccompDataArch),
		jump(jeq, arch, 1, 0),
		stmt(ret, seccompRetKill),
		stmt(ld, seccompDataNR),
		jump(jge, x32SyscallBit, 0, 1),
		stmt(ret, seccompRetKill),
		jump(jeq, uint32(unix.SYS_CLONE3), 0, 1),
		stmt(ret, seccompRetENOSYS),
		// clone: allowed unless it asks for a namespace.
		jump(jeq, uint32(unix.SYS_CLONE), 0, 4),
		stmt(ld, seccompDataArg0),
		jump(jst, namespaceCloneFlags, 0, 1),
		stmt(ret, seccompRetEPERM),
		stmt(ret, seccompRetAllow),
		// socket: allowed unless its domain is AF_VSOCK (an int: the
		// kernel reads the low 32 bits only, as the filter does).
		jump(jeq, uint32(unix.SYS_SOCKET), 0, 4),
		stmt(ld, seccompDataArg0),
		jump(jeq, unix.AF_VSOCK, 0, 1),
		stmt(ret, seccompRetEPERM),
		stmt(ret, seccompRetAllow),
	}
	for i, nr := range denied {
		// To the EPERM return after the remaining comparisons and the
		// allow.
		toDeny := uint8(len(denied) - i)
		p = append(p, jump(jeq, uint32(nr), toDeny, 0))
	}
	return append(p, stmt(ret, seccompRetAllow), stmt(ret, seccompRetEPERM)), nil
}

// installSeccomp loads the filter on the calling thread, whose program
// (after execve) keeps it. no_new_privs must be set already.
func installSeccomp() error {
	if archAudit == 0 {
		return fmt.Errorf("seccomp: no filter for this architecture")
	}
	filter, err := seccompFilter(archAudit, deniedSyscalls)
	if err != nil {
		return err
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&prog)), 0, 0); err != nil {
		return fmt.Errorf("seccomp: load filter: %w", err)
	}
	return nil
}
