package config

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// Management tokens. The image holds a token's unsalted SHA-256, and
// anyone who can read an image file can read it; what keeps the token
// safe is that it is too long to guess. A token is therefore refused
// unless it has the form of a random string of at least 128 bits:
//
//   - at least MinTokenChars characters, not counting '=' padding at the end;
//   - only letters, digits and - . _ ~ + / (then '=' padding): the b64token
//     syntax of an RFC 6750 bearer token, which holds hex and both base64
//     alphabets.
//
// MinTokenChars characters of hex, the smallest of those alphabets, are
// 128 bits. The rule checks the form only: it cannot tell a random string
// from a chosen one, so tokens should come from NewToken (`ingot new`) or
// `head -c 32 /dev/urandom | base64`. Surrounding white space in the file
// is not part of the token.
const (
	// MinTokenChars is the fewest characters a management token may have:
	// 32 hex digits are 128 bits.
	MinTokenChars = 32
	// newTokenBytes is the random part of a token from NewToken: 256 bits,
	// written as 64 hex digits.
	newTokenBytes = 32
)

// tokenHowTo ends every message about a bad token.
const tokenHowTo = "make one with `ingot new` or `head -c 32 /dev/urandom | base64`"

// NewToken returns a new random management token: newTokenBytes from
// crypto/rand in hex.
func NewToken() (string, error) {
	raw := make([]byte, newTokenBytes)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("management token: %w", err)
	}
	return hex.EncodeToString(raw), nil
}

// CheckToken reports whether tok (already trimmed of surrounding white
// space) has the form the package documentation requires. Its errors name
// a character by its position, never its value: the token is a secret.
func CheckToken(tok string) error {
	body := strings.TrimRight(tok, "=")
	for i := 0; i < len(body); i++ {
		if !isTokenByte(body[i]) {
			return fmt.Errorf("byte %d is not a letter, digit or one of - . _ ~ + / (a bearer token cannot hold it); %s", i+1, tokenHowTo)
		}
	}
	if len(body) < MinTokenChars {
		return fmt.Errorf("%d characters, fewer than the %d of a 128-bit token; %s", len(body), MinTokenChars, tokenHowTo)
	}
	return nil
}

// isTokenByte reports whether b is in RFC 6750's b64token alphabet, bar
// the trailing '=' padding.
func isTokenByte(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	return strings.IndexByte("-._~+/", b) >= 0
}

// Token reads the management token from TokenFile and checks it with
// CheckToken. An error names the file and, when ingot.yaml sets
// token_file, its position there.
func (c *Config) Token() (string, error) {
	b, err := os.ReadFile(c.TokenFile)
	if errors.Is(err, fs.ErrNotExist) {
		return "", c.tokenError(fmt.Sprintf("management token %s does not exist (ingot new writes one; or set token_file in ingot.yaml)", c.TokenFile))
	}
	if err != nil {
		return "", fmt.Errorf("management token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", c.tokenError(fmt.Sprintf("management token %s is empty; %s", c.TokenFile, tokenHowTo))
	}
	if err := CheckToken(tok); err != nil {
		return "", c.tokenError(fmt.Sprintf("management token %s: %v", c.TokenFile, err))
	}
	return tok, nil
}

// tokenError is msg at token_file's position, or msg alone when the token
// file is the default one.
func (c *Config) tokenError(msg string) error {
	if c.TokenFilePos.Line == 0 {
		return errors.New(msg)
	}
	return &Error{Pos: c.TokenFilePos, Field: "token_file", Msg: msg}
}
