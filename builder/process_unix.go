//go:build unix

package builder

import (
	"os"
	"os/exec"
	"syscall"
	"time"
)

// killGroupOnCancel runs cmd in its own process group and kills the whole
// group on cancellation, so the compiler processes `go build` started die
// with it instead of finishing work nobody waits for.
func killGroupOnCancel(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
}

// lockFile takes an exclusive lock on path (created if needed), so two
// ingot builds sharing a cache do not write the same output at once.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
