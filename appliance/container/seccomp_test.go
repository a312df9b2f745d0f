package container

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
)

// runFilter interprets the classic BPF subset seccompFilter emits on a
// seccomp_data of (arch, nr, arg0) and returns the filter's verdict.
func runFilter(t *testing.T, prog []unix.SockFilter, arch uint32, nr int32, arg0 uint64) uint32 {
	t.Helper()
	data := make([]byte, 64)
	binary.LittleEndian.PutUint32(data[seccompDataNR:], uint32(nr))
	binary.LittleEndian.PutUint32(data[seccompDataArch:], arch)
	binary.LittleEndian.PutUint64(data[seccompDataArg0:], arg0)
	var a uint32
	for pc := 0; pc < len(prog); pc++ {
		in := prog[pc]
		switch in.Code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			a = binary.LittleEndian.Uint32(data[in.K:])
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K:
			pc += jumpOff(a == in.K, in)
		case unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K:
			pc += jumpOff(a >= in.K, in)
		case unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K:
			pc += jumpOff(a&in.K != 0, in)
		case unix.BPF_RET | unix.BPF_K:
			return in.K
		default:
			t.Fatalf("instruction %d: code %#x not in the subset", pc, in.Code)
		}
		if pc+1 > len(prog) {
			t.Fatalf("jump past the end from %d", pc)
		}
	}
	t.Fatal("fell off the end of the program")
	return 0
}

func jumpOff(cond bool, in unix.SockFilter) int {
	if cond {
		return int(in.Jt)
	}
	return int(in.Jf)
}

func TestSeccompFilter(t *testing.T) {
	const arch = unix.AUDIT_ARCH_X86_64
	denied := []uintptr{unix.SYS_KEYCTL, unix.SYS_BPF, unix.SYS_UNSHARE, unix.SYS_MOUNT, unix.SYS_IO_URING_SETUP}
	prog, err := seccompFilter(arch, denied)
	if err != nil {
		t.Fatal(err)
	}
	eperm, enosys := uint32(seccompRetEPERM), uint32(seccompRetENOSYS)
	for _, tc := range []struct {
		name string
		arch uint32
		nr   int32
		arg0 uint64
		want uint32
	}{
		{"read", arch, unix.SYS_READ, 0, seccompRetAllow},
		{"openat", arch, unix.SYS_OPENAT, 0, seccompRetAllow},
		{"futex", arch, unix.SYS_FUTEX, 0, seccompRetAllow},
		{"keyctl", arch, unix.SYS_KEYCTL, 0, eperm},
		{"bpf", arch, unix.SYS_BPF, 0, eperm},
		{"unshare", arch, unix.SYS_UNSHARE, 0, eperm},
		{"mount", arch, unix.SYS_MOUNT, 0, eperm},
		{"last denied", arch, unix.SYS_IO_URING_SETUP, 0, eperm},
		{"fork", arch, unix.SYS_CLONE, uint64(unix.SIGCHLD), seccompRetAllow},
		{"thread", arch, unix.SYS_CLONE, unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_THREAD, seccompRetAllow},
		{"clone user ns", arch, unix.SYS_CLONE, unix.CLONE_NEWUSER | uint64(unix.SIGCHLD), eperm},
		{"clone net ns", arch, unix.SYS_CLONE, unix.CLONE_NEWNET, eperm},
		{"clone3", arch, unix.SYS_CLONE3, 0, enosys},
		// Issue 12, attack 1: a container binds the agent's vsock port.
		{"socket AF_VSOCK", arch, unix.SYS_SOCKET, unix.AF_VSOCK, eperm},
		{"socket AF_VSOCK, high bits set", arch, unix.SYS_SOCKET, 1<<32 | unix.AF_VSOCK, eperm},
		{"socket AF_INET", arch, unix.SYS_SOCKET, unix.AF_INET, seccompRetAllow},
		{"socket AF_INET6", arch, unix.SYS_SOCKET, unix.AF_INET6, seccompRetAllow},
		{"socket AF_UNIX", arch, unix.SYS_SOCKET, unix.AF_UNIX, seccompRetAllow},
		{"socket AF_NETLINK", arch, unix.SYS_SOCKET, unix.AF_NETLINK, seccompRetAllow},
		{"x32 read", arch, x32SyscallBit | unix.SYS_READ, 0, seccompRetKill},
		{"i386", unix.AUDIT_ARCH_I386, 3, 0, seccompRetKill},
	} {
		if got := runFilter(t, prog, tc.arch, tc.nr, tc.arg0); got != tc.want {
			t.Errorf("%s: verdict %#x, want %#x", tc.name, got, tc.want)
		}
	}
	// The real list: every denied syscall is denied, and the ones a
	// program lives on are not.
	prog, err = seccompFilter(arch, deniedSyscalls)
	if err != nil {
		t.Fatal(err)
	}
	for _, nr := range deniedSyscalls {
		if got := runFilter(t, prog, archAudit, int32(nr), 0); got != eperm {
			t.Errorf("syscall %d: verdict %#x, want EPERM", nr, got)
		}
	}
	for _, nr := range []uintptr{unix.SYS_READ, unix.SYS_WRITE, unix.SYS_EXECVE, unix.SYS_MMAP, unix.SYS_EPOLL_PWAIT, unix.SYS_SOCKET, unix.SYS_PTRACE, unix.SYS_PRCTL} {
		if got := runFilter(t, prog, archAudit, int32(nr), 0); got != seccompRetAllow {
			t.Errorf("syscall %d: verdict %#x, want allowed", nr, got)
		}
	}
	if got := runFilter(t, prog, archAudit, int32(unix.SYS_SOCKET), unix.AF_VSOCK); got != eperm {
		t.Errorf("socket(AF_VSOCK) with the real list: verdict %#x, want EPERM", got)
	}
	if _, err := seccompFilter(arch, make([]uintptr, 251)); err == nil {
		t.Error("seccompFilter with 251 denied syscalls = nil error, want one (jumps reach 255)")
	}
}
