package mgmt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
)

// PathExec starts a debug session: a command in a running container
// service (`ingot exec`) or in the appliance's debug container
// (`ingot shell`). The request is a POST with an ExecRequest as its JSON
// body and the headers "Connection: Upgrade" and "Upgrade: ExecUpgrade".
// An agent that accepts answers 101 Switching Protocols; from then on
// both sides speak frames (WriteFrame, ReadFrame) on the connection until
// the agent sends FrameExit and closes it. Any refusal before the switch
// is an ordinary error reply.
const PathExec = APIPrefix + "/exec"

// ExecUpgrade is the protocol named in the Upgrade header of PathExec.
const ExecUpgrade = "ingot-exec/1"

// Features of debug sessions.
const (
	// FeatureExec: PathExec runs commands in container services.
	FeatureExec = "exec"
	// FeatureShell: PathExec with Shell starts the debug container; an
	// agent has it only when the image holds one (ingot.yaml's debug:).
	FeatureShell = "shell"
)

// Bounds of a session request: what an authenticated peer can make the
// agent parse and hand to a process.
const (
	// MaxExecRequestBytes bounds the JSON body of PathExec.
	MaxExecRequestBytes = 64 << 10
	// MaxExecArgs bounds the command's argument count.
	MaxExecArgs = 256
)

// ExecRequest is the body of PathExec.
type ExecRequest struct {
	// Service is the container service to enter; empty with Shell.
	Service string `json:"service,omitempty"`
	// Shell asks for the debug container instead of a service.
	Shell bool `json:"shell,omitempty"`
	// Argv is the command; it is looked up in the container's PATH. With
	// Shell it may be empty: the debug image's own command (or /bin/sh).
	Argv []string `json:"argv,omitempty"`
	// TTY gives the command a terminal (stdout and stderr are one
	// stream); without it, stdin, stdout and stderr are separate pipes.
	TTY bool `json:"tty,omitempty"`
	// Rows and Cols are the terminal's first size (TTY only; 0 leaves
	// the kernel's default).
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
}

// Validate checks the request's shape; errors wrap ErrInvalid.
func (r ExecRequest) Validate() error {
	switch {
	case r.Shell && r.Service != "":
		return fmt.Errorf("exec: service %q with shell: a shell runs in the debug container, not in a service: %w", r.Service, ErrInvalid)
	case !r.Shell && r.Service == "":
		return fmt.Errorf("exec: no service named: %w", ErrInvalid)
	case !r.Shell && len(r.Argv) == 0:
		return fmt.Errorf("exec: service %q: no command: %w", r.Service, ErrInvalid)
	case len(r.Argv) > MaxExecArgs:
		return fmt.Errorf("exec: %d arguments, at most %d: %w", len(r.Argv), MaxExecArgs, ErrInvalid)
	case strings.ContainsAny(r.Service, "/\x00"):
		return fmt.Errorf("exec: service name %q is not valid: %w", r.Service, ErrInvalid)
	case len(r.Argv) > 0 && r.Argv[0] == "":
		return fmt.Errorf("exec: empty command name: %w", ErrInvalid)
	}
	for i, a := range r.Argv {
		if strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("exec: argument %d holds a NUL byte: %w", i, ErrInvalid)
		}
	}
	return nil
}

// FrameType is the first byte of a frame.
type FrameType byte

// Frame types. Client → agent: Stdin, StdinEOF, Resize, Signal. Agent →
// client: Stdout, Stderr, Exit, Error.
const (
	// FrameStdin carries bytes for the command's standard input (with a
	// TTY: keystrokes, so Ctrl-C is the byte 0x03 and the terminal turns
	// it into SIGINT).
	FrameStdin FrameType = 1
	// FrameStdinEOF closes the command's standard input (without a TTY;
	// with one it is ignored: the terminal has no end).
	FrameStdinEOF FrameType = 2
	// FrameResize: 4 bytes, rows and columns, each big-endian uint16.
	FrameResize FrameType = 3
	// FrameSignal: 1 byte, a signal number that IsExecSignal accepts, delivered to
	// the command's process group.
	FrameSignal FrameType = 4
	// FrameStdout carries the command's output (with a TTY, all of it).
	FrameStdout FrameType = 5
	// FrameStderr carries the command's standard error (without a TTY).
	FrameStderr FrameType = 6
	// FrameExit: 4 bytes, the exit status as a big-endian int32 (128+N
	// when signal N ended the command); the last frame of a session.
	FrameExit FrameType = 7
	// FrameError: a UTF-8 message; the session failed after the switch
	// (the command could not be started or was lost). The last frame.
	FrameError FrameType = 8
)

