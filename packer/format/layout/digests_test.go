package layout

import (
	"strings"
	"testing"
)

func TestParseDigests(t *testing.T) {
	h := strings.Repeat("ab", 32)
	good := Digests{Files: map[string]FileDigest{"vmlinuz.b": {Size: 9, SHA256: h}, "slot-a/overlays/x.dtbo": {Size: 0, SHA256: h}}}
	d, err := ParseDigests(good.Marshal())
	if err != nil || len(d.Files) != 2 || d.Files["vmlinuz.b"] != good.Files["vmlinuz.b"] {
		t.Errorf("ParseDigests(Marshal(%v)) = %v, %v", good, d, err)
	}
	for _, bad := range []string{
		`{"files":{"../x":{"size":1,"sha256":"` + h + `"}}}`,
		`{"files":{"/x":{"size":1,"sha256":"` + h + `"}}}`,
		`{"files":{"x":{"size":-1,"sha256":"` + h + `"}}}`,
		`{"files":{"x":{"size":1,"sha256":"` + strings.ToUpper(h) + `"}}}`,
		`{"files":{"x":{"size":1,"sha256":"abc"}}}`,
		`{"files":{"x":{"size":1,"sha256":"` + h + `","mtime":3}}}`,
		`{"files":{}`,
	} {
		if _, err := ParseDigests([]byte(bad)); err == nil {
			t.Errorf("ParseDigests(%s) succeeded", bad)
		}
	}
}
