package config

import "testing"

func TestParseDebug(t *testing.T) {
	c, err := Parse("ingot.yaml", []byte(minimal+"debug: {image: busybox:1.36}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Debug == nil || c.Debug.Image != "busybox:1.36" || c.Debug.Pos.Line != 5 {
		t.Errorf("debug = %+v, want busybox:1.36 at line 5", c.Debug)
	}
	if c, err := Parse("ingot.yaml", []byte(minimal)); err != nil || c.Debug != nil {
		t.Errorf("without debug: debug = %+v, %v; want nil", c.Debug, err)
	}
	for _, tc := range []struct{ in, want string }{
		{"debug: {}\n", `ingot.yaml:5:8: debug.image: required field missing`},
		{"debug: {image: \"\"}\n", `ingot.yaml:5:16: debug.image: must not be empty`},
		{"debug: {image: a b}\n", `ingot.yaml:5:16: debug.image: "a b": an image reference has no spaces`},
		{"debug: {image: x, user: root}\n", `ingot.yaml:5:19: debug.user: unknown field (known: image)`},
		{"debug: busybox\n", `ingot.yaml:5:8: debug: expected a mapping, got "busybox"`},
	} {
		_, err := Parse("ingot.yaml", []byte(minimal+tc.in))
		if err == nil || err.Error() != tc.want {
			t.Errorf("%q: error %v, want %s", tc.in, err, tc.want)
		}
	}
}
