package marker

import (
	"fmt"
	"strings"
	"testing"
)

// TestSourceListensOnPort keeps Port and the service's listen address one
// fact: Source is a constant program text, so this test ties the two.
func TestSourceListensOnPort(t *testing.T) {
	want := fmt.Sprintf("http.ListenAndServe(\":%d\"", Port)
	if !strings.Contains(Source, want) {
		t.Fatalf("Source does not contain %s: Port and the service disagree", want)
	}
}
