package mgmt

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"syscall"
	"testing"
)

func TestFrames(t *testing.T) {
	var b bytes.Buffer
	big := bytes.Repeat([]byte("x"), MaxFramePayload+10)
	if err := WriteData(&b, FrameStdout, big); err != nil {
		t.Fatal(err)
	}
	if err := WriteFrame(&b, FrameResize, ResizePayload(30, 100)); err != nil {
		t.Fatal(err)
	}
	if err := WriteFrame(&b, FrameExit, ExitPayload(-1)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, MaxFramePayload)
	var got []byte
	for i := 0; i < 2; i++ {
		ty, p, err := ReadFrame(&b, buf)
		if err != nil || ty != FrameStdout {
			t.Fatalf("frame %d: %v %v", i, ty, err)
		}
		got = append(got, p...)
	}
	if !bytes.Equal(got, big) {
		t.Errorf("WriteData split and ReadFrame joined %d bytes, want %d", len(got), len(big))
	}
	ty, p, err := ReadFrame(&b, buf)
	if rows, cols, perr := ParseResize(p); err != nil || ty != FrameResize || perr != nil || rows != 30 || cols != 100 {
		t.Errorf("resize frame: %v %v %d×%d %v", ty, err, rows, cols, perr)
	}
	ty, p, err = ReadFrame(&b, buf)
	if code, perr := ParseExit(p); err != nil || ty != FrameExit || perr != nil || code != -1 {
		t.Errorf("exit frame: %v %v %d %v", ty, err, code, perr)
	}
	if _, _, err := ReadFrame(&b, buf); !errors.Is(err, io.EOF) {
		t.Errorf("at the end: %v, want io.EOF", err)
	}
}

func TestFrameBounds(t *testing.T) {
	if err := WriteFrame(io.Discard, FrameStdin, make([]byte, MaxFramePayload+1)); !errors.Is(err, ErrFrame) {
		t.Errorf("WriteFrame over the bound: %v, want ErrFrame", err)
	}
	// A header announcing 1 GiB: refused without reading on.
	r := bytes.NewReader([]byte{byte(FrameStdin), 0x40, 0, 0, 0, 'a'})
	_, _, err := ReadFrame(r, make([]byte, MaxFramePayload))
	if !errors.Is(err, ErrFrame) || !strings.Contains(err.Error(), "1073741824") {
		t.Errorf("ReadFrame of a 1 GiB header: %v, want ErrFrame naming the length", err)
	}
	if r.Len() != 1 {
		t.Errorf("ReadFrame read %d bytes of the refused payload", 1-r.Len())
	}
	if _, _, err := ReadFrame(bytes.NewReader([]byte{byte(FrameStdin), 0, 0, 0, 5, 'a'}), make([]byte, MaxFramePayload)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("a truncated frame: %v, want io.ErrUnexpectedEOF", err)
	}
	if _, err := ParseSignal([]byte{byte(syscall.SIGSTOP)}); !errors.Is(err, ErrFrame) {
		t.Errorf("SIGSTOP: %v, want refused", err)
	}
	if s, err := ParseSignal([]byte{byte(syscall.SIGINT)}); err != nil || s != syscall.SIGINT {
		t.Errorf("SIGINT: %v %v", s, err)
	}
	if _, _, err := ParseResize([]byte{1, 2, 3}); !errors.Is(err, ErrFrame) {
		t.Errorf("a 3-byte resize: %v, want ErrFrame", err)
	}
}

func TestExecRequestValidate(t *testing.T) {
	for _, tc := range []struct {
		req ExecRequest
		ok  bool
	}{
		{ExecRequest{Service: "box", Argv: []string{"sh"}}, true},
		{ExecRequest{Shell: true}, true},
		{ExecRequest{Shell: true, Argv: []string{"ps"}}, true},
		{ExecRequest{Service: "box"}, false},
		{ExecRequest{Argv: []string{"sh"}}, false},
		{ExecRequest{Shell: true, Service: "box"}, false},
		{ExecRequest{Service: "../x", Argv: []string{"sh"}}, false},
		{ExecRequest{Service: "box", Argv: []string{""}}, false},
		{ExecRequest{Service: "box", Argv: []string{"sh", "a\x00b"}}, false},
		{ExecRequest{Service: "box", Argv: make([]string, MaxExecArgs+1)}, false},
	} {
		if err := tc.req.Validate(); (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Errorf("%+v: %v, want ok %t", tc.req, err, tc.ok)
		}
	}
}
