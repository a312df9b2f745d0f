// Package agent is the management API server inside ingot-init: the HTTP
// side of the protocol of package mgmt, on whatever listener stage1 gives
// it (AF_VSOCK, or TCP wrapped in TLS). It owns authentication, routing,
// streaming and error mapping; what it reports and controls comes from
// small interfaces (Deps) that stage1 implements over its supervisor,
// logs, power handling and the update package, so the server can be tested
// without a guest.
//
// Every request of the API must carry "Authorization: Bearer TOKEN" whose
// SHA-256 equals the configured hash (compared in constant time); otherwise
// the agent answers 401 before routing and nothing else happens. The web
// page under UIPrefix (ui.go, files in package webui) has its own login
// with the same token, session cookies and CSRF tokens. Before that,
// what a peer without the token can make PID 1 hold is bounded: header
// size, header time, and connections in total and per peer (limits.go).
// Other endpoints of the appliance (the metrics) are served with the same
// limits and, through Protect, the same token check (count.go), and every
// answer can be counted by route and status (WithRequestCounter).
package agent

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/ingotdev/ingot/mgmt"
)

// Info describes the running appliance.
type Info interface {
	// Status returns everything about the appliance the agent does not
	// add itself: name, build id, arch, hostname, booted slot and trial
	// flag, StartedAt, perm, services, warnings, ShuttingDown. The agent
	// fills UptimeSeconds (from StartedAt, when zero), SlotState and
	// LastUpdate (from the Updater, when nil) and Features.
	Status() mgmt.Status
}

// Supervisor controls the services.
type Supervisor interface {
	// Service returns a snapshot of one service; false when there is no
	// such service.
	Service(name string) (mgmt.ServiceStatus, bool)
	// Start, Stop and Restart act on a service and return when the action
	// is done (Stop: the process exited) or ctx ends.
	Start(ctx context.Context, name string) error
	Stop(ctx context.Context, name string) error
	Restart(ctx context.Context, name string) error
}

// Logs serves log lines.
type Logs interface {
	// Logs returns the last n lines of the named log (n < 0: all it holds,
	// 0: none) and then, with follow, every new line, as a stream the
	// request's goroutine reads. An unknown name is an error wrapping
	// mgmt.ErrNotFound. Several calls may follow the same log at once.
	Logs(name string, n int, follow bool) (LogStream, error)
}

// A LogStream hands out the lines of one logs request in batches.
type LogStream interface {
	// Next returns the next lines, at least one, oldest first: io.EOF
	// when a stream that does not follow has none left, ctx's error when
	// ctx ends. The slice is valid until the next call.
	Next(ctx context.Context) ([]mgmt.LogLine, error)
}

// DiskLogs reads the logs kept on the perm partition across boots.
type DiskLogs interface {
	// DiskLogs returns the last n lines (n < 0: all) of the named log as
	// kept on disk, oldest first. An unknown name is an error wrapping
	// mgmt.ErrNotFound; no perm partition, one wrapping mgmt.ErrConflict.
	DiskLogs(ctx context.Context, name string, n int) ([]mgmt.LogLine, error)
}

// Power shuts the appliance down. The agent calls it after the reply was
// sent, so the methods may take the machine down at any time after they
// return; they should return once the request was accepted.
type Power interface {
	Reboot(ctx context.Context) error
	Poweroff(ctx context.Context) error
}

// Updater performs A/B updates; *update.Manager implements it. Errors
// wrapping the mgmt error kinds choose the HTTP status (mgmt.StatusCode).
type Updater interface {
	// WriteRoot streams sizeBytes of body, a squashfs with the given hex
	// SHA-256 built for GOARCH arch, into the slot this boot does not run;
	// release is the root's (mgmt.HeaderRelease), for the update's record.
	WriteRoot(ctx context.Context, body io.Reader, sizeBytes int64, sha256Hex, arch string, release uint64) (mgmt.UpdateResult, error)
	// WriteBootFile stages a boot partition file for the next Commit.
	WriteBootFile(ctx context.Context, name string, body io.Reader, sizeBytes int64, sha256Hex string) (mgmt.UpdateResult, error)
	// BootFiles reports the hashes of the boot files of slot ("a", "b",
	// or "" for both).
	BootFiles(ctx context.Context, slot string) (mgmt.BootFiles, error)
	// Commit makes the written slot the trial slot.
	Commit(ctx context.Context) (mgmt.SlotState, error)
	// Rollback cancels a pending trial or makes the other slot the trial.
	Rollback(ctx context.Context) (mgmt.SlotState, error)
	// SlotState returns slot.json as it is now.
	SlotState(ctx context.Context) (mgmt.SlotState, error)
	// LastUpdate returns the record of the last update; nil when there
	// is none (it is informational, never an error).
	LastUpdate(ctx context.Context) *mgmt.LastUpdate
}

