package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// kickWaiter turns a ring's kick eventfd into calls of onKick. It waits in
// poll(2) on the kick fd and on a private stop eventfd, so it works whether
// or not the front-end made the kick fd non-blocking (its flags are shared
// with QEMU, so we leave them alone).
type kickWaiter struct {
	stopFD int
	done   chan struct{}
}

// startKickWaiter watches kickFD until stop. onKick must not block.
func startKickWaiter(kickFD int, onKick func()) (*kickWaiter, error) {
	stopFD, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	w := &kickWaiter{stopFD: stopFD, done: make(chan struct{})}
	go w.run(kickFD, onKick)
	return w, nil
}

func (w *kickWaiter) run(kickFD int, onKick func()) {
	defer close(w.done)
	fds := []unix.PollFd{{Fd: int32(kickFD), Events: unix.POLLIN}, {Fd: int32(w.stopFD), Events: unix.POLLIN}}
	var buf [8]byte
	for {
		fds[0].Revents, fds[1].Revents = 0, 0
		if _, err := unix.Poll(fds, -1); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		if fds[1].Revents != 0 {
			return
		}
		if fds[0].Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0 {
			return
		}
		if fds[0].Revents&unix.POLLIN != 0 {
			// Reading resets the counter; EAGAIN means another reader won.
			unix.Read(kickFD, buf[:])
			onKick()
		}
	}
}

// stop ends the waiter and waits for it, so the kick fd can be closed
// without the waiter polling a reused fd number.
func (w *kickWaiter) stop() {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	unix.Write(w.stopFD, one[:])
	<-w.done
	unix.Close(w.stopFD)
}
