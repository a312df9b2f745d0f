package supervise

import (
	"github.com/ingotdev/ingot/appliance/health"

	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// State is where a service is in its life.
type State string

// States.
const (
	// StateWaiting: a service it is ordered after has not started yet.
	StateWaiting State = "waiting"
	StateRunning State = "running"
	// StateBackoff: it exited and will be restarted at Status.NextStart.
	StateBackoff State = "backoff"
	// StateStopped: stopped on request (Stop, or shutdown).
	StateStopped State = "stopped"
	// StateExited: it exited and its restart policy says to leave it.
	StateExited State = "exited"
	// StateHeld: it cannot run here (Status.Reason says why, e.g. it needs
	// /perm and /perm is not mounted).
	StateHeld State = "held"
)

// Status is a snapshot of one service.
type Status struct {
	Name  string `json:"name"`
	State State  `json:"state"`
	// Reason explains StateHeld and StateWaiting.
	Reason string `json:"reason,omitempty"`
	// PID is the running process (and its process group); 0 otherwise.
	PID int `json:"pid,omitempty"`
	// Restarts counts starts after the first.
	Restarts int `json:"restarts"`
	// StartedAt is when the current or last run began.
	StartedAt time.Time `json:"started_at,omitzero"`
	// NextStart is when a service in backoff starts again.
	NextStart time.Time `json:"next_start,omitzero"`
	// LastExit describes the last run's end; nil before any.
	LastExit *Exit `json:"last_exit,omitempty"`
	// OOMKills counts processes of the service the kernel's OOM killer
	// ended since boot (its cgroup's memory.events oom_kill), as of the
	// last exit.
	OOMKills uint64 `json:"oom_kills,omitempty"`
	// Health is the state of the service's health check during its
	// current run; nil without a check or when it is not running.
	Health *health.Status `json:"health,omitempty"`
}

// Exit describes how a run ended.
type Exit struct {
	Time time.Time `json:"time"`
	// Code is the exit code, or -1 if a signal ended the process or it
	// never started.
	Code int `json:"code"`
	// Signal names the signal that ended the process ("SIGKILL").
	Signal string `json:"signal,omitempty"`
	// Err says why the process could not be started.
	Err string `json:"error,omitempty"`
	// Ran is how long the process ran.
	Ran time.Duration `json:"ran_ns"`
	// Requested reports that Stop, Restart or shutdown ended it.
	Requested bool `json:"requested,omitempty"`
	// OOMKilled reports that the OOM killer killed a process of the
	// service's cgroup during the run (with a memory limit, the whole
	// group: memory.oom.group).
	OOMKilled bool `json:"oom_killed,omitempty"`
	// Unhealthy reports that the run was ended because its health check
	// turned unhealthy (spec.Health.Restart).
	Unhealthy bool `json:"unhealthy,omitempty"`
}

// Failed reports whether the run counts as a failure for the on-failure
// restart policy: a non-zero exit, a signal, or no start at all.
func (e Exit) Failed() bool { return e.Code != 0 }

// String returns e.g. "exit status 1", "signal SIGKILL", "start failed: ...",
// with " (out of memory)" after an OOM kill.
func (e Exit) String() string {
	var s string
	switch {
	case e.Err != "":
		s = "start failed: " + e.Err
	case e.Signal != "":
		s = "signal " + e.Signal
	default:
		s = fmt.Sprintf("exit status %d", e.Code)
	}
	if e.OOMKilled {
		s += " (out of memory)"
	}
	if e.Unhealthy {
		s += " (ended as unhealthy)"
	}
	return s
}

func exitFromStatus(ws unix.WaitStatus, t time.Time, ran time.Duration) Exit {
	e := Exit{Time: t, Code: -1, Ran: ran}
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
