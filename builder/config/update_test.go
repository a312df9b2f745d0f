package config

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestUpdatePull reads update.from, check and insecure.
func TestUpdatePull(t *testing.T) {
	dir := t.TempDir()
	cfg, err := Parse(filepath.Join(dir, FileName), []byte(minimal+
		"update:\n  keys: [release.pub]\n  from: localhost:5000/fleet/hello:stable\n  check: 90s\n  insecure: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	u := cfg.Update
	if u.From != "localhost:5000/fleet/hello:stable" || u.Check != 90*time.Second || !u.Insecure {
		t.Errorf("update = %+v", u)
	}
	if u.FromPos.Line != 7 || u.FromPos.Column != 9 {
		t.Errorf("update.from at %s, want line 7 column 9", u.FromPos)
	}
	digest := "registry.example/fleet/hello@sha256:" + strings.Repeat("ab", 32)
	cfg, err = Parse(filepath.Join(dir, FileName), []byte(minimal+"update: {keys: [release.pub], from: "+digest+"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Update.From != digest || cfg.Update.Check != 0 || cfg.Update.Insecure {
		t.Errorf("update = %+v", cfg.Update)
	}
	// Keys alone: the appliance pulls only when asked.
	cfg, err = Parse(filepath.Join(dir, FileName), []byte(minimal+"update: {keys: [release.pub]}\n"))
	if err != nil || cfg.Update.From != "" || cfg.Update.Check != 0 {
		t.Errorf("keys only: %+v, %v", cfg.Update, err)
	}
}

// TestUpdatePullErrors: each wrong update.from, check or insecure is an
// error at its place in the file.
func TestUpdatePullErrors(t *testing.T) {
	const keys = "keys: [release.pub], "
	for _, tc := range []struct{ update, want string }{
		{"{from: localhost:5000/hello:v1}", "ingot.yaml:5:16: update.from: needs update.keys: pulled releases must be signed"},
		{"{" + keys + "from: hello:v1}", `ingot.yaml:5:37: update.from: "hello:v1" is not a release reference (REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:HEX): `},
		{"{" + keys + "from: fleet/hello:v1}", `update.from: "fleet/hello:v1" is not a release reference`},
		{"{" + keys + "from: registry.example/hello}", `update.from: "registry.example/hello" is not a release reference`},
		{"{" + keys + "from: registry.example/Hello:v1}", `update.from: "registry.example/Hello:v1" is not a release reference`},
		{"{" + keys + "from: registry.example/hello@sha256:abc}", `is not a release reference`},
		{"{" + keys + "from: \"registry.example/hello:v1 \"}", `is not a release reference`},
		{"{" + keys + "from: \"\"}", "ingot.yaml:5:37: update.from: must not be empty"},
		{"{" + keys + "from: [a]}", "update.from: expected a string"},
		{"{" + keys + "from: localhost/h:v1, check: 9s}", "ingot.yaml:5:60: update.check: 9s is out of range 10s..168h0m0s"},
		{"{" + keys + "from: localhost/h:v1, check: 200h}", "update.check: 200h0m0s is out of range"},
		{"{" + keys + "from: localhost/h:v1, check: 10500ms}", "update.check: 10.5s is not a whole number of seconds"},
		{"{" + keys + "from: localhost/h:v1, check: soon}", `update.check: "soon" is not a duration`},
		{"{" + keys + "check: 1h}", "ingot.yaml:5:38: update.check: needs update.from: there is no release tag to check"},
		{"{insecure: true}", "ingot.yaml:5:20: update.insecure: needs update.keys: without keys the appliance pulls nothing"},
		{"{" + keys + "insecure: yes}", "update.insecure: expected true or false"},
		{"{" + keys + "form: localhost/h:v1}", "update.form: unknown field (known: health_window, keys, from, check, insecure)"},
	} {
		_, err := Parse(filepath.Join(t.TempDir(), FileName), []byte(minimal+"update: "+tc.update+"\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("update: %s: %v, want an error containing %q", tc.update, err, tc.want)
		}
	}
}
