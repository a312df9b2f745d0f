package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/ingotdev/ingot/mgmt"
)

func jsonEncoder(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc
}

func unsupported(what string) error {
	return fmt.Errorf("%s: %w", what, mgmt.ErrUnsupported)
}

func (a *Agent) status(w http.ResponseWriter, r *http.Request) {
	st := a.deps.Info.Status()
	if st.UptimeSeconds == 0 && !st.StartedAt.IsZero() {
		st.UptimeSeconds = time.Since(st.StartedAt).Seconds()
	}
	if st.SlotState == nil && st.SlotError == "" && a.deps.Updater != nil {
		if s, err := a.deps.Updater.SlotState(r.Context()); err != nil {
			st.SlotError = err.Error()
		} else {
			st.SlotState = &s
		}
	}
	if st.LastUpdate == nil && a.deps.Updater != nil {
		st.LastUpdate = a.deps.Updater.LastUpdate(r.Context())
	}
	if st.Pull == nil && a.deps.Puller != nil {
		p := a.deps.Puller.Status()
		st.Pull = &p
	}
	if st.Services == nil {
		st.Services = []mgmt.ServiceStatus{}
	}
	st.Features = a.features()
	writeJSON(w, http.StatusOK, st)
}

func (a *Agent) features() []string {
	var f []string
	if a.deps.Logs != nil {
		f = append(f, mgmt.FeatureLogsFollow)
	}
	switch {
	case a.deps.Updater != nil && a.deps.Puller != nil:
		// Roots come only from the puller (pull.go).
		f = append(f, mgmt.FeatureRollback, mgmt.FeatureUpdatePull, mgmt.FeatureSignedOnly)
	case a.deps.Updater != nil:
		f = append(f, mgmt.FeatureUpdateRoot, mgmt.FeatureUpdateBoot, mgmt.FeatureRollback)
	case a.deps.Puller != nil:
		f = append(f, mgmt.FeatureUpdatePull, mgmt.FeatureSignedOnly)
	}
	if a.deps.Exec != nil {
		f = append(f, mgmt.FeatureExec)
		if a.deps.Exec.HasShell() {
			f = append(f, mgmt.FeatureShell)
		}
	}
	return f
}

func (a *Agent) logs(w http.ResponseWriter, r *http.Request) {
	if a.deps.Logs == nil {
		a.fail(w, r, unsupported("logs"))
		return
	}
	q := r.URL.Query()
	name := q.Get(mgmt.ParamService)
	if name == "" {
		a.fail(w, r, fmt.Errorf("logs: the %q parameter names the service: %w", mgmt.ParamService, mgmt.ErrInvalid))
		return
	}
	n := -1
	if s := q.Get(mgmt.ParamLines); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 {
			a.fail(w, r, fmt.Errorf("logs: %s=%q: want a number of lines ≥ 0: %w", mgmt.ParamLines, s, mgmt.ErrInvalid))
			return
		}
		n = v
	}
	follow := false
	switch f := q.Get(mgmt.ParamFollow); f {
	case "", "0", "false":
	case "1", "true":
		follow = true
	default:
		a.fail(w, r, fmt.Errorf("logs: %s=%q: want 1 or 0: %w", mgmt.ParamFollow, f, mgmt.ErrInvalid))
		return
	}
	ctx := r.Context()
	var lines LogStream
	switch src := q.Get(mgmt.ParamSource); src {
	case "":
		var err error
		if lines, err = a.deps.Logs.Logs(name, n, follow); err != nil {
			a.fail(w, r, fmt.Errorf("logs %q: %w", name, err))
			return
		}
	case mgmt.SourceDisk:
		if follow {
			a.fail(w, r, fmt.Errorf("logs: %s=%s cannot be followed; follow this boot's log instead: %w", mgmt.ParamSource, src, mgmt.ErrInvalid))
			return
		}
		if a.deps.DiskLogs == nil {
			a.fail(w, r, unsupported("logs on disk"))
			return
		}
		kept, err := a.deps.DiskLogs.DiskLogs(ctx, name, n)
		if err != nil {
			a.fail(w, r, fmt.Errorf("logs %q on disk: %w", name, err))
			return
		}
		lines = &lineSlice{lines: kept}
	default:
		a.fail(w, r, fmt.Errorf("logs: %s=%q: want %q or nothing: %w", mgmt.ParamSource, src, mgmt.SourceDisk, mgmt.ErrInvalid))
		return
	}
	w.Header().Set("Content-Type", mgmt.ContentTypeNDJSON)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	// The headers go out at once: a follower of a quiet log learns that
	// it is following before the first line.
	if rc.Flush() != nil {
		return
	}
	var enc mgmt.LogLineEncoder
	var buf []byte
	for {
		// A batch is encoded into one buffer and written and flushed
		// together: one TLS record and packet for many lines.
		batch, err := lines.Next(ctx)
		if err != nil {
			return // the end of the lines, or of the request
		}
		buf = buf[:0]
		for _, l := range batch {
			buf = enc.Append(buf, l)
			if len(buf) >= logWriteBytes {
				if _, err := w.Write(buf); err != nil {
					return
				}
				buf = buf[:0]
			}
		}
		if _, err := w.Write(buf); err != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
	}
}

