package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ingotdev/ingot/appliance/agent/webui"
	"github.com/ingotdev/ingot/mgmt"
)

// The web page lives beside the API on the same listeners, under UIPrefix,
// with its own authentication: a login with the management token gives a
// session cookie (HttpOnly, Secure, SameSite=Strict, with an expiry), and
// every state-changing request must also carry the session's CSRF token in
// csrfHeader. Its JSON under uiAPIPrefix is the API's own handlers, limited
// to what the page shows and does: status, logs, SBOM and service actions.
// Everything outside UIPrefix (but GET /, which redirects there) still
// needs the bearer token before routing.
const (
	// UIPrefix is the web page's path prefix.
	UIPrefix       = "/ui/"
	uiLoginPath    = UIPrefix + "login"
	uiLogoutPath   = UIPrefix + "logout"
	uiSessionPath  = UIPrefix + "session"
	uiAPIPrefix    = UIPrefix + "api/"
	uiStaticPrefix = UIPrefix + "static/"

	// sessionCookie names the session cookie.
	sessionCookie = "ingot_session"
	// csrfHeader carries the session's CSRF token on POST requests
	// (app.js sends it).
	csrfHeader = "X-Ingot-Csrf"
	// loginTokenField is the login form's token field.
	loginTokenField = "token"
	// maxLoginBodyBytes bounds the login form a peer without the token
	// can send: the token is under 100 bytes.
	maxLoginBodyBytes = 4 << 10
)

// contentSecurityPolicy allows the page's own script, style and images
// and requests to its own origin, nothing inline, no frames around it.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// loginErrorMarker is the attribute of login.html's error paragraph; the
// page for a failed login drops the "hidden" after it.
const loginErrorMarker = "data-login-error hidden"

// uiAsset is one embedded file of the page.
type uiAsset struct {
	body        []byte
	contentType string
	etag        string
}

// uiAssets are the page's files by name, and the two login pages.
type uiAssets struct {
	static      map[string]uiAsset
	index       []byte
	login       []byte
	loginFailed []byte
}

// loadUIAssets reads the page's files from the embedded webui package.
func loadUIAssets() (*uiAssets, error) {
	files := webui.Files()
	read := func(name string) ([]byte, error) {
		b, err := fs.ReadFile(files, name)
		if err != nil {
			return nil, fmt.Errorf("agent: web page: %w", err)
		}
		return b, nil
	}
	u := &uiAssets{static: map[string]uiAsset{}}
	// The files under uiStaticPrefix and their types; a file of webui not
	// listed here is not served.
	for name, ct := range map[string]string{
		"app.js":    "text/javascript; charset=utf-8",
		"style.css": "text/css; charset=utf-8",
		"icon.svg":  "image/svg+xml",
	} {
		b, err := read(name)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(b)
		u.static[name] = uiAsset{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:16]) + `"`}
	}
	var err error
	if u.index, err = read("index.html"); err != nil {
		return nil, err
	}
	if u.login, err = read("login.html"); err != nil {
		return nil, err
	}
	if strings.Count(string(u.login), loginErrorMarker) != 1 {
		return nil, fmt.Errorf("agent: web page: login.html must hold %q once", loginErrorMarker)
	}
	u.loginFailed = []byte(strings.Replace(string(u.login), loginErrorMarker, "data-login-error", 1))
	return u, nil
}

// uiRoutes is the handler of every path under UIPrefix.
func (a *Agent) uiRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+UIPrefix+"{$}", a.uiIndex)
	mux.HandleFunc("GET "+uiLoginPath, a.uiLoginPage)
	mux.HandleFunc("POST "+uiLoginPath, a.uiLogin)
	mux.HandleFunc("POST "+uiLogoutPath, a.withSession(true, a.uiLogout))
	mux.HandleFunc("GET "+uiSessionPath, a.withSession(false, a.uiSession))
	mux.HandleFunc("GET "+uiAPIPrefix+"status", a.withSession(false, a.status))
	mux.HandleFunc("GET "+uiAPIPrefix+"logs", a.withSession(false, a.logs))
	mux.HandleFunc("GET "+uiAPIPrefix+"sbom", a.withSession(false, a.sbom))
	mux.HandleFunc("POST "+uiAPIPrefix+"services/{name}/{action}", a.withSession(true, a.service))
	mux.HandleFunc("GET "+uiStaticPrefix+"{file}", a.uiStatic)
	mux.HandleFunc(UIPrefix, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, mgmt.ErrorBody{Error: fmt.Sprintf("%s %s: %v", r.Method, r.URL.Path, mgmt.ErrNotFound)})
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		// Not no-referrer: with it, browsers send "Origin: null" on the
		// page's own form posts, which checkSameOrigin must refuse.
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if err := checkSameOrigin(r); err != nil {
				a.conns.log.printf("agent: %s %s from %s: %v", r.Method, r.URL.Path, r.RemoteAddr, err)
				writeJSON(w, http.StatusForbidden, mgmt.ErrorBody{Error: err.Error()})
				return
			}
		}
		mux.ServeHTTP(w, r)
	})
}

