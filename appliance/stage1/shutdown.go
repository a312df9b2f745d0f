package stage1

import (
	"context"
	"errors"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// extensionStopWait bounds how long shutdown waits for extensions
	// (the agent) to return after their context ends.
	extensionStopWait = 2 * time.Second
	// stragglerGrace is how long processes that no service owns get
	// between SIGTERM and SIGKILL.
	stragglerGrace = 2 * time.Second
	// servicesSlack is added to the longest grace period when waiting for
	// the supervisor, covering SIGKILL and the kill wait.
	servicesSlack    = 10 * time.Second
	consoleFlushWait = 2 * time.Second
)

// shutdown stops everything and powers off or reboots. It never returns.
func (s *System) shutdown(req shutdownRequest, stopAll context.CancelFunc, supDone, extDone <-chan struct{}, wd *watchdog) {
	close(s.shuttingDown)
	what := "power off"
	if req.reboot {
		what = "reboot"
	}
	s.Printf("shutting down to %s: %s", what, req.reason)
	stopAll()
	s.waitPetting(extDone, extensionStopWait, wd, "extensions")
	s.waitPetting(supDone, s.maxGrace()+servicesSlack, wd, "services")

	// Whatever is left (orphans, daemons that left their group) gets the
	// same treatment, all at once. kill(-1) spares init itself. Every user
	// process descends from init, so "init has children" means "something
	// is still running".
	if hasChildren() {
		s.Printf("stopping processes that no service owns")
		_ = unix.Kill(-1, unix.SIGTERM)
		if !waitNoChildren(stragglerGrace) {
			s.Printf("killing processes that ignored SIGTERM")
			_ = unix.Kill(-1, unix.SIGKILL)
			waitNoChildren(stragglerGrace)
		}
	}

	s.stopRemoteLogs(wd)
	// After the services: the last known time is as late as it gets.
	if s.clock != nil && s.Status().Perm.Mounted {
		if err := s.clock.Save(); err != nil {
			s.Printf("%v", err)
		} else {
			s.Printf("clock: saved %s on perm", time.Now().UTC().Format(time.RFC3339))
		}
	}
	if err := s.initLog.Close(); err != nil {
		s.Printf("closing init log file: %v", err)
	}
	unix.Sync()
	s.unmountPerm()
	unix.Sync()
	s.Printf("%s now", what)
	ctx, cancel := context.WithTimeout(context.Background(), consoleFlushWait)
	_ = s.console.Flush(ctx)
	cancel()

	var err error
	switch {
	case !req.reboot:
		err = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	case req.rebootArg != "":
		s.Printf("reboot argument %q", req.rebootArg)
		err = rebootWithArg(req.rebootArg)
	default:
		err = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	}
	// Only reached if reboot(2) failed. Exiting would panic the kernel;
	// idle instead, keeping the watchdog (if any) unfed so it resets us.
	s.Printf("%s failed: %v; idling", what, err)
	ctx, cancel = context.WithTimeout(context.Background(), consoleFlushWait)
	_ = s.console.Flush(ctx)
	cancel()
	for {
		time.Sleep(time.Hour)
	}
}

// waitPetting waits for done up to limit, keeping the watchdog fed.
func (s *System) waitPetting(done <-chan struct{}, limit time.Duration, wd *watchdog, what string) {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	pet := time.NewTicker(watchdogPet)
	defer pet.Stop()
	for {
		select {
		case <-done:
			return
		case <-deadline.C:
			s.Printf("%s did not stop within %s; going on", what, limit)
			return
		case <-pet.C:
			wd.pet()
		}
	}
}

func (s *System) maxGrace() time.Duration {
	var d time.Duration
	if s.spec != nil {
		for _, svc := range s.spec.Services {
			d = max(d, svc.Grace())
		}
	}
	return d
}

// unmountPerm unmounts /perm so its journal is clean; if something still
// holds it, it is remounted read-only, which also flushes it.
func (s *System) unmountPerm() {
	if !s.Status().Perm.Mounted {
		return
	}
	err := unix.Unmount(PermDir, 0)
	if err == nil {
		s.Printf("perm: unmounted")
		return
	}
	s.Printf("perm: unmount: %v; remounting read-only", err)
	if errors.Is(err, unix.EBUSY) {
		if err := unix.Mount("", PermDir, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			s.Printf("perm: remount read-only: %v", err)
		}
	}
}

// hasChildren reports whether init has any child, running or not yet
// reaped, without reaping it (the Reaper does that).
func hasChildren() bool {
	var info unix.Siginfo
	err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	return !errors.Is(err, unix.ECHILD)
}

func waitNoChildren(limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for hasChildren() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// rebootWithArg is reboot(2) with LINUX_REBOOT_CMD_RESTART2 and arg, which
// the kernel hands to the platform's reboot notifiers (the Raspberry Pi
// firmware driver turns "0 tryboot" into its one-shot tryboot flag).
func rebootWithArg(arg string) error {
	p, err := unix.BytePtrFromString(arg)
	if err != nil {
		return err
	}
	_, _, errno := unix.Syscall6(unix.SYS_REBOOT, unix.LINUX_REBOOT_MAGIC1, unix.LINUX_REBOOT_MAGIC2,
		unix.LINUX_REBOOT_CMD_RESTART2, uintptr(unsafe.Pointer(p)), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
