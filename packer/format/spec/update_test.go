package spec

import (
	"strings"
	"testing"
	"time"
)

func TestUpdatePullValidate(t *testing.T) {
	key := `"` + ReleaseKeyPath(strings.Repeat("0a", 32)) + `"`
	app := func(keys, extra string) string {
		return `{"name":"a","build_id":"1","arch":"amd64","services":[],"release_keys":[` + keys + `]` + extra + `}`
	}
	a, err := Parse([]byte(app(key, `,"update_from":"registry.example:5000/fleet/hello:stable","update_check_seconds":60,"update_insecure":true`)))
	if err != nil {
		t.Fatal(err)
	}
	if a.UpdateFrom != "registry.example:5000/fleet/hello:stable" || a.UpdateCheckInterval() != time.Minute || !a.UpdateInsecure {
		t.Errorf("parsed %q every %s insecure %v", a.UpdateFrom, a.UpdateCheckInterval(), a.UpdateInsecure)
	}
	a, err = Parse([]byte(app(key, `,"update_from":"localhost/hello@sha256:`+strings.Repeat("ab", 32)+`"`)))
	if err != nil {
		t.Fatal(err)
	}
	if a.UpdateCheckInterval() != DefaultUpdateCheckSeconds*time.Second {
		t.Errorf("default interval %s", a.UpdateCheckInterval())
	}
	for _, tc := range []struct{ keys, extra, want string }{
		{"", `,"update_from":"r.example/hello:v1"`, "update_from: no release_keys: pulled releases must be signed"},
		{key, `,"update_from":"hello:v1"`, "want REGISTRY/REPOSITORY:TAG"},
		{key, `,"update_from":"fleet/hello:v1"`, `"fleet" is not a registry`},
		{key, `,"update_from":"r.example/hello"`, "no tag or digest"},
		{key, `,"update_from":"r.example:5000/hello"`, "no tag or digest"},
		{key, `,"update_from":"r.example/hello@sha256"`, "is not ALGORITHM:HEX"},
		{key, `,"update_from":"r.example/hel lo:v1"`, "byte 13 is a space"},
		{key, `,"update_from":"r.example/` + strings.Repeat("x", MaxUpdateFromBytes) + `:v1"`, "at most 512"},
		{key, `,"update_check_seconds":60`, "update_check_seconds: set without update_from"},
		{key, `,"update_from":"r.example/hello:v1","update_check_seconds":9`, "9 is out of range 10..604800"},
		{key, `,"update_from":"r.example/hello:v1","update_check_seconds":-1`, "out of range"},
		{"", `,"update_insecure":true`, "update_insecure: no release_keys"},
	} {
		if _, err := Parse([]byte(app(tc.keys, tc.extra))); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%.70s: %v, want an error containing %q", tc.extra, err, tc.want)
		}
	}
}