// checkSameOrigin refuses a state-changing request that a browser marks
// as sent from another site (Origin, Sec-Fetch-Site). Requests without
// these headers (not from a browser) pass; the session cookie
// (SameSite=Strict) and the CSRF token are the other two locks, and the
// login needs the token itself.
func checkSameOrigin(r *http.Request) error {
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "", "same-origin", "none":
	default:
		return fmt.Errorf("forbidden: a request from another site (Sec-Fetch-Site: %s)", site)
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return fmt.Errorf("forbidden: a request from origin %q to host %q", o, r.Host)
		}
	}
	return nil
}

// sessionOf returns the request's live session and its id, or nil.
func (a *Agent) sessionOf(r *http.Request) (*session, string) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil, ""
	}
	return a.sessions.lookup(c.Value), c.Value
}

// withSession runs h for requests of a live session and answers 401
// otherwise; with csrf, also 403 unless csrfHeader holds the session's
// CSRF token. A session's request counts as authenticated for the
// connection limits, like one with the bearer token.
func (a *Agent) withSession(csrf bool, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess, _ := a.sessionOf(r)
		if sess == nil {
			w.Header().Set("Connection", "close")
			writeJSON(w, http.StatusUnauthorized, mgmt.ErrorBody{Error: "unauthorized: no session, log in with the management token"})
			return
		}
		if csrf && !sess.checkCSRF(r.Header.Get(csrfHeader)) {
			a.conns.log.printf("agent: %s %s from %s: no CSRF token or a wrong one", r.Method, r.URL.Path, r.RemoteAddr)
			w.Header().Set("Connection", "close")
			writeJSON(w, http.StatusForbidden, mgmt.ErrorBody{Error: "forbidden: missing or wrong CSRF token (" + csrfHeader + ")"})
			return
		}
		a.conns.authorize(r.Context())
		w.Header().Set("Cache-Control", "no-store")
		h(w, r)
	}
}

func (a *Agent) uiIndex(w http.ResponseWriter, r *http.Request) {
	if sess, _ := a.sessionOf(r); sess == nil {
		http.Redirect(w, r, uiLoginPath, http.StatusSeeOther)
		return
	}
	a.conns.authorize(r.Context())
	writePage(w, http.StatusOK, a.ui.index)
}

func (a *Agent) uiLoginPage(w http.ResponseWriter, r *http.Request) {
	writePage(w, http.StatusOK, a.ui.login)
}

// uiLogin checks the token of the login form and starts a session.
func (a *Agent) uiLogin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginBodyBytes)
	if err := r.ParseForm(); err != nil {
		w.Header().Set("Connection", "close")
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeJSON(w, http.StatusRequestEntityTooLarge, mgmt.ErrorBody{Error: fmt.Sprintf("login: the form is over %d bytes", maxLoginBodyBytes)})
			return
		}
		writeJSON(w, http.StatusBadRequest, mgmt.ErrorBody{Error: fmt.Sprintf("login: %v", err)})
		return
	}
	if !a.tokenOK(r.PostForm.Get(loginTokenField)) {
		a.conns.log.printf("agent: web login from %s: wrong token", r.RemoteAddr)
		w.Header().Set("Connection", "close")
		writePage(w, http.StatusUnauthorized, a.ui.loginFailed)
		return
	}
	a.conns.authorize(r.Context())
	id, sess, err := a.sessions.create()
	if err != nil {
		a.fail(w, r, fmt.Errorf("login: new session: %w", err))
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: id, Path: "/",
		Expires: sess.expires, MaxAge: int(a.sessions.lifetime / time.Second),
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode,
	})
	a.logf("agent: web login from %s", r.RemoteAddr)
	http.Redirect(w, r, UIPrefix, http.StatusSeeOther)
}

func (a *Agent) uiLogout(w http.ResponseWriter, r *http.Request) {
	_, id := a.sessionOf(r)
	a.sessions.end(id)
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode,
	})
	w.WriteHeader(http.StatusNoContent)
}

// uiSessionInfo is what the page learns about its session.
type uiSessionInfo struct {
	CSRF    string    `json:"csrf"`
	Expires time.Time `json:"expires"`
}

func (a *Agent) uiSession(w http.ResponseWriter, r *http.Request) {
	sess, _ := a.sessionOf(r)
	writeJSON(w, http.StatusOK, uiSessionInfo{CSRF: sess.csrf, Expires: sess.expires})
}

// uiStatic serves the page's script, style and icon. They hold no
// secret, so the login page can use them without a session.
func (a *Agent) uiStatic(w http.ResponseWriter, r *http.Request) {
	f, ok := a.ui.static[r.PathValue("file")]
	if !ok {
		writeJSON(w, http.StatusNotFound, mgmt.ErrorBody{Error: fmt.Sprintf("%s: %v", r.URL.Path, mgmt.ErrNotFound)})
		return
	}
	h := w.Header()
	h.Set("ETag", f.etag)
	h.Set("Cache-Control", "no-cache")
	if r.Header.Get("If-None-Match") == f.etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", f.contentType)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(f.body)
}

func writePage(w http.ResponseWriter, code int, page []byte) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(page)
}
