package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestUIListensOnLoopbackOnly: the browser's side of `ingot ui` is plain
// HTTP and the login carries the token, so any other address is refused
// before anything is dialled or bound.
func TestUIListensOnLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":8080", "192.168.1.10:0", "[::]:0"} {
		var out, errb bytes.Buffer
		code := runMain(context.Background(), &out, &errb, []string{"ui", "-target", "tcp://127.0.0.1:1", "-token-file", "/nonexistent", "-listen", addr})
		if code != 2 || !strings.Contains(errb.String(), "loopback") || out.Len() != 0 {
			t.Errorf("ingot ui -listen %s: exit %d, stdout %q, stderr %q; want exit 2 naming loopback", addr, code, out.String(), errb.String())
		}
	}
}
