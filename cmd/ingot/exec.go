package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ingotdev/ingot/mgmt"
)

// exitStatusError makes ingot exit with the status of a command it ran in
// the appliance, printing nothing.
type exitStatusError struct{ code int }

func (e exitStatusError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// sessionFlags are the flags of exec and shell.
type sessionFlags struct {
	interactive, tty, both bool
}

func addSessionFlags(fs *flag.FlagSet, f *sessionFlags) {
	fs.BoolVar(&f.interactive, "i", false, "keep stdin attached (interactive)")
	fs.BoolVar(&f.tty, "t", false, "give the command a terminal (raw mode here, window size follows)")
	fs.BoolVar(&f.both, "it", false, "-i and -t")
	fs.BoolVar(&f.both, "ti", false, "-i and -t")
}

func runExec(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	fs := newFlagSet("exec", mgmtTargetUsage+" [-i] [-t] SERVICE -- COMMAND [ARG...]", stderr)
	mf := addMgmtFlags(fs)
	var sf sessionFlags
	addSessionFlags(fs, &sf)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) < 2 {
		return usageError{"want SERVICE -- COMMAND [ARG...]"}
	}
	service, argv := rest[0], rest[1:]
	if argv[0] == "--" {
		argv = argv[1:]
	}
	if len(argv) == 0 {
		return usageError{"no COMMAND after SERVICE --"}
	}
	return runSession(ctx, stdout, stderr, mf, sf, mgmt.ExecRequest{Service: service, Argv: argv})
}

func runShell(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	fs := newFlagSet("shell", mgmtTargetUsage+" [-i=false] [-t=false] [-- COMMAND [ARG...]]", stderr)
	mf := addMgmtFlags(fs)
	var sf sessionFlags
	fs.BoolVar(&sf.interactive, "i", true, "keep stdin attached")
	fs.BoolVar(&sf.tty, "t", isTerminal(os.Stdin), "give the command a terminal (default: when stdin is one)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	argv := fs.Args()
	if len(argv) > 0 && argv[0] == "--" {
		argv = argv[1:]
	}
	return runSession(ctx, stdout, stderr, mf, sf, mgmt.ExecRequest{Shell: true, Argv: argv})
}

// runSession runs req with the local terminal or stdio attached and
// returns the command's exit status as an exitStatusError.
func runSession(ctx context.Context, stdout, stderr io.Writer, mf *mgmtFlags, sf sessionFlags, req mgmt.ExecRequest) error {
	if sf.both {
		sf.interactive, sf.tty = true, true
	}
	req.TTY = sf.tty
	in := int(os.Stdin.Fd())
	if sf.tty {
		if !isTerminal(os.Stdin) {
			return usageError{"-t: stdin is not a terminal (leave out -t, or run from one)"}
		}
		if ws, err := unix.IoctlGetWinsize(in, unix.TIOCGWINSZ); err == nil {
			req.Rows, req.Cols = ws.Row, ws.Col
		}
	}
	c, err := mf.client()
	if err != nil {
		return err
	}
	defer c.Close()
	sctx, cancel := mf.withTimeout(ctx)
	sess, err := c.Exec(sctx, req)
	cancel()
	if err != nil {
		return err
	}
	defer sess.Close()

	// Signals: the terminal's size follows the local one; the rest go to
	// the command (in raw mode Ctrl-C is a byte, not a SIGINT here).
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGWINCH, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	go func() {
		for s := range sigs {
			if s == syscall.SIGWINCH {
				if !sf.tty {
					continue
				}
				if ws, err := unix.IoctlGetWinsize(in, unix.TIOCGWINSZ); err == nil {
					_ = sess.Resize(ws.Row, ws.Col)
				}
				continue
			}
			_ = sess.Signal(s.(syscall.Signal))
		}
	}()

	var stdin io.Reader = strings.NewReader("")
	if sf.interactive {
		stdin = os.Stdin
	}
	if sf.tty {
		restore, err := makeRaw(in)
		if err != nil {
			return fmt.Errorf("terminal: %w", err)
		}
		defer restore()
	}
	code, err := sess.Run(stdin, stdout, stderr)
	if err != nil {
		return err
	}
	if code != 0 {
		return exitStatusError{code}
	}
	return nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// makeRaw puts the terminal fd into raw mode (as cfmakeraw does) and
// returns the function that restores it.
func makeRaw(fd int) (func(), error) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	t := *old
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &t); err != nil {
		return nil, err
	}
	return func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}