// Puller installs signed releases from an OCI registry (appliance/pull).
// Errors wrapping the mgmt error kinds choose the HTTP status.
type Puller interface {
	// Status returns the puller's state for Status.Pull.
	Status() mgmt.PullStatus
	// PullNow verifies and installs the release req names and commits it
	// as the trial slot; the puller then reboots into it by itself.
	PullNow(ctx context.Context, req mgmt.PullRequest) (mgmt.PullResult, error)
	// SetRegistryAuth stores or removes one registry's credentials.
	SetRegistryAuth(ctx context.Context, auth mgmt.RegistryAuth) error
}

// Deps are what the agent serves. Info is required; a nil Supervisor,
// Logs, Power or Updater makes its endpoints answer 501 (mgmt.ErrUnsupported)
// and leaves its feature out of Status.Features.
type Deps struct {
	Info       Info
	Supervisor Supervisor
	Logs       Logs
	// DiskLogs may be nil (answers 501 to source=disk).
	DiskLogs DiskLogs
	Power    Power
	Updater  Updater
	// SBOM returns the image's SPDX document; nil answers 501.
	SBOM func() ([]byte, error)
	// Exec starts debug sessions; nil answers 501 (exec.go).
	Exec Execer
	// Puller pulls signed releases; nil (an image without release keys)
	// answers 501 to PathUpdatePull and PathRegistryAuth. With a Puller,
	// PathUpdateRoot is refused: only signed releases install.
	Puller Puller
}

// Option configures an Agent.
type Option func(*Agent)

// WithLogf sets where the agent logs rejected requests, failed actions and
// power requests (default: nowhere).
func WithLogf(logf func(format string, args ...any)) Option {
	return func(a *Agent) { a.logf = logf }
}

// WithShutdownTimeout bounds how long Serve waits for requests in flight
// after its context ends (default 2 s); log followers end at once.
func WithShutdownTimeout(d time.Duration) Option {
	return func(a *Agent) { a.shutdownTimeout = d }
}

// Agent is the management API server. One Agent may Serve several
// listeners at once.
type Agent struct {
	deps            Deps
	tokenSHA256     []byte
	logf            func(format string, args ...any)
	shutdownTimeout time.Duration
	handler         http.Handler
	// conns bounds connections over all listeners (limits.go).
	conns *connLimiter
	// sessions are the web page's logins; ui its files (ui.go).
	sessions *sessionStore
	ui       *uiAssets
	// count counts answered requests by route and code (count.go).
	count func(route string, code int)
	// sessions bounds debug sessions (exec.go).
	debugSessions sessionSlots
}

// New returns an agent that accepts requests whose bearer token hashes to
// tokenSHA256 (lowercase hex, as in appliance.json's management.token_sha256).
// Without a valid hash there is no agent: it never serves unauthenticated.
func New(deps Deps, tokenSHA256 string, opts ...Option) (*Agent, error) {
	if deps.Info == nil {
		return nil, errors.New("agent: Deps.Info is required")
	}
	sum, err := hex.DecodeString(strings.TrimSpace(tokenSHA256))
	if err != nil || len(sum) != sha256.Size {
		return nil, fmt.Errorf("agent: token_sha256 %q: want 64 hex digits", tokenSHA256)
	}
	a := &Agent{deps: deps, tokenSHA256: sum, logf: func(string, ...any) {}, shutdownTimeout: 2 * time.Second}
	for _, o := range opts {
		o(a)
	}
	a.conns = newConnLimiter(a.logf)
	a.sessions = newSessionStore()
	if a.ui, err = loadUIAssets(); err != nil {
		return nil, err
	}
	a.handler = a.routes()
	return a, nil
}

// Handler returns the agent's HTTP handler, authentication included.
func (a *Agent) Handler() http.Handler { return a.handler }

// Serve answers requests on l until ctx ends, then stops accepting, ends
// log follows, waits up to the shutdown timeout for other requests and
// closes l. It returns nil after ctx ended, else the listener's error.
func (a *Agent) Serve(ctx context.Context, l net.Listener) error {
	return a.ServeHandler(ctx, l, a.handler)
}

// ServeHandler is Serve with another handler (one that Protect or Open
// made): the same connection limits, header bounds and shutdown.
func (a *Agent) ServeHandler(ctx context.Context, l net.Listener, h http.Handler) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		// Every connection is counted from Accept to close (limits.go).
		ConnState:   a.conns.state,
		ConnContext: a.conns.context,
		// Request contexts derive from ctx so that followers end with it.
		BaseContext: func(net.Listener) context.Context { return ctx },
		// net/http's own complaints (bad requests, TLS handshakes) go to
		// the same log as the agent's, throttled: any peer can cause them.
		ErrorLog: log.New(logfWriter(a.conns.log.printf), "agent: ", 0),
	}
	served := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-ctx.Done():
		case <-served:
			return
		}
		sctx, cancel := context.WithTimeout(context.Background(), a.shutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
	}()
	err := srv.Serve(a.conns.listener(l))
	close(served)
	<-stopped
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("agent: serve %s: %w", l.Addr(), err)
}

