package spec

import (
	"strings"
	"testing"
)

func TestReleaseKeysValidate(t *testing.T) {
	fp := strings.Repeat("0a", 32)
	fp2 := strings.Repeat("1b", 32)
	app := func(keys string) string {
		return `{"name":"a","build_id":"1","arch":"amd64","services":[],"release_keys":[` + keys + `]}`
	}
	a, err := Parse([]byte(app(`"` + ReleaseKeyPath(fp) + `","` + ReleaseKeyPath(fp2) + `"`)))
	if err != nil {
		t.Fatal(err)
	}
	if len(a.ReleaseKeys) != 2 || a.ReleaseKeys[0] != "/etc/ingot/release-keys/"+fp+".pub" {
		t.Errorf("ReleaseKeys = %q", a.ReleaseKeys)
	}
	many := strings.Repeat(`"`+ReleaseKeyPath(fp)+`",`, MaxReleaseKeys+1)
	for _, tc := range []struct{ keys, want string }{
		{`"/etc/passwd"`, `release_keys[0]: "/etc/passwd" is not`},
		{`"` + ReleaseKeysDir + `/../../x.pub"`, "release_keys[0]"},
		{`"` + ReleaseKeyPath(strings.ToUpper(fp)) + `"`, "release_keys[0]"},
		{`"` + ReleaseKeyPath(fp) + `","` + ReleaseKeyPath(fp) + `"`, "release_keys[1]: " + ReleaseKeyPath(fp) + " is listed twice"},
		{many[:len(many)-1], "at most 16"},
	} {
		if _, err := Parse([]byte(app(tc.keys))); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("release_keys [%.60s…]: %v, want an error containing %q", tc.keys, err, tc.want)
		}
	}
}