// FrameHeaderBytes is the size of a frame header: the type, then the
// payload's length as a big-endian uint32.
const FrameHeaderBytes = 5

// MaxFramePayload bounds a frame's payload on both sides: a reader
// refuses a longer one and ends the session, so one frame never makes
// the other side hold more than this.
const MaxFramePayload = 32 << 10

// IsExecSignal reports whether a client may send s with FrameSignal:
// SIGHUP, SIGINT, SIGQUIT, SIGKILL, SIGUSR1, SIGUSR2, SIGTERM, SIGWINCH.
func IsExecSignal(s syscall.Signal) bool {
	switch s {
	case syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGKILL,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTERM, syscall.SIGWINCH:
		return true
	}
	return false
}

// ErrFrame marks a malformed frame.
var ErrFrame = errors.New("malformed frame")

// WriteFrame writes one frame; payloads over MaxFramePayload are refused
// (split them with WriteData).
func WriteFrame(w io.Writer, t FrameType, payload []byte) error {
	if len(payload) > MaxFramePayload {
		return fmt.Errorf("frame type %d: payload of %d bytes, at most %d: %w", t, len(payload), MaxFramePayload, ErrFrame)
	}
	b := make([]byte, FrameHeaderBytes+len(payload))
	b[0] = byte(t)
	binary.BigEndian.PutUint32(b[1:FrameHeaderBytes], uint32(len(payload)))
	copy(b[FrameHeaderBytes:], payload)
	_, err := w.Write(b)
	return err
}

// WriteData writes p as frames of type t of at most MaxFramePayload bytes.
func WriteData(w io.Writer, t FrameType, p []byte) error {
	for len(p) > 0 {
		n := min(len(p), MaxFramePayload)
		if err := WriteFrame(w, t, p[:n]); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// ReadFrame reads one frame into buf (which must hold MaxFramePayload
// bytes) and returns its type and payload, a slice of buf. A header that
// announces more than MaxFramePayload is an error wrapping ErrFrame, and
// nothing of that payload is read. io.EOF means the stream ended between
// frames; io.ErrUnexpectedEOF, inside one.
func ReadFrame(r io.Reader, buf []byte) (FrameType, []byte, error) {
	var h [FrameHeaderBytes]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	t := FrameType(h[0])
	n := binary.BigEndian.Uint32(h[1:])
	if n > MaxFramePayload || int(n) > len(buf) {
		return t, nil, fmt.Errorf("frame type %d announces %d bytes, at most %d: %w", t, n, MaxFramePayload, ErrFrame)
	}
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return t, nil, err
	}
	return t, buf[:n], nil
}

// ResizePayload encodes a FrameResize payload.
func ResizePayload(rows, cols uint16) []byte {
	var b [4]byte
	binary.BigEndian.PutUint16(b[0:], rows)
	binary.BigEndian.PutUint16(b[2:], cols)
	return b[:]
}

// ParseResize decodes a FrameResize payload.
func ParseResize(p []byte) (rows, cols uint16, err error) {
	if len(p) != 4 {
		return 0, 0, fmt.Errorf("resize frame of %d bytes, want 4: %w", len(p), ErrFrame)
	}
	return binary.BigEndian.Uint16(p[0:]), binary.BigEndian.Uint16(p[2:]), nil
}

// ParseSignal decodes a FrameSignal payload; only IsExecSignal's signals
// are accepted.
func ParseSignal(p []byte) (syscall.Signal, error) {
	if len(p) != 1 {
		return 0, fmt.Errorf("signal frame of %d bytes, want 1: %w", len(p), ErrFrame)
	}
	s := syscall.Signal(p[0])
	if IsExecSignal(s) {
		return s, nil
	}
	return 0, fmt.Errorf("signal %d is not one a session may send: %w", p[0], ErrFrame)
}

// ExitPayload encodes a FrameExit payload.
func ExitPayload(status int) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(int32(status)))
	return b[:]
}

// ParseExit decodes a FrameExit payload.
func ParseExit(p []byte) (int, error) {
	if len(p) != 4 {
		return 0, fmt.Errorf("exit frame of %d bytes, want 4: %w", len(p), ErrFrame)
	}
	return int(int32(binary.BigEndian.Uint32(p))), nil
}
