package stage1

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ingotdev/ingot/appliance/logs"
	"github.com/ingotdev/ingot/appliance/supervise"
	"github.com/ingotdev/ingot/mgmt"
)

func TestSignalRequest(t *testing.T) {
	for _, tc := range []struct {
		sig    os.Signal
		ok     bool
		reboot bool
	}{
		{unix.SIGTERM, true, false},
		{unix.SIGUSR2, true, false},
		{unix.SIGPWR, true, false},
		{unix.SIGINT, true, true},
		{unix.SIGHUP, false, false},
		{unix.SIGQUIT, false, false},
	} {
		req, ok := signalRequest(tc.sig)
		if ok != tc.ok || req.reboot != tc.reboot {
			t.Errorf("signalRequest(%v) = %+v, %v; want reboot %v, %v", tc.sig, req, ok, tc.reboot, tc.ok)
		}
	}
	for _, sig := range []os.Signal{unix.SIGCHLD, unix.SIGKILL, unix.SIGSTOP} {
		for _, h := range handledSignals {
			if h == sig {
				t.Errorf("handledSignals has %v", sig)
			}
		}
	}
}

func event(typ, code uint16, value int32) []byte {
	b := make([]byte, inputEventBytes)
	tv := inputEventBytes - 8
	binary.NativeEndian.PutUint16(b[tv:], typ)
	binary.NativeEndian.PutUint16(b[tv+2:], code)
	binary.NativeEndian.PutUint32(b[tv+4:], uint32(value))
	return b
}

func TestPowerButtonEvents(t *testing.T) {
	const evSyn, keyA = 0, 30
	var in bytes.Buffer
	in.Write(event(unix.EV_KEY, keyA, 1))
	in.Write(event(evSyn, 0, 0))
	in.Write(event(unix.EV_KEY, keyPower, 0)) // release only
	if pressed(bytes.NewReader(in.Bytes())) {
		t.Errorf("pressed(no KEY_POWER press) = true")
	}
	in.Write(event(unix.EV_KEY, keyPower, 1))
	if !pressed(bytes.NewReader(in.Bytes())) {
		t.Errorf("pressed(KEY_POWER press) = false")
	}
	if want := 24; inputEventBytes != want && unix.SizeofPtr == 8 {
		t.Errorf("inputEventBytes = %d, want %d on 64-bit", inputEventBytes, want)
	}
}

func newTestSystem() *System {
	c := logs.NewConsole(&bytes.Buffer{}, 0)
	return &System{
		startedAt:    time.Now(),
		reaper:       supervise.NewReaper(),
		initLog:      logs.NewSink(InitLogName, logs.NewRing(1<<16), c),
		console:      c,
		shutdownReq:  make(chan shutdownRequest, 1),
		shuttingDown: make(chan struct{}),
	}
}

func TestShutdownRequestOnce(t *testing.T) {
	s := newTestSystem()
	if err := s.Shutdown(context.Background(), true); err != nil {
		t.Fatalf("first Shutdown() = %v", err)
	}
	if err := s.Shutdown(context.Background(), false); !errors.Is(err, ErrShuttingDown) {
		t.Errorf("second Shutdown() = %v, want ErrShuttingDown", err)
	}
	if req := <-s.shutdownReq; !req.reboot {
		t.Errorf("queued request = %+v, want the first one (reboot)", req)
	}
}

func TestStatusAndLogs(t *testing.T) {
	s := newTestSystem()
	s.perm = mgmt.PermStatus{Error: "no partition"}
	s.warnf("perm: %s", "no partition")
	st := s.Status()
	if st.Perm.Mounted || st.Perm.Error != "no partition" || len(st.Warnings) != 1 || st.Warnings[0] != "perm: no partition" {
		t.Errorf("Status() = %+v", st)
	}
	sink, ok := s.Logs(InitLogName)
	ring := sink.Ring()
	if !ok || ring.Len() != 1 || ring.Tail(1)[0].Text != "warning: perm: no partition" {
		t.Errorf("Logs(init) = %v, %v", ring.Tail(0), ok)
	}
	if _, ok := s.Logs("web"); ok {
		t.Errorf("Logs(web) without a supervisor = ok")
	}
	st.Warnings[0] = "changed"
	if s.Status().Warnings[0] != "perm: no partition" {
		t.Errorf("Status() shares its Warnings slice with the System")
	}
}

func TestUptime(t *testing.T) {
	if got := uptime(); got == "unknown" {
		t.Errorf("uptime() = %q", got)
	}
}
