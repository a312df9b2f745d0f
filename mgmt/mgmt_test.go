package mgmt

import (
	"errors"
	"net/http"
	"testing"
)

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

func TestCheckRelease(t *testing.T) {
	for _, tt := range []struct {
		running, incoming uint64
		allow, ok         bool
	}{
		{0, 0, false, true},
		{5, 5, false, true},
		{5, 6, false, true},
		{5, 4, false, false},
		{5, 0, false, false},
		{5, 4, true, true},
	} {
		err := CheckRelease(tt.running, tt.incoming, tt.allow)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrRejected)) {
			t.Errorf("CheckRelease(running %d, incoming %d, allow %v) = %v, want ok=%v (ErrRejected otherwise)", tt.running, tt.incoming, tt.allow, err, tt.ok)
		}
	}
}

func TestRootHeaderRoundTrip(t *testing.T) {
	for _, r := range []Root{{Arch: "amd64"}, {Arch: "arm64", Release: 12}, {Arch: "amd64", Release: 3, AllowDowngrade: true}} {
		rel, allow, err := RootFromHeader(r.header())
		if err != nil || rel != r.Release || allow != r.AllowDowngrade {
			t.Errorf("RootFromHeader(%+v.header()) = %d, %v, %v", r, rel, allow, err)
		}
	}
	if rel, allow, err := RootFromHeader(http.Header{}); err != nil || rel != 0 || allow {
		t.Errorf("RootFromHeader(no headers) = %d, %v, %v; want release 0, no downgrade", rel, allow, err)
	}
	for _, h := range []http.Header{
		{HeaderRelease: {"-1"}},
		{HeaderRelease: {"1e3"}},
		{HeaderRelease: {"99999999999999999999999"}},
		{HeaderAllowDowngrade: {"yes"}},
	} {
		if _, _, err := RootFromHeader(h); !errors.Is(err, ErrInvalid) {
			t.Errorf("RootFromHeader(%v) = %v, want ErrInvalid", h, err)
		}
	}
}
