package stage1

import (
	"os"

	"golang.org/x/sys/unix"
)

// handledSignals are every signal that could otherwise end init: those
// whose Go default is to exit or crash when sent by kill(2), plus the ones
// with a meaning for init. SIGCHLD belongs to the Reaper; SIGURG and
// SIGWINCH are harmless and frequent.
var handledSignals = []os.Signal{
	unix.SIGHUP, unix.SIGINT, unix.SIGQUIT, unix.SIGILL, unix.SIGTRAP, unix.SIGABRT,
	unix.SIGBUS, unix.SIGFPE, unix.SIGUSR1, unix.SIGSEGV, unix.SIGUSR2, unix.SIGPIPE,
	unix.SIGALRM, unix.SIGTERM, unix.SIGSTKFLT, unix.SIGXCPU, unix.SIGXFSZ,
	unix.SIGVTALRM, unix.SIGPROF, unix.SIGIO, unix.SIGPWR, unix.SIGSYS,
}

// signalRequest maps a signal to a shutdown: SIGTERM, SIGUSR2 and SIGPWR
// power off; SIGINT (what Ctrl-Alt-Del sends once CAD is off) reboots.
// Other signals are ignored.
func signalRequest(sig os.Signal) (shutdownRequest, bool) {
	switch sig {
	case unix.SIGTERM, unix.SIGUSR2, unix.SIGPWR:
		return shutdownRequest{reason: "signal " + unix.SignalName(sig.(unix.Signal))}, true
	case unix.SIGINT:
		return shutdownRequest{reboot: true, reason: "SIGINT (ctrl-alt-del)"}, true
	}
	return shutdownRequest{}, false
}
