package container

import "golang.org/x/sys/unix"

// archAudit is the AUDIT_ARCH of the syscalls the filter lets through.
const archAudit = unix.AUDIT_ARCH_AARCH64

// archDeniedSyscalls are the denied syscalls only this architecture has.
var archDeniedSyscalls []uintptr
