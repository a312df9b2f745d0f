package agent_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ingotdev/ingot/appliance/logs"
	"github.com/ingotdev/ingot/mgmt"
)

// uiClient speaks to the agent as a browser would, one cookie at a time,
// without following redirects.
type uiClient struct {
	t      *testing.T
	base   string
	cookie *http.Cookie
}

func (e *env) ui() *uiClient { return &uiClient{t: e.t, base: "http://" + e.addr} }

func (u *uiClient) do(method, path string, body string, hdr map[string]string) (*http.Response, string) {
	u.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u.base+path, r)
	if err != nil {
		u.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if u.cookie != nil {
		req.AddCookie(u.cookie)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		u.t.Fatalf("%s %s: %v", method, path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// login posts the token and keeps the session cookie it gets.
func (u *uiClient) login(tok string) *http.Response {
	u.t.Helper()
	resp, _ := u.do(http.MethodPost, "/ui/login", url.Values{"token": {tok}}.Encode(), nil)
	for _, c := range resp.Cookies() {
		if c.Name == "ingot_session" {
			u.cookie = c
		}
	}
	return resp
}

func (u *uiClient) csrf() string {
	u.t.Helper()
	resp, body := u.do(http.MethodGet, "/ui/session", "", nil)
	var s struct{ CSRF string }
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &s) != nil || len(s.CSRF) != 64 {
		u.t.Fatalf("GET /ui/session = %d %s, want a CSRF token", resp.StatusCode, body)
	}
	return s.CSRF
}

func TestWebUIRefusesWithoutToken(t *testing.T) {
	e := newEnv(t)
	u := e.ui()
	if resp, _ := u.do(http.MethodGet, "/", "", nil); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("GET / = %d to %q, want 303 to /ui/", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := u.do(http.MethodGet, "/favicon.ico", "", nil); resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/ui/static/icon.svg" {
		t.Errorf("GET /favicon.ico = %d to %q, want the icon", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := u.do(http.MethodGet, "/ui/", "", nil); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login" {
		t.Errorf("GET /ui/ without a session = %d to %q, want 303 to /ui/login", resp.StatusCode, resp.Header.Get("Location"))
	}
	for _, p := range []string{"/ui/api/status", "/ui/api/logs?service=web", "/ui/api/sbom", "/ui/session"} {
		if resp, body := u.do(http.MethodGet, p, "", nil); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without a session = %d %s, want 401", p, resp.StatusCode, body)
		}
	}
	// A made-up session cookie is no session.
	u.cookie = &http.Cookie{Name: "ingot_session", Value: strings.Repeat("ab", 32)}
	if resp, body := u.do(http.MethodPost, "/ui/api/services/web/restart", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("restart with a made-up session = %d %s, want 401", resp.StatusCode, body)
	}
	u.cookie = nil
	// Wrong tokens: the login page again, with its error shown, and no cookie.
	for _, tok := range []string{"", "wrong", token[:len(token)-1], token + "x"} {
		resp := u.login(tok)
		if resp.StatusCode != http.StatusUnauthorized || u.cookie != nil {
			t.Errorf("login with %q = %d, cookie %v; want 401 and none", tok, resp.StatusCode, u.cookie)
		}
	}
	_, page := u.do(http.MethodPost, "/ui/login", "token=wrong", nil)
	if !strings.Contains(page, "data-login-error>") || strings.Contains(page, "data-login-error hidden") {
		t.Errorf("failed login page does not show its error:\n%s", page)
	}
	// The login form is bounded: a peer without the token cannot make
	// the agent read more.
	resp, body := u.do(http.MethodPost, "/ui/login", "token="+strings.Repeat("a", 8<<10), nil)
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("login with an 8 KiB form = %d %s, want 413", resp.StatusCode, body)
	}
	if got := e.sup.recorded(); len(got) != 0 {
		t.Errorf("supervisor actions without a session: %v", got)
	}
	if !strings.Contains(e.logged.String(), "web login from") {
		t.Errorf("agent log = %q, want the failed logins", e.logged.String())
	}
}

func TestWebUISessionAndCSRF(t *testing.T) {
	e := newEnv(t)
	u := e.ui()
	resp := u.login(token)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" || u.cookie == nil {
		t.Fatalf("login = %d to %q, cookie %v; want 303 to /ui/ with a session cookie", resp.StatusCode, resp.Header.Get("Location"), u.cookie)
	}
	set := resp.Header.Get("Set-Cookie")
	for _, attr := range []string{"HttpOnly", "Secure", "SameSite=Strict", "Path=/", "Max-Age=43200", "Expires="} {
		if !strings.Contains(set, attr) {
			t.Errorf("Set-Cookie %q lacks %s", set, attr)
		}
	}
	// The page: strict CSP, no inline script.
	resp, page := u.do(http.MethodGet, "/ui/", "", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, `src="/ui/static/app.js"`) {
		t.Fatalf("GET /ui/ = %d %s", resp.StatusCode, page)
	}
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %s", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe") || strings.Count(page, "<script") != 1 || strings.Contains(page, "style=") {
		t.Errorf("page or CSP allows inline code: CSP %q", csp)
	}
	for file, ct := range map[string]string{"app.js": "text/javascript", "style.css": "text/css", "icon.svg": "image/svg+xml"} {
		resp, body := u.do(http.MethodGet, "/ui/static/"+file, "", nil)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), ct) || len(body) == 0 {
			t.Errorf("GET /ui/static/%s = %d %s", file, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	if resp, _ := u.do(http.MethodGet, "/ui/static/webui.go", "", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /ui/static/webui.go = %d, want 404", resp.StatusCode)
	}

	// The API's data through the session.
	resp, body := u.do(http.MethodGet, "/ui/api/status", "", nil)
	var st mgmt.Status
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &st) != nil || st.Name != "hello" {
		t.Errorf("GET /ui/api/status = %d %s", resp.StatusCode, body)
	}
	if resp, body := u.do(http.MethodGet, "/ui/api/sbom", "", nil); resp.StatusCode != http.StatusOK || !strings.Contains(body, "SPDX-2.3") {
		t.Errorf("GET /ui/api/sbom = %d %s", resp.StatusCode, body)
	}
	// The cookie is not the bearer token: the API stays bearer-only.
	if resp, _ := u.do(http.MethodGet, mgmt.PathStatus, "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET %s with only the session cookie = %d, want 401", mgmt.PathStatus, resp.StatusCode)
	}
	// Nor does the bearer token open the page's state-changing routes
	// without a session.
	if resp, _ := (&uiClient{t: t, base: u.base}).do(http.MethodPost, "/ui/api/services/web/restart", "",
		map[string]string{"Authorization": "Bearer " + token}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("UI restart with the bearer token but no session = %d, want 401", resp.StatusCode)
	}

	csrf := u.csrf()
	restart := "/ui/api/services/web/restart"
	for name, hdr := range map[string]map[string]string{
		"no CSRF token":    nil,
		"a wrong one":      {"X-Ingot-Csrf": strings.Repeat("0", 64)},
		"a truncated one":  {"X-Ingot-Csrf": csrf[:63]},
		"another origin":   {"X-Ingot-Csrf": csrf, "Origin": "https://evil.example"},
		"another site":     {"X-Ingot-Csrf": csrf, "Sec-Fetch-Site": "cross-site"},
		"logout, no token": nil,
	} {
		path := restart
		if strings.HasPrefix(name, "logout") {
			path = "/ui/logout"
		}
		if resp, body := u.do(http.MethodPost, path, "", hdr); resp.StatusCode != http.StatusForbidden {
			t.Errorf("POST %s with %s = %d %s, want 403", path, name, resp.StatusCode, body)
		}
	}
	if got := e.sup.recorded(); len(got) != 0 {
		t.Fatalf("supervisor actions after refused requests: %v", got)
	}
	resp, body = u.do(http.MethodPost, restart, "", map[string]string{"X-Ingot-Csrf": csrf, "Origin": u.base, "Sec-Fetch-Site": "same-origin"})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"name":"web"`) {
		t.Errorf("restart with the CSRF token = %d %s, want 200", resp.StatusCode, body)
	}
	if got := e.sup.recorded(); len(got) != 1 || got[0] != "restart web" {
		t.Errorf("supervisor actions = %v, want [restart web]", got)
	}
	// Reboots and updates are not on the page's routes at all.
	for _, p := range []string{"/ui/api/reboot", "/ui/api/update/commit"} {
		if resp, _ := u.do(http.MethodPost, p, "", map[string]string{"X-Ingot-Csrf": csrf}); resp.StatusCode != http.StatusNotFound {
			t.Errorf("POST %s = %d, want 404", p, resp.StatusCode)
		}
	}

	// Logout ends the session on the agent, not just in the browser.
	if resp, body := u.do(http.MethodPost, "/ui/logout", "", map[string]string{"X-Ingot-Csrf": csrf}); resp.StatusCode != http.StatusNoContent {
		t.Errorf("logout = %d %s, want 204", resp.StatusCode, body)
	}
	if resp, _ := u.do(http.MethodGet, "/ui/api/status", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("status after logout with the old cookie = %d, want 401", resp.StatusCode)
	}
}

func TestWebUILogsFollow(t *testing.T) {
	e := newEnv(t)
	u := e.ui()
	u.login(token)
	e.rings["web"].Append(time.Now(), logs.Stdout, "first line")
	req, _ := http.NewRequest(http.MethodGet, u.base+"/ui/api/logs?service=web&n=10&follow=1", nil)
	req.AddCookie(u.cookie)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("follow = %d", resp.StatusCode)
	}
	dec := json.NewDecoder(resp.Body)
	var l mgmt.LogLine
	if err := dec.Decode(&l); err != nil || l.Text != "first line" {
		t.Fatalf("first streamed line = %+v, %v", l, err)
	}
	e.rings["web"].Append(time.Now(), logs.Stdout, "second line")
	if err := dec.Decode(&l); err != nil || l.Text != "second line" {
		t.Fatalf("followed line = %+v, %v", l, err)
	}
}
