package mgmt

import "testing"

func TestExitString(t *testing.T) {
	for _, tc := range []struct {
		e    Exit
		want string
	}{
		{Exit{Code: 1}, "exit status 1"},
		{Exit{Code: -1, Signal: "SIGKILL", OOMKilled: true}, "signal SIGKILL (out of memory)"},
		{Exit{Code: 137, OOMKilled: true}, "exit status 137 (out of memory)"},
		{Exit{Code: -1, Error: "no such file"}, "start failed: no such file"},
	} {
		if got := tc.e.String(); got != tc.want {
			t.Errorf("%+v.String() = %q, want %q", tc.e, got, tc.want)
		}
	}
}
