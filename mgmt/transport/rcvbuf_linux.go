package transport

import (
	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

// setReceiveBuffer sets the vsock receive buffer of c to n bytes.
func setReceiveBuffer(c *vsock.Conn, n uint64) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		// The maximum first: the size is clamped to it.
		if serr = unix.SetsockoptUint64(int(fd), unix.AF_VSOCK, unix.SO_VM_SOCKETS_BUFFER_MAX_SIZE, n); serr != nil {
			return
		}
		serr = unix.SetsockoptUint64(int(fd), unix.AF_VSOCK, unix.SO_VM_SOCKETS_BUFFER_SIZE, n)
	})
	if err != nil {
		return err
	}
	return serr
}
