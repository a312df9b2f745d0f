package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ingotdev/ingot/mgmt"
)

// Execer starts the processes of debug sessions (`ingot exec`, `ingot
// shell`).
type Execer interface {
	// Exec starts req (already validated) and returns its session. An
	// unknown or stopped service wraps mgmt.ErrNotFound or
	// mgmt.ErrConflict; a shell without a debug container,
	// mgmt.ErrConflict.
	Exec(ctx context.Context, req mgmt.ExecRequest) (Session, error)
	// HasShell reports whether the image holds a debug container.
	HasShell() bool
}

// Session is one running command of a debug session.
type Session interface {
	// Stdin is the command's input (with a TTY, the terminal's).
	Stdin() io.Writer
	// CloseStdin ends the input (no-op with a TTY).
	CloseStdin() error
	// Stdout is the command's output (with a TTY, all of it); it ends
	// once the command and whatever inherited it are gone.
	Stdout() io.Reader
	// Stderr is the command's error output; nil with a TTY.
	Stderr() io.Reader
	// Resize sets the terminal size (no-op without a TTY).
	Resize(rows, cols uint16) error
	// Signal sends sig to the command's process group.
	Signal(sig syscall.Signal) error
	// Wait returns the command's exit status (128+N for signal N) once
	// it ended.
	Wait() (int, error)
	// Close kills the command if it still runs and frees the session.
	Close() error
}

// Bounds of debug sessions. Sessions need the token, so these are about
// mistakes and descriptors more than attacks: each holds a process in the
// appliance, a terminal or three pipes, a connection and two frame
// buffers (mgmt.MaxFramePayload each way).
const (
	// maxExecSessions bounds concurrent sessions per agent; one more is
	// refused with 409.
	maxExecSessions = 8
	// execDrainGrace is how long output is still forwarded after the
	// command exited, for what it wrote just before; something that
	// inherited the terminal and lives on does not hold the session.
	execDrainGrace = 2 * time.Second
)

// sessionSlots counts an agent's running sessions.
type sessionSlots struct {
	mu   sync.Mutex
	n    int
	next uint64
}

// take claims a slot and returns the session's number.
func (s *sessionSlots) take() (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n >= maxExecSessions {
		return 0, false
	}
	s.n++
	s.next++
	return s.next, true
}

func (s *sessionSlots) release() {
	s.mu.Lock()
	s.n--
	s.mu.Unlock()
}

func (a *Agent) exec(w http.ResponseWriter, r *http.Request) {
	if a.deps.Exec == nil {
		a.fail(w, r, unsupported("exec"))
		return
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), mgmt.ExecUpgrade) || !headerHasToken(r.Header, "Connection", "upgrade") {
		a.fail(w, r, fmt.Errorf("exec: want the headers Connection: Upgrade and Upgrade: %s: %w", mgmt.ExecUpgrade, mgmt.ErrInvalid))
		return
	}
	var req mgmt.ExecRequest
	if err := readJSONBody(r, "exec", mgmt.MaxExecRequestBytes, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	if err := req.Validate(); err != nil {
		a.fail(w, r, err)
		return
	}
	id, ok := a.debugSessions.take()
	if !ok {
		a.fail(w, r, fmt.Errorf("exec: %d sessions are open already, the most this agent holds: %w", maxExecSessions, mgmt.ErrConflict))
		return
	}
	defer a.debugSessions.release()
	what := "shell"
	if !req.Shell {
		what = "exec in " + req.Service
	}
	what = fmt.Sprintf("%s %q (tty %t)", what, req.Argv, req.TTY)
	ctx := r.Context()
	sess, err := a.deps.Exec.Exec(ctx, req)
	if err != nil {
		a.logf("agent: session %d from %s: %s refused: %v", id, r.RemoteAddr, what, err)
		a.fail(w, r, fmt.Errorf("%s: %w", what, err))
		return
	}
	defer sess.Close()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		a.logf("agent: session %d from %s: %s: cannot switch protocols: %v", id, r.RemoteAddr, what, err)
		a.fail(w, r, fmt.Errorf("exec: cannot switch protocols on this connection: %w", err))
		return
	}
	defer conn.Close()
	start := time.Now()
	a.logf("agent: session %d from %s: %s started", id, r.RemoteAddr, what)
	code, err := runSession(ctx, conn, brw, sess)
	if err != nil {
		a.logf("agent: session %d from %s: %s ended after %s: %v", id, r.RemoteAddr, what, time.Since(start).Round(time.Millisecond), err)
		return
	}
	a.logf("agent: session %d from %s: %s ended after %s: exit status %d", id, r.RemoteAddr, what, time.Since(start).Round(time.Millisecond), code)
}

