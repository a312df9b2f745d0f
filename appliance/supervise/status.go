package supervise

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ingotdev/ingot/appliance/health"
	"github.com/ingotdev/ingot/mgmt"
)

func exitFromStatus(ws unix.WaitStatus, t time.Time, ran time.Duration) mgmt.Exit {
	e := mgmt.Exit{Time: t, Code: -1, RanSeconds: ran.Seconds()}
	switch {
	case ws.Exited():
		e.Code = ws.ExitStatus()
	case ws.Signaled():
		e.Signal = unix.SignalName(ws.Signal())
		if e.Signal == "" {
			e.Signal = fmt.Sprintf("signal %d", int(ws.Signal()))
		}
	}
	return e
}

// healthStatus is h as the protocol reports it.
func healthStatus(h health.Status) *mgmt.Health {
	return &mgmt.Health{State: string(h.State), Failures: h.Failures, Passes: h.Passes, LastError: h.LastError, LastProbe: h.LastProbe}
}
