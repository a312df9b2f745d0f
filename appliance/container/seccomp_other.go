//go:build !amd64 && !arm64

package container

// archAudit is 0 where ingot has no filter: installSeccomp says so.
const archAudit = 0

var archDeniedSyscalls []uintptr
