package session

import (
	"context"
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ingotdev/ingot/appliance/supervise"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/spec"
)

type services map[string]mgmt.ServiceStatus

func (s services) Service(name string) (mgmt.ServiceStatus, bool) {
	st, ok := s[name]
	return st, ok
}

// TestStartRefusals: what is refused before any process starts, with the
// error kind the agent turns into a status.
func TestStartRefusals(t *testing.T) {
	a := &spec.Appliance{Services: []spec.Service{
		{Name: "web", Path: "/usr/bin/web"},
		{Name: "box", Path: "/init", Container: &spec.Container{Rootfs: "/oci/box/rootfs"}},
	}}
	st := NewStarter(a, services{"web": {Name: "web", State: mgmt.StateRunning, PID: 5}, "box": {Name: "box", State: mgmt.StateBackoff}},
		supervise.NewReaper(), "/init", t.Logf)
	for _, tc := range []struct {
		req  mgmt.ExecRequest
		kind error
		want string
	}{
		{mgmt.ExecRequest{Shell: true}, mgmt.ErrConflict, "debug: {image: REF}"},
		{mgmt.ExecRequest{Service: "web", Argv: []string{"sh"}}, mgmt.ErrNotFound, `service "web" is not an image service`},
		{mgmt.ExecRequest{Service: "nope", Argv: []string{"sh"}}, mgmt.ErrNotFound, `no service "nope"`},
		{mgmt.ExecRequest{Service: "box", Argv: []string{"sh"}}, mgmt.ErrConflict, `service "box" is backoff, not running`},
	} {
		_, err := st.Start(context.Background(), tc.req)
		if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %v saying %q", tc.req, err, tc.kind, tc.want)
		}
	}
	if st.HasShell() {
		t.Error("HasShell without a debug container")
	}
}

// TestOpenPTY: the slave opened from the master is a terminal whose size
// the master sets, and the master reads EOF once the slave is closed.
func TestOpenPTY(t *testing.T) {
	m, s, err := openPTY()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	sess := &Session{tty: true, master: m}
	if err := sess.Resize(30, 100); err != nil {
		t.Fatal(err)
	}
	ws, err := unix.IoctlGetWinsize(int(s.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Row != 30 || ws.Col != 100 {
		t.Errorf("slave size %+v %v, want 30x100", ws, err)
	}
	if _, err := s.Write([]byte("hi\n")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	var got []byte
	buf := make([]byte, 64)
	r := sess.Stdout()
	for {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			if err.Error() != "EOF" {
				t.Errorf("reading the master after the slave closed: %v, want EOF", err)
			}
			break
		}
	}
	if string(got) != "hi\r\n" {
		t.Errorf("master read %q, want \"hi\\r\\n\"", got)
	}
}
