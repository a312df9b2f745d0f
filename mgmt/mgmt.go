// Package mgmt is the management protocol of an ingot appliance: the JSON
// types the agent inside the guest serves and the host-side client reads,
// the endpoint paths and header names, the error kinds, and the Go Client
// that speaks it over any transport of mgmt/transport (AF_VSOCK, hybrid
// vsock over a Unix socket, TCP, TCP with a pinned TLS certificate).
//
// The protocol is HTTP/1.1 with JSON bodies, versioned by the /v1 path
// prefix. Every request carries "Authorization: Bearer TOKEN"; the image
// holds only the token's SHA-256. Errors come back as a non-2xx status with
// the body {"error": "message"}.
//
// Endpoints:
//
//	GET  /v1/status                          Status
//	GET  /v1/logs?service=S&n=N&follow=1     NDJSON stream of LogLine (this boot's, from memory)
//	GET  /v1/logs?service=S&n=N&source=disk  NDJSON stream of LogLine kept on perm across boots
//	POST /v1/services/{name}/start|stop|restart   ServiceStatus
//	POST /v1/reboot, /v1/poweroff            202, Accepted; the machine goes down after the reply
//	PUT  /v1/update/root                     body: squashfs; headers Ingot-Sha256, Ingot-Arch,
//	                                         Ingot-Release, Ingot-Allow-Downgrade;
//	                                         Content-Length required; UpdateResult
//	GET  /v1/update/boot?slot=S              BootFiles: per slot, the SHA-256 of the kernel, initramfs, cmdline (and device trees) it boots
//	PUT  /v1/update/boot/{file...}           body: a boot partition file for the slot the root went to; Ingot-Sha256; UpdateResult
//	POST /v1/update/commit                   SlotState (the staged slot becomes the trial)
//	POST /v1/rollback                        SlotState
//	POST /v1/update/pull                     body: PullRequest; PullResult once committed (pull.go)
//	PUT  /v1/update/registry-auth            body: RegistryAuth; 204
//	GET  /v1/sbom                            the image's SBOM (SPDX 2.3 JSON), as built
//	POST /v1/exec                            body: ExecRequest; upgrades to ingot-exec/1 frames (exec.go)
//
// Beside them the agent serves its web status page under /ui/ (GET /
// redirects there), with its own login and session cookie; the bearer
// token does not open it, nor its session cookie the API (appliance/agent).
package mgmt