// logWriteBytes is how much of a batch of log lines the logs handler
// encodes before it writes: a TLS record's worth, so that a batch of long
// lines does not grow the buffer.
const logWriteBytes = 16 << 10

func (a *Agent) service(w http.ResponseWriter, r *http.Request) {
	name, action := r.PathValue("name"), mgmt.Action(r.PathValue("action"))
	if !action.Valid() {
		a.fail(w, r, fmt.Errorf("service %q: unknown action %q, want start, stop or restart: %w", name, action, mgmt.ErrNotFound))
		return
	}
	sup := a.deps.Supervisor
	if sup == nil {
		a.fail(w, r, unsupported("services"))
		return
	}
	if _, ok := sup.Service(name); !ok {
		a.fail(w, r, fmt.Errorf("service %q: no such service: %w", name, mgmt.ErrNotFound))
		return
	}
	var err error
	switch action {
	case mgmt.ActionStart:
		err = sup.Start(r.Context(), name)
	case mgmt.ActionStop:
		err = sup.Stop(r.Context(), name)
	case mgmt.ActionRestart:
		err = sup.Restart(r.Context(), name)
	}
	if err != nil {
		a.fail(w, r, fmt.Errorf("%s %q: %w", action, name, err))
		return
	}
	a.logf("agent: %s %q", action, name)
	st, _ := sup.Service(name)
	writeJSON(w, http.StatusOK, st)
}

// powerTimeout bounds the call that hands a reboot or power-off to init.
const powerTimeout = 10 * time.Second

func (a *Agent) power(reboot bool) http.HandlerFunc {
	what := "poweroff"
	if reboot {
		what = "reboot"
	}
	return func(w http.ResponseWriter, r *http.Request) {
		p := a.deps.Power
		if p == nil {
			a.fail(w, r, unsupported(what))
			return
		}
		if a.deps.Info.Status().ShuttingDown {
			a.fail(w, r, fmt.Errorf("%s: already shutting down: %w", what, mgmt.ErrConflict))
			return
		}
		a.logf("agent: %s requested by %s", what, r.RemoteAddr)
		w.Header().Set("Connection", "close")
		writeJSON(w, http.StatusAccepted, mgmt.Accepted{Accepted: what})
		_ = http.NewResponseController(w).Flush()
		// The reply is on the wire; init may now stop everything, the
		// agent included.
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), powerTimeout)
			defer cancel()
			var err error
			if reboot {
				err = p.Reboot(ctx)
			} else {
				err = p.Poweroff(ctx)
			}
			if err != nil {
				a.logf("agent: %s: %v", what, err)
			}
		}()
	}
}

// readTracker records whether a handler started reading a request body.
type readTracker struct {
	r    io.Reader
	read bool
}

func (t *readTracker) Read(b []byte) (int, error) {
	t.read = true
	return t.r.Read(b)
}

// upload runs write over the request body and answers with its result.
func (a *Agent) upload(w http.ResponseWriter, r *http.Request, what string, write func(body io.Reader, size int64) (mgmt.UpdateResult, error)) {
	if a.deps.Updater == nil {
		a.fail(w, r, unsupported(what))
		return
	}
	if r.ContentLength < 0 {
		a.fail(w, r, fmt.Errorf("%s: Content-Length is required: %w", what, mgmt.ErrLengthRequired))
		return
	}
	body := &readTracker{r: r.Body}
	res, err := write(body, r.ContentLength)
	if err != nil {
		// A rejection after the body started flowing (bad magic, wrong
		// hash): the client is still sending, and answering now and closing
		// would hand it a connection reset instead of the reason. So the
		// rest is read and dropped first; it is bounded by the declared
		// length, which the updater already checked against the partition.
		// A rejection before any read never asked for the body (Expect:
		// 100-continue), so the client sends nothing and nothing is read.
		if body.read {
			_, _ = io.Copy(io.Discard, r.Body)
		}
		a.fail(w, r, err)
		return
	}
	a.logf("agent: %s: %d bytes, sha256 %s", what, res.Bytes, res.SHA256)
	writeJSON(w, http.StatusOK, res)
}

