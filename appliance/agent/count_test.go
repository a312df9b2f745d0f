package agent_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/ingotdev/ingot/appliance/agent"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/certpin"
)

// counts records what WithRequestCounter reports.
type counts struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *counts) count(route string, code int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[route+" "+http.StatusText(code)]++
}

func (c *counts) get(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k]
}

// serveHandler serves h through a.ServeHandler on a loopback port.
func serveHandler(t *testing.T, a *agent.Agent, h http.Handler) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.ServeHandler(ctx, l, h) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return "http://" + l.Addr().String()
}

func get(t *testing.T, url, tok string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if tok != "" {
		req.Header.Set(mgmt.HeaderAuthorization, mgmt.BearerPrefix+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestProtectedEndpoint performs the attack on a protected extra
// endpoint (the metrics): without the token, or with a wrong one, the
// peer gets 401 and none of the content; every answer is counted by
// route and code, the API's too. The endpoint takes its own token (the
// metrics token, which travels in clear over plain HTTP): the management
// token does not open it, and the metrics token opens nothing of the API.
func TestProtectedEndpoint(t *testing.T) {
	c := &counts{m: map[string]int{}}
	a, err := agent.New(agent.Deps{Info: &fakeInfo{}}, hashHex([]byte(token)), agent.WithRequestCounter(c.count))
	if err != nil {
		t.Fatal(err)
	}
	secret := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "secret metrics") })
	metricsToken, err := certpin.MetricsToken(token)
	if err != nil {
		t.Fatal(err)
	}
	protected, err := a.Protect("GET /metrics", hashHex([]byte(metricsToken)), secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Protect("GET /metrics", "not-a-hash", secret); err == nil {
		t.Error("Protect with a malformed token hash succeeded")
	}
	url := serveHandler(t, a, protected)
	for _, tok := range []string{"", "wrong-token", token} {
		code, body := get(t, url+"/metrics", tok)
		if code != http.StatusUnauthorized || strings.Contains(body, "secret") {
			t.Errorf("GET /metrics with token %q = %d %q, want 401 without the content", tok, code, body)
		}
	}
	if code, body := get(t, url+"/metrics", metricsToken); code != http.StatusOK || body != "secret metrics" {
		t.Errorf("GET /metrics with the token = %d %q", code, body)
	}
	if code, _ := get(t, url+"/other", metricsToken); code != http.StatusNotFound {
		t.Errorf("GET /other = %d, want 404", code)
	}
	open := serveHandler(t, a, a.Open("GET /metrics", secret))
	if code, body := get(t, open+"/metrics", ""); code != http.StatusOK || body != "secret metrics" {
		t.Errorf("GET /metrics (auth none) = %d %q", code, body)
	}
	api := serveHandler(t, a, a.Handler())
	if code, body := get(t, api+mgmt.PathStatus, metricsToken); code != http.StatusUnauthorized {
		t.Errorf("GET %s with the metrics token = %d %.100q, want 401", mgmt.PathStatus, code, body)
	}
	get(t, api+mgmt.PathStatus, token)
	for k, want := range map[string]int{
		"unauthenticated Unauthorized":   4,
		"GET /metrics OK":                2,
		"/ Not Found":                    1,
		"GET " + mgmt.PathStatus + " OK": 1,
	} {
		if got := c.get(k); got != want {
			t.Errorf("count[%s] = %d, want %d (all: %v)", k, got, want, c.m)
		}
	}
}