// logfWriter adapts a printf-style log for log.Logger.
type logfWriter func(format string, args ...any)

func (f logfWriter) Write(b []byte) (int, error) {
	f("%s", strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

func (a *Agent) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+mgmt.PathStatus, a.status)
	mux.HandleFunc("GET "+mgmt.PathLogs, a.logs)
	mux.HandleFunc("POST "+mgmt.PathServices+"{name}/{action}", a.service)
	mux.HandleFunc("POST "+mgmt.PathReboot, a.power(true))
	mux.HandleFunc("POST "+mgmt.PathPoweroff, a.power(false))
	mux.HandleFunc("PUT "+mgmt.PathUpdateRoot, a.updateRoot)
	// A device tree overlay's name has a directory: overlays/NAME.dtbo.
	mux.HandleFunc("PUT "+mgmt.PathUpdateBoot+"{file...}", a.updateBoot)
	mux.HandleFunc("GET "+mgmt.PathBootFiles, a.bootFiles)
	mux.HandleFunc("POST "+mgmt.PathCommit, a.commit)
	mux.HandleFunc("POST "+mgmt.PathRollback, a.rollback)
	mux.HandleFunc("GET "+mgmt.PathSBOM, a.sbom)
	mux.HandleFunc("POST "+mgmt.PathExec, a.exec)
	mux.HandleFunc("POST "+mgmt.PathUpdatePull, a.pull)
	mux.HandleFunc("PUT "+mgmt.PathRegistryAuth, a.registryAuth)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		a.fail(w, r, fmt.Errorf("%s %s: no such endpoint: %w", r.Method, r.URL.Path, mgmt.ErrNotFound))
	})
	api := a.authenticate(mux)
	ui := a.uiRoutes()
	return a.counted(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, UIPrefix):
			ui.ServeHTTP(w, r)
		case r.URL.Path == "/favicon.ico" && r.Method == http.MethodGet:
			// Browsers ask for it whatever the page says.
			http.Redirect(w, r, uiStaticPrefix+"icon.svg", http.StatusMovedPermanently)
		case r.URL.Path == "/" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
			http.Redirect(w, r, UIPrefix, http.StatusSeeOther)
		default:
			api.ServeHTTP(w, r)
		}
	}))
}

// tokenOK reports whether token is the management token: its SHA-256 is
// compared with the configured one in constant time.
func (a *Agent) tokenOK(token string) bool { return tokenMatches(a.tokenSHA256, token) }

// tokenMatches reports, in constant time, whether token's SHA-256 is
// sum; an empty token or sum never matches.
func tokenMatches(sum []byte, token string) bool {
	token = strings.TrimSpace(token)
	got := sha256.Sum256([]byte(token))
	return token != "" && len(sum) == sha256.Size && subtle.ConstantTimeCompare(got[:], sum) == 1
}

// authenticate answers 401 before routing unless the bearer token matches,
// so an unauthenticated client learns nothing, not even which paths exist
// (but for the web page's, which are public in the source anyway).
func (a *Agent) authenticate(next http.Handler) http.Handler {
	return a.authenticateWith(a.tokenSHA256, next)
}

// authenticateWith is authenticate for the token whose SHA-256 is
// tokenSHA256 (the metrics token, for Protect).
func (a *Agent) authenticateWith(tokenSHA256 []byte, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get(mgmt.HeaderAuthorization), mgmt.BearerPrefix)
		if !ok || !tokenMatches(tokenSHA256, token) {
			// One format per reason: each has its own log budget.
			if !ok || token == "" {
				a.conns.log.printf("agent: %s %s from %s: no bearer token", r.Method, r.URL.Path, r.RemoteAddr)
			} else {
				a.conns.log.printf("agent: %s %s from %s: wrong token", r.Method, r.URL.Path, r.RemoteAddr)
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="ingot"`)
			// The body is never read: close rather than drain an upload.
			w.Header().Set("Connection", "close")
			writeJSON(w, http.StatusUnauthorized, mgmt.ErrorBody{Error: mgmt.ErrUnauthorized.Error()})
			return
		}
		a.conns.authorize(r.Context())
		next.ServeHTTP(w, r)
	})
}

// fail answers with err's status and message.
func (a *Agent) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := mgmt.StatusCode(err)
	if code >= 500 || r.Method != http.MethodGet {
		a.logf("agent: %s %s: %v", r.Method, r.URL.Path, err)
	}
	writeJSON(w, code, mgmt.ErrorBody{Error: err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", mgmt.ContentTypeJSON)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := jsonEncoder(w)
	_ = enc.Encode(v) // the client may be gone; nothing to do about it
}
