package certpin

import (
	"regexp"
	"testing"
)

func TestMetricsToken(t *testing.T) {
	a, err := MetricsToken("  0123456789abcdef0123456789abcdef\n")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := MetricsToken("0123456789abcdef0123456789abcdef")
	c, _ := MetricsToken("0123456789abcdef0123456789abcdee")
	if a != b || a == c {
		t.Errorf("MetricsToken: same token gave %s and %s, another gave %s", a, b, c)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(a) || a == "0123456789abcdef0123456789abcdef" {
		t.Errorf("MetricsToken = %q, want 64 hex digits other than the token", a)
	}
	if _, err := MetricsToken(" \n"); err == nil {
		t.Error("MetricsToken of an empty token succeeded")
	}
}
