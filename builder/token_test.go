package builder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// TestWeakTokenRefused performs issue 12's attack 10: an appliance built
// with a guessable management token, whose unsalted SHA-256 then sat in a
// world-readable appliance.json, where any local user or service could
// read it and guess the token offline. A build with a short token
// must fail with an error naming the token file (and token_file's line in
// ingot.yaml); a token from `ingot new` must build, and appliance.json,
// which holds the hash, must be readable by root alone.
func TestWeakTokenRefused(t *testing.T) {
	cfg := testConfig(t, "  - {name: hello, go: ./cmd/hello}")
	ctx := context.Background()
	opts := testOptions(t, t.TempDir())

	for _, weak := range []string{"secret", strings.Repeat("7", config.MinTokenChars-1)} {
		if err := os.WriteFile(cfg.TokenFile, []byte(weak+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Build(ctx, cfg, config.TargetVMAmd64, opts...)
		// testConfig's token_file is on line 4, after "token_file: ".
		wantPrefix := "builder: testdata/app/ingot.yaml:4:13: token_file: management token " + cfg.TokenFile + ": "
		if err == nil || !strings.HasPrefix(err.Error(), wantPrefix) || !strings.Contains(err.Error(), "ingot new") {
			t.Errorf("Build with a %d-character token = %v, want an error starting %q and saying how to make a token", len(weak), err, wantPrefix)
		}
	}

	tok, err := config.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.TokenFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := Build(ctx, cfg, config.TargetVMAmd64, opts...)
	if err != nil {
		t.Fatalf("Build with a token from config.NewToken = %v", err)
	}
	sum := sha256.Sum256([]byte(tok))
	if got := r.Appliance.Management.TokenSHA256; got != hex.EncodeToString(sum[:]) {
		t.Errorf("token_sha256 = %s, want the SHA-256 of the token", got)
	}
	e, ok := r.Root.Get(spec.AppliancePath)
	if !ok {
		t.Fatalf("%s missing from the root", spec.AppliancePath)
	}
	if e.Mode&0o077 != 0 || e.UID != 0 {
		t.Errorf("%s (holds token_sha256): mode %04o uid %d, want no access for group or others, owner root", spec.AppliancePath, e.Mode, e.UID)
	}
}