import (
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// APIPrefix is the path prefix of this protocol version.
const APIPrefix = "/v1"

// Endpoint paths. Service actions are ServicePath(name, action).
const (
	PathStatus     = APIPrefix + "/status"
	PathLogs       = APIPrefix + "/logs"
	PathServices   = APIPrefix + "/services/"
	PathReboot     = APIPrefix + "/reboot"
	PathPoweroff   = APIPrefix + "/poweroff"
	PathUpdateRoot = APIPrefix + "/update/root"
	// PathUpdateBoot is followed by the file name: /v1/update/boot/vmlinuz.
	PathUpdateBoot = APIPrefix + "/update/boot/"
	// PathBootFiles lists the boot files each slot boots with.
	PathBootFiles = APIPrefix + "/update/boot"
	PathCommit    = APIPrefix + "/update/commit"
	PathRollback  = APIPrefix + "/rollback"
	// PathSBOM serves the image's SPDX software bill of materials.
	PathSBOM = APIPrefix + "/sbom"
)

// Query parameters of PathLogs.
const (
	ParamService = "service"
	// ParamLines is how many past lines to send; absent means all the
	// agent holds, 0 none (useful with follow).
	ParamLines = "n"
	// ParamFollow, set to 1, keeps the stream open and sends new lines.
	ParamFollow = "follow"
	// ParamSource, set to SourceDisk, reads the log kept on the perm
	// partition across boots instead of this boot's memory.
	ParamSource = "source"
	// ParamSlot of PathBootFiles limits the answer to one slot.
	ParamSlot = "slot"
)

// Header names.
const (
	HeaderAuthorization = "Authorization"
	// BearerPrefix precedes the token in HeaderAuthorization.
	BearerPrefix = "Bearer "
	// HeaderSHA256 carries the lowercase hex SHA-256 of an update body.
	HeaderSHA256 = "Ingot-Sha256"
	// HeaderArch carries the GOARCH an update image was built for.
	HeaderArch = "Ingot-Arch"
	// HeaderRelease carries the release (decimal) of an update root;
	// absent means 0. See CheckRelease.
	HeaderRelease = "Ingot-Release"
	// HeaderAllowDowngrade, set to "1", lets a root with a lower release
	// than the running one through CheckRelease.
	HeaderAllowDowngrade = "Ingot-Allow-Downgrade"
)

// Content types.
const (
	ContentTypeJSON   = "application/json"
	ContentTypeNDJSON = "application/x-ndjson"
)

// Action is something a service can be told to do.
type Action string

// Service actions.
const (
	ActionStart   Action = "start"
	ActionStop    Action = "stop"
	ActionRestart Action = "restart"
)

// Valid reports whether a is a known action.
func (a Action) Valid() bool {
	return a == ActionStart || a == ActionStop || a == ActionRestart
}

// ServicePath is the endpoint of an action on a service.
func ServicePath(name string, a Action) string {
	return PathServices + name + "/" + string(a)
}

// Features the agent advertises in Status.Features, so a newer client can
// tell what an older agent supports before it pushes anything.
const (
	FeatureUpdateRoot = "update-root"
	FeatureUpdateBoot = "update-boot"
	FeatureRollback   = "rollback"
	FeatureLogsFollow = "logs-follow"
)

// Status is the answer to GET /v1/status.
type Status struct {
	Name    string `json:"name,omitempty"`
	BuildID string `json:"build_id,omitempty"`
	// Release is the running image's release (ingot.yaml release:, 0
	// when unset); CheckRelease compares an update's against it.
	Release uint64 `json:"release,omitempty"`
	Arch    string `json:"arch,omitempty"`
	// Target is the build target of the running image ("vm-amd64", "rpi").
	Target   string `json:"target,omitempty"`
	Hostname string `json:"hostname,omitempty"`
	// Slot is the root slot this boot runs from ("a" or "b"); empty when
	// the kernel was not told (a board booted without the ingot loader).
	Slot string `json:"slot,omitempty"`
	// Trial reports that this boot is an unconfirmed trial of Slot.
	Trial bool `json:"trial"`
	// SlotState is slot.json as it is now on the boot partition; nil when
	// it could not be read (SlotError says why).
	SlotState *SlotState `json:"slot_state,omitempty"`
	SlotError string     `json:"slot_error,omitempty"`
	// LastUpdate is the record of the last committed update and how it
	// ended; nil when there is none (or it could not be read: the record
	// is informational and never an error).
	LastUpdate *LastUpdate `json:"last_update,omitempty"`
	// StartedAt is when init started; UptimeSeconds is measured by the
	// agent when it answered, so a client needs no synchronised clock.
	StartedAt     time.Time  `json:"started_at,omitzero"`
	UptimeSeconds float64    `json:"uptime_s"`
	Perm          PermStatus `json:"perm"`
	// Clock is the NTP client's state; nil from agents without one.
	Clock    *ClockStatus    `json:"clock,omitempty"`
	Services []ServiceStatus `json:"services"`
	// Host is the machine's memory and load when the agent answered; nil
	// from older agents.
	Host *HostStatus `json:"host,omitempty"`
	// Warnings are boot problems that did not stop the boot.
	Warnings []string `json:"warnings,omitempty"`
	// ShuttingDown is set once a reboot or power-off has begun.
	ShuttingDown bool `json:"shutting_down,omitempty"`
	// Pull is the state of the release puller; nil when the image has no
	// release keys.
	Pull *PullStatus `json:"pull,omitempty"`
	// Features lists what this agent supports (Feature* constants).
	Features []string `json:"features,omitempty"`
}

// Uptime returns UptimeSeconds as a duration.
func (s Status) Uptime() time.Duration {
	return time.Duration(s.UptimeSeconds * float64(time.Second))
}

// HasFeature reports whether the agent advertised f.
func (s Status) HasFeature(f string) bool {
	for _, x := range s.Features {
		if x == f {
			return true
		}
	}
	return false
}

// ClockStatus is the state of the appliance's clock: whether its NTP
// client has set it this boot, from which server, by how much, and why it
// has not when it has not.
type ClockStatus struct {
	// Servers are the NTP servers asked first, in order; none means NTP
	// is off.
	Servers []string `json:"servers,omitempty"`
	// Source says where Servers come from (ClockSource*); empty from
	// older agents.
	Source string `json:"source,omitempty"`
	// Fallback are the servers asked after Servers: ingot's default
	// servers when Servers come from DHCP.
	Fallback []string `json:"fallback,omitempty"`
	// Synced is set once a server answered this boot and the clock was
	// set from it; it stays set when later polls fail (Error says so).
	Synced bool `json:"synced"`
	// Server is the server of the last sync.
	Server string `json:"server,omitempty"`
	// OffsetSeconds is how far the clock was off at the last sync
	// (server minus local time).
	OffsetSeconds float64 `json:"offset_s"`
	// LastSync is when the last sync happened (by the corrected clock).
	LastSync time.Time `json:"last_sync,omitzero"`
	// FirstSyncSeconds is how long after the client started the first
	// sync came.
	FirstSyncSeconds float64 `json:"first_sync_s,omitempty"`
	// Restored is the time saved on perm at the last shutdown, set when
	// the clock started earlier than that and was moved forward to it.
	Restored time.Time `json:"restored,omitzero"`
	// Error is why the last attempt failed; empty after a success.
	Error string `json:"error,omitempty"`
	// Now is the appliance's clock when it answered.
	Now time.Time `json:"now,omitzero"`
}

// Where an appliance's NTP servers come from (ClockStatus.Source).
const (
	// ClockSourceConfig: named in ingot.yaml (clock.ntp).
	ClockSourceConfig = "ingot.yaml"
	// ClockSourceDHCP: option 42 of a DHCP server's answer, since
	// ingot.yaml names none; the default servers are the fallback.
	ClockSourceDHCP = "dhcp"
	// ClockSourceDefault: ingot's default servers, since ingot.yaml
	// names none and no DHCP server named any.
	ClockSourceDefault = "default"
)

// SlotState mirrors slot.json: the slot known to work, the trial slot
// waiting to prove itself and its remaining boots, and the last trial
// that fell back.
type SlotState struct {
	Active     string       `json:"active"`
	Trial      string       `json:"trial,omitempty"`
	TriesLeft  int          `json:"tries_left"`
	LastFailed *SlotFailure `json:"last_failed,omitempty"`
}

// SlotFailure records a trial that did not confirm.
type SlotFailure struct {
	Slot   string `json:"slot"`
	Reason string `json:"reason"`
}

// LastUpdate records the last update committed on the appliance: when,
// into which slot, which build and release it installed, which it
// replaced, and how it ended. The agent keeps it on the boot partition
// (layout.LastUpdateFile, in this JSON form) and reports it in Status.
type LastUpdate struct {
	// Started is when the update was committed (the appliance's clock).
	Started time.Time `json:"started"`
	// Slot is the slot the update was written to, its trial slot.
	Slot string `json:"slot"`
	// BuildID and Release are what the update installed: the build id
	// of the slot's command line (layout.ParamBuild) and the release of
	// the root's PUT (HeaderRelease).
	BuildID string `json:"build_id,omitempty"`
	Release uint64 `json:"release"`
	// FromSlot, FromBuildID and FromRelease are what ran when it was
	// committed, the trial's fallback.
	FromSlot    string `json:"from_slot"`
	FromBuildID string `json:"from_build_id,omitempty"`
	FromRelease uint64 `json:"from_release"`
	// Outcome is one of the Outcome* constants.
	Outcome string `json:"outcome"`
	// Finished is when the outcome was decided; zero while pending.
	Finished time.Time `json:"finished,omitzero"`
	// Reason says why a trial failed (slot.json's last_failed reason) or
	// what cancelled or rolled back the update.
	Reason string `json:"reason,omitempty"`
}

// Outcomes of LastUpdate.
const (
	// OutcomePending: committed, the trial not yet booted or decided.
	OutcomePending = "pending"
	// OutcomeConfirmed: the trial proved healthy; the slot is active.
	OutcomeConfirmed = "confirmed"
	// OutcomeFailed: the trial failed and the appliance fell back.
	OutcomeFailed = "failed"
	// OutcomeCancelled: the trial was dropped before it booted (a
	// rollback, or a new update over the same slot).
	OutcomeCancelled = "cancelled"
	// OutcomeRolledBack: a rollback left the updated slot, during its
	// trial or after it was confirmed.
	OutcomeRolledBack = "rolled-back"
)

// Outcomes lists every LastUpdate outcome, in the order above.
func Outcomes() []string {
	return []string{OutcomePending, OutcomeConfirmed, OutcomeFailed, OutcomeCancelled, OutcomeRolledBack}
}

// PermStatus describes the persistent partition.
type PermStatus struct {
	Mounted bool `json:"mounted"`
	// Error says why it is not mounted or why usage is unknown.
	Error      string `json:"error,omitempty"`
	UsedBytes  int64  `json:"used_bytes,omitempty"`
	TotalBytes int64  `json:"total_bytes,omitempty"`
}

// HostStatus is the machine's memory and load average, as the kernel
// reports them (/proc/meminfo, /proc/loadavg), and init's own resident
// memory.
type HostStatus struct {
	MemTotalBytes int64 `json:"mem_total_bytes,omitempty"`
	// MemAvailableBytes is what could be allocated without swapping
	// (MemAvailable): free memory plus caches the kernel can drop.
	MemAvailableBytes int64 `json:"mem_available_bytes,omitempty"`
	// Load is the 1, 5 and 15 minute load average.
	Load [3]float64 `json:"load"`
	// InitRSSBytes is ingot-init's own resident memory (PID 1: the
	// supervisor and this agent), from its /proc/self/status VmRSS; 0
	// from older agents.
	InitRSSBytes int64 `json:"init_rss_bytes,omitempty"`
	// Error says what could not be read.
	Error string `json:"error,omitempty"`
}

// ServiceState is where a service is in its life.
type ServiceState string

// Service states.
const (
	// StateWaiting: a service it is ordered after has not started yet.
	StateWaiting ServiceState = "waiting"
	StateRunning ServiceState = "running"
	// StateBackoff: it exited and will be restarted at NextStart.
	StateBackoff ServiceState = "backoff"
	// StateStopped: stopped on request (stop, or shutdown).
	StateStopped ServiceState = "stopped"
	// StateExited: it exited and its restart policy says to leave it.
	StateExited ServiceState = "exited"
	// StateHeld: it cannot run here (Reason says why, e.g. it needs /perm
	// and /perm is not mounted).
	StateHeld ServiceState = "held"
)

// ServiceStatus is one supervised service, as the supervisor in the
// guest reports it.
type ServiceStatus struct {
	Name  string       `json:"name"`
	State ServiceState `json:"state"`
	// Reason explains the held and waiting states.
	Reason string `json:"reason,omitempty"`
	// PID is the running process (and its process group); 0 otherwise.
	PID int `json:"pid,omitempty"`
	// Restarts counts starts after the first.
	Restarts int `json:"restarts"`
	// StartedAt is when the current or last run began.
	StartedAt time.Time `json:"started_at,omitzero"`
	// NextStart is when a service in backoff starts again.
	NextStart time.Time `json:"next_start,omitzero"`
	LastExit  *Exit     `json:"last_exit,omitempty"`
	// OOMKills counts the service's processes the kernel's OOM killer
	// killed (its cgroup's memory.events), across restarts.
	OOMKills uint64 `json:"oom_kills,omitempty"`
	// Health is the state of the service's health check in its current
	// run; nil without a check or when it does not run.
	Health *Health `json:"health,omitempty"`
}

// Health is where a service's health check stands.
type Health struct {
	// State is starting, healthy or unhealthy.
	State string `json:"state"`
	// Failures counts the probes that failed in a row.
	Failures int `json:"failures,omitempty"`
	// Passes counts the probes that passed in a row (a trial boot is
	// confirmed early once every check has spec.TrialPasses).
	Passes    int       `json:"passes,omitempty"`
	LastError string    `json:"last_error,omitempty"`
	LastProbe time.Time `json:"last_probe,omitzero"`
}

// Exit describes how a run of a service ended.
type Exit struct {
	Time time.Time `json:"time"`
	// Code is the exit status, or -1 when a signal ended the process or it
	// never started.
	Code int `json:"code"`
	// Signal names the signal that ended the process ("SIGKILL").
	Signal string `json:"signal,omitempty"`
	// Error says why the process could not be started.
	Error      string  `json:"error,omitempty"`
	RanSeconds float64 `json:"ran_s"`
	// Requested reports that a stop, restart or shutdown ended it.
	Requested bool `json:"requested,omitempty"`
	// OOMKilled reports that the OOM killer ended the run (the service
	// went over its memory limit).
	OOMKilled bool `json:"oom_killed,omitempty"`
	// Unhealthy reports that init ended the run because its health check
	// turned unhealthy.
	Unhealthy bool `json:"unhealthy,omitempty"`
}

// Ran returns how long the process ran.
func (e Exit) Ran() time.Duration {
	return time.Duration(e.RanSeconds * float64(time.Second))
}

// String returns e.g. "exit status 1", "signal SIGKILL", "start failed: ...",
// with " (out of memory)" after an OOM kill.
func (e Exit) String() string {
	var s string
	switch {
	case e.Error != "":
		return "start failed: " + e.Error
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

// Log streams.
const (
	StreamStdout = "stdout"
	StreamStderr = "stderr"
	// StreamSystem lines are written by ingot-init about the service
	// (started, exited) or are init's own log; also the note that a slow
	// reader missed lines.
	StreamSystem = "system"
)

// SourceDisk is the ParamSource value for the logs kept on perm.
const SourceDisk = "disk"

// LogLine is one line of a log stream; GET /v1/logs sends one JSON object
// per line (NDJSON).
type LogLine struct {
	// Seq numbers the lines of one service from 1; 0 marks a note from
	// the agent (such as lines dropped because the reader was slow).
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Stream string    `json:"stream"`
	Text   string    `json:"text"`
}

// UpdateResult is the answer to a successful update write. SHA256 is the
// hash of what the agent wrote, computed while writing, so the client can
// check it against what it sent.
type UpdateResult struct {
	// Slot is the root slot written ("a" or "b"); empty for boot files.
	Slot   string `json:"slot,omitempty"`
	File   string `json:"file,omitempty"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// BootFiles says, for each root slot ("a", "b"), the lowercase hex
// SHA-256 of each boot file that slot boots with ("vmlinuz", "initrd.img",
// "cmdline.txt"). An update sends only the files its new image changes.
type BootFiles struct {
	Slots map[string]map[string]string `json:"slots"`
}

// Accepted is the answer to reboot and power-off: the request was taken
// and the machine goes down after the reply.
type Accepted struct {
	Accepted string `json:"accepted"`
}

// ErrorBody is the body of every error reply.
type ErrorBody struct {
	Error string `json:"error"`
}

// Root describes a root image sent with Client.UpdateRoot.
type Root struct {
	// Arch is the GOARCH the image was built for; required.
	Arch string
	// Release is the image's release (spec.Appliance.Release).
	Release uint64
	// AllowDowngrade lets a Release lower than the running one through.
	AllowDowngrade bool
}

// header is r as the request headers of PUT PathUpdateRoot.
func (r Root) header() http.Header {
	h := http.Header{HeaderArch: {r.Arch}, HeaderRelease: {strconv.FormatUint(r.Release, 10)}}
	if r.AllowDowngrade {
		h.Set(HeaderAllowDowngrade, "1")
	}
	return h
}

// RootFromHeader reads the release and the downgrade permission of a root
// update's request headers: a missing release is 0 (a client that sends
// none claims no order), a malformed one an ErrInvalid.
func RootFromHeader(h http.Header) (release uint64, allowDowngrade bool, err error) {
	if v := h.Get(HeaderRelease); v != "" {
		release, err = strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, false, fmt.Errorf("header %s: %q is not a release number: %w", HeaderRelease, v, ErrInvalid)
		}
	}
	switch v := h.Get(HeaderAllowDowngrade); v {
	case "", "0":
	case "1":
		allowDowngrade = true
	default:
		return 0, false, fmt.Errorf("header %s: %q is not 0 or 1: %w", HeaderAllowDowngrade, v, ErrInvalid)
	}
	return release, allowDowngrade, nil
}

// CheckRelease is the downgrade rule, the one place it is written: a root
// whose release is lower than the running one is refused unless the
// operator allowed the downgrade. Equal releases pass (a rebuild, a
// development loop). The agent applies it to every root update before a
// byte is written; push applies it before it builds or sends anything, so
// that the refusal comes early. A rollback is not an update and is not
// checked: it returns to the slot the appliance ran before.
func CheckRelease(running, incoming uint64, allowDowngrade bool) error {
	if incoming >= running || allowDowngrade {
		return nil
	}
	return fmt.Errorf("release %d is older than the running release %d; a downgrade needs -allow-downgrade: %w", incoming, running, ErrRejected)
}
