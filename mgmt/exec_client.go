package mgmt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
)

// ExecSession is an open debug session (PathExec): the command runs in the
// appliance until it exits or the session is closed. Resize, Signal and
// Close may be called while Run runs.
type ExecSession struct {
	rwc io.ReadWriteCloser
	wmu sync.Mutex // one frame at a time
}

// Exec asks the agent to start req and returns the session once the agent
// switched protocols. ctx bounds only the start; the session lasts until
// Run returns or Close.
func (c *Client) Exec(ctx context.Context, req ExecRequest) (*ExecSession, error) {
	if err := req.Validate(); err != nil {
		return nil, fmt.Errorf("mgmt: %w", err)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("mgmt: exec: %w", err)
	}
	if len(body) > MaxExecRequestBytes {
		return nil, fmt.Errorf("mgmt: exec: request of %d bytes, at most %d: %w", len(body), MaxExecRequestBytes, ErrInvalid)
	}
	// The request's context would end the connection with it, so the
	// session runs on a context of its own, cancelled by ctx only until
	// the switch.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	r, err := c.newRequest(sctx, http.MethodPost, PathExec, bytes.NewReader(body))
	if err != nil {
		cancel()
		return nil, err
	}
	r.Header.Set("Content-Type", ContentTypeJSON)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", ExecUpgrade)
	resp, err := c.http.Do(r)
	if !stop() || err != nil {
		cancel()
		if err == nil {
			resp.Body.Close()
			err = ctx.Err()
		}
		return nil, fmt.Errorf("mgmt: %s POST %s: %w", c.target, PathExec, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer cancel()
		defer resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			return nil, fmt.Errorf("mgmt: POST %s: the agent answered %s instead of switching to %s", PathExec, resp.Status, ExecUpgrade)
		}
		return nil, readAPIError(resp)
	}
	if !strings.EqualFold(resp.Header.Get("Upgrade"), ExecUpgrade) {
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("mgmt: POST %s: the agent switched to %q, want %q", PathExec, resp.Header.Get("Upgrade"), ExecUpgrade)
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("mgmt: POST %s: the HTTP client gave no bidirectional stream", PathExec)
	}
	return &ExecSession{rwc: closeCancel{rwc, cancel}}, nil
}

// closeCancel also ends the session's context when it is closed.
type closeCancel struct {
	io.ReadWriteCloser
	cancel context.CancelFunc
}

func (c closeCancel) Close() error {
	err := c.ReadWriteCloser.Close()
	c.cancel()
	return err
}

func (s *ExecSession) send(t FrameType, p []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if t == FrameStdin {
		return WriteData(s.rwc, t, p)
	}
	return WriteFrame(s.rwc, t, p)
}

// Resize tells the command's terminal its new size.
func (s *ExecSession) Resize(rows, cols uint16) error {
	return s.send(FrameResize, ResizePayload(rows, cols))
}

// Signal sends sig (one IsExecSignal accepts) to the command's process
// group.
func (s *ExecSession) Signal(sig syscall.Signal) error {
	if !IsExecSignal(sig) {
		return fmt.Errorf("mgmt: exec session: %v cannot be sent to the command", sig)
	}
	return s.send(FrameSignal, []byte{byte(sig)})
}

// Close ends the session; the agent kills the command if it still runs.
func (s *ExecSession) Close() error { return s.rwc.Close() }

// Run copies stdin to the command (then closes its input) and its output
// to stdout and stderr (with a TTY, all output goes to stdout) until the
// command exits, and returns its exit status. A stdin that never ends is
// fine: Run returns when the command does. The session is closed when Run
// returns.
func (s *ExecSession) Run(stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	defer s.Close()
	if stdin != nil {
		go func() {
			buf := make([]byte, MaxFramePayload)
			for {
				n, err := stdin.Read(buf)
				if n > 0 && s.send(FrameStdin, buf[:n]) != nil {
					return
				}
				if err != nil {
					_ = s.send(FrameStdinEOF, nil)
					return
				}
			}
		}()
	}
	buf := make([]byte, MaxFramePayload)
	for {
		t, p, err := ReadFrame(s.rwc, buf)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return -1, fmt.Errorf("mgmt: exec session: %w (the connection ended before the command's exit status)", err)
		}
		switch t {
		case FrameStdout:
			if _, err := stdout.Write(p); err != nil {
				return -1, fmt.Errorf("mgmt: exec session: writing output: %w", err)
			}
		case FrameStderr:
			if _, err := stderr.Write(p); err != nil {
				return -1, fmt.Errorf("mgmt: exec session: writing error output: %w", err)
			}
		case FrameExit:
			code, err := ParseExit(p)
			if err != nil {
				return -1, fmt.Errorf("mgmt: exec session: %w", err)
			}
			return code, nil
		case FrameError:
			return -1, fmt.Errorf("mgmt: exec session: %s", p)
		default:
			return -1, fmt.Errorf("mgmt: exec session: unexpected frame type %d from the agent: %w", t, ErrFrame)
		}
	}
}
