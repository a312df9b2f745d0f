package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckToken(t *testing.T) {
	hex32 := "0123456789abcdef0123456789abcdef"
	tests := []struct {
		tok  string
		want string // a part of the error; "" for none
	}{
		{"secret", "6 characters, fewer than the 32"},
		{hex32[:31], "31 characters, fewer than the 32"},
		{hex32[:31] + "=", "31 characters, fewer than the 32"}, // padding does not count
		{"correct horse battery staple and more", "byte 8 is not a letter"},
		{hex32[:16] + "=" + hex32[:16], "byte 17 is not a letter"},
		{hex32[:16] + "\x00" + hex32, "byte 17 is not a letter"},
		{hex32, ""},
		{strings.ToUpper(hex32), ""},
		// head -c 32 /dev/urandom | base64, and its URL-safe form.
		{"q83vEjRWeJq8vN7/ASNFZ4mrze8BI0VniavN7wEjRWc=", ""},
		{"q83vEjRWeJq8vN7_ASNFZ4mrze8BI0VniavN7wEjRWc", ""},
		{"a.b~c-d_e+f/" + hex32[:20] + "==", ""},
	}
	for _, tt := range tests {
		err := CheckToken(tt.tok)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("CheckToken(%q) = %v, want nil", tt.tok, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("CheckToken(%q) = %v, want an error containing %q", tt.tok, err, tt.want)
		case err != nil && !strings.Contains(err.Error(), "ingot new"):
			t.Errorf("CheckToken(%q) = %v, want it to say how to make a token", tt.tok, err)
		}
	}
}

// TestNewTokenPasses checks that the tokens `ingot new` writes pass the
// rule, are hex and differ each time.
func TestNewTokenPasses(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		tok, err := NewToken()
		if err != nil {
			t.Fatal(err)
		}
		if err := CheckToken(tok); err != nil {
			t.Fatalf("CheckToken(NewToken() = %q) = %v", tok, err)
		}
		if len(tok) != 2*newTokenBytes || strings.Trim(tok, "0123456789abcdef") != "" {
			t.Fatalf("NewToken() = %q, want %d hex digits", tok, 2*newTokenBytes)
		}
		if seen[tok] {
			t.Fatalf("NewToken() = %q twice", tok)
		}
		seen[tok] = true
	}
}

// TestTokenErrors reads weak tokens through Config.Token: the error names
// the file, and the position of token_file when ingot.yaml sets it.
func TestTokenErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	weak := write("weak", "secret\n")
	positioned, err := Parse("ingot.yaml", []byte("name: app\ntoken_file: "+weak+"\nservices: [{name: web, go: ./cmd/web}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = positioned.Token()
	var ce *Error
	if !errors.As(err, &ce) || ce.Pos.String() != "ingot.yaml:2:13" || ce.Field != "token_file" || !strings.Contains(err.Error(), weak+": 6 characters") {
		t.Errorf("Token() = %v, want an error at ingot.yaml:2:13 token_file naming %s", err, weak)
	}

	def, err := Parse(filepath.Join(dir, "ingot.yaml"), []byte("name: app\nservices: [{name: web, go: ./cmd/web}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(def.TokenFile), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ content, want string }{
		{"", " is empty"},
		{" \n", " is empty"},
		{strings.Repeat("a", MinTokenChars-1) + "\n", ": 31 characters"},
	} {
		if err := os.WriteFile(def.TokenFile, []byte(tt.content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := def.Token()
		if err == nil || !strings.HasPrefix(err.Error(), "management token "+def.TokenFile+tt.want) || errors.As(err, &ce) {
			t.Errorf("Token() of %q = %v, want an unpositioned error naming %s", tt.content, err, def.TokenFile)
		}
	}
	good := strings.Repeat("a", MinTokenChars)
	if err := os.WriteFile(def.TokenFile, []byte("\n"+good+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if tok, err := def.Token(); err != nil || tok != good {
		t.Errorf("Token() = %q, %v; want %q", tok, err, good)
	}
}