// headerHasToken reports whether a comma-separated header holds token.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), token) {
				return true
			}
		}
	}
	return false
}

// frameWriter serializes frames from the output pumps.
type frameWriter struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (f *frameWriter) write(t mgmt.FrameType, p []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := mgmt.WriteData(f.w, t, p); err != nil {
		return err
	}
	if len(p) == 0 {
		if err := mgmt.WriteFrame(f.w, t, nil); err != nil {
			return err
		}
	}
	return f.w.Flush()
}

// runSession switches the hijacked connection to frames and relays them
// until the command exits (then it sends FrameExit and returns the status),
// the client goes away or ctx ends (then the command is killed by the
// caller's Close).
func runSession(ctx context.Context, conn net.Conn, brw *bufio.ReadWriter, sess Session) (int, error) {
	if _, err := brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + mgmt.ExecUpgrade + "\r\n\r\n"); err != nil {
		return -1, err
	}
	if err := brw.Flush(); err != nil {
		return -1, err
	}
	// The handshake's deadlines do not apply to a session.
	_ = conn.SetDeadline(time.Time{})
	out := &frameWriter{w: brw.Writer}

	clientGone := make(chan error, 1)
	go func() { clientGone <- readClientFrames(brw.Reader, sess) }()

	var pumps sync.WaitGroup
	pump := func(t mgmt.FrameType, r io.Reader) {
		defer pumps.Done()
		buf := make([]byte, mgmt.MaxFramePayload)
		for {
			n, err := r.Read(buf)
			if n > 0 && out.write(t, buf[:n]) != nil {
				return
			}
			if err != nil {
				return
			}
		}
	}
	pumps.Add(1)
	go pump(mgmt.FrameStdout, sess.Stdout())
	if e := sess.Stderr(); e != nil {
		pumps.Add(1)
		go pump(mgmt.FrameStderr, e)
	}
	pumped := make(chan struct{})
	go func() { pumps.Wait(); close(pumped) }()

	exited := make(chan struct{})
	var code int
	var waitErr error
	go func() { code, waitErr = sess.Wait(); close(exited) }()

	select {
	case <-exited:
	case err := <-clientGone:
		if err == nil {
			err = errors.New("the client closed the session")
		}
		return -1, err
	case <-ctx.Done():
		_ = out.write(mgmt.FrameError, []byte("the agent is shutting down"))
		return -1, ctx.Err()
	}
	// What the command wrote last is still in the pipes or the terminal.
	grace := time.NewTimer(execDrainGrace)
	defer grace.Stop()
	select {
	case <-pumped:
	case <-grace.C:
	}
	if waitErr != nil {
		_ = out.write(mgmt.FrameError, []byte(waitErr.Error()))
		return -1, waitErr
	}
	if err := out.write(mgmt.FrameExit, mgmt.ExitPayload(code)); err != nil {
		return code, fmt.Errorf("sending the exit status %d: %w", code, err)
	}
	return code, nil
}

// readClientFrames applies the client's frames to sess until the
// connection ends (nil) or a frame is malformed (its error).
func readClientFrames(r io.Reader, sess Session) error {
	buf := make([]byte, mgmt.MaxFramePayload)
	for {
		t, p, err := mgmt.ReadFrame(r, buf)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("from the client: %w", err)
		}
		switch t {
		case mgmt.FrameStdin:
			if _, err := sess.Stdin().Write(p); err != nil {
				// The command closed its input; keep reading for
				// resizes and signals.
				continue
			}
		case mgmt.FrameStdinEOF:
			_ = sess.CloseStdin()
		case mgmt.FrameResize:
			rows, cols, err := mgmt.ParseResize(p)
			if err != nil {
				return fmt.Errorf("from the client: %w", err)
			}
			_ = sess.Resize(rows, cols)
		case mgmt.FrameSignal:
			sig, err := mgmt.ParseSignal(p)
			if err != nil {
				return fmt.Errorf("from the client: %w", err)
			}
			_ = sess.Signal(sig)
		default:
			return fmt.Errorf("from the client: frame type %d: %w", t, mgmt.ErrFrame)
		}
	}
}
