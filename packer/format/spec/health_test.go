package spec

import (
	"strings"
	"testing"
)

func TestHealthValidate(t *testing.T) {
	for _, tc := range []struct {
		h    Health
		want string // "" for valid
	}{
		{Health{HTTP: "http://127.0.0.1:8080/healthz"}, ""},
		{Health{TCP: "127.0.0.1:5432", IntervalMillis: 1000, TimeoutMillis: 1000, Retries: 1, Restart: true}, ""},
		{Health{}, "set http: (a URL to GET) or tcp:"},
		{Health{HTTP: "http://x/", TCP: "x:1"}, "not both"},
		{Health{HTTP: "https://127.0.0.1/"}, "want an http:// URL"},
		{Health{HTTP: "http://user:pw@127.0.0.1/"}, "no user info"},
		{Health{HTTP: "http:///path"}, "no host"},
		{Health{TCP: "127.0.0.1"}, "missing port"},
		{Health{TCP: ":80"}, "no host"},
		{Health{TCP: "x:1", IntervalMillis: 500}, "interval: 500ms is outside"},
		{Health{TCP: "x:1", TimeoutMillis: 6000}, "timeout: 6s is outside"},
		{Health{TCP: "x:1", TimeoutMillis: 50}, "timeout: 50ms is outside"},
		{Health{TCP: "x:1", Retries: 101}, "retries 101 outside"},
		{Health{TCP: "x:1", Retries: -1}, "retries -1 outside"},
	} {
		err := tc.h.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v.Validate() = %v, want %q", tc.h, err, tc.want)
		}
	}
	s := Service{Name: "web", Path: "/init", Args: []string{ContainerSubcommand, "web"}, User: "root",
		Health:    &Health{TCP: "127.0.0.1:80"},
		Container: &Container{NetworkNamespace: true}}
	if err := s.Validate(); err == nil || !strings.Contains(err.Error(), "own network namespace") {
		t.Errorf("health of a container in its own network namespace: Validate() = %v, want refused", err)
	}
}