func (a *Agent) updateRoot(w http.ResponseWriter, r *http.Request) {
	if a.signedOnly(w, r, "update root") {
		return
	}
	// The downgrade rule runs before the body is read and before the
	// updater touches anything (slot.json included).
	release, allow, err := mgmt.RootFromHeader(r.Header)
	running := a.deps.Info.Status().Release
	if err == nil {
		err = mgmt.CheckRelease(running, release, allow)
	}
	if err != nil {
		a.fail(w, r, fmt.Errorf("update root: %w", err))
		return
	}
	if release < running {
		a.logf("agent: update root: release %d replaces the running release %d: downgrade allowed by the client", release, running)
	}
	a.upload(w, r, "update root", func(body io.Reader, size int64) (mgmt.UpdateResult, error) {
		return a.deps.Updater.WriteRoot(r.Context(), body, size, r.Header.Get(mgmt.HeaderSHA256), r.Header.Get(mgmt.HeaderArch), release)
	})
}

func (a *Agent) updateBoot(w http.ResponseWriter, r *http.Request) {
	file := r.PathValue("file")
	if a.signedOnly(w, r, "update boot file "+file) {
		return
	}
	a.upload(w, r, "update boot file "+file, func(body io.Reader, size int64) (mgmt.UpdateResult, error) {
		return a.deps.Updater.WriteBootFile(r.Context(), file, body, size, r.Header.Get(mgmt.HeaderSHA256))
	})
}

func (a *Agent) commit(w http.ResponseWriter, r *http.Request) {
	if a.signedOnly(w, r, "commit") {
		return
	}
	a.slotChange(w, r, "commit", func(u Updater) (mgmt.SlotState, error) { return u.Commit(r.Context()) })
}

func (a *Agent) rollback(w http.ResponseWriter, r *http.Request) {
	a.slotChange(w, r, "rollback", func(u Updater) (mgmt.SlotState, error) { return u.Rollback(r.Context()) })
}

func (a *Agent) slotChange(w http.ResponseWriter, r *http.Request, what string, f func(Updater) (mgmt.SlotState, error)) {
	if a.deps.Updater == nil {
		a.fail(w, r, unsupported(what))
		return
	}
	s, err := f(a.deps.Updater)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.logf("agent: %s: slot.json now active %q trial %q tries %d", what, s.Active, s.Trial, s.TriesLeft)
	writeJSON(w, http.StatusOK, s)
}

func (a *Agent) bootFiles(w http.ResponseWriter, r *http.Request) {
	if a.deps.Updater == nil {
		a.fail(w, r, unsupported("boot files"))
		return
	}
	b, err := a.deps.Updater.BootFiles(r.Context(), r.URL.Query().Get(mgmt.ParamSlot))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, b)
}

func (a *Agent) sbom(w http.ResponseWriter, r *http.Request) {
	if a.deps.SBOM == nil {
		a.fail(w, r, unsupported("sbom"))
		return
	}
	b, err := a.deps.SBOM()
	if err != nil {
		a.fail(w, r, fmt.Errorf("sbom: %w", err))
		return
	}
	w.Header().Set("Content-Type", "application/spdx+json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

// readJSONBody decodes a JSON request body of at most limit bytes into v
// strictly: known fields, one value, nothing after it. Errors wrap
// mgmt.ErrTooLarge or mgmt.ErrInvalid and start with what.
func readJSONBody(r *http.Request, what string, limit int, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
	if err != nil {
		return fmt.Errorf("%s: reading the request: %w: %w", what, err, mgmt.ErrInvalid)
	}
	if len(body) > limit {
		return fmt.Errorf("%s: request over %d bytes: %w", what, limit, mgmt.ErrTooLarge)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s: request body: %w: %w", what, err, mgmt.ErrInvalid)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%s: request body: data after the JSON object at offset %d: %w", what, dec.InputOffset(), mgmt.ErrInvalid)
	}
	return nil
}
