package container

import "golang.org/x/sys/unix"

// archAudit is the AUDIT_ARCH of the syscalls the filter lets through.
const archAudit = unix.AUDIT_ARCH_X86_64

// archDeniedSyscalls are the denied syscalls only this architecture has.
var archDeniedSyscalls = []uintptr{
	unix.SYS_IOPL, unix.SYS_IOPERM, unix.SYS_CREATE_MODULE, unix.SYS_GET_KERNEL_SYMS,
	unix.SYS_QUERY_MODULE, unix.SYS_USELIB, unix.SYS_USTAT, unix.SYS_SYSFS, unix.SYS__SYSCTL,
}
