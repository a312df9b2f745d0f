package spec

import (
	"strings"
	"testing"
)

func TestParseRemote(t *testing.T) {
	r, err := ParseRemote("syslog+tls://logs.example:6514")
	if err != nil || r != (Remote{Transport: "tls", Addr: "logs.example:6514", Host: "logs.example"}) {
		t.Errorf("ParseRemote = %+v, %v", r, err)
	}
	if r, err := ParseRemote("syslog+udp://[::1]:514"); err != nil || r.Host != "::1" || r.Addr != "[::1]:514" {
		t.Errorf("ParseRemote(IPv6) = %+v, %v", r, err)
	}
	for _, bad := range []string{"", "syslog://h:514", "tls://h:514", "syslog+tcp://h", "syslog+tcp://:514",
		"syslog+tcp://h:0", "syslog+tcp://h:514/x", "syslog+tcp://u@h:514", "syslog+tcp://h:514?x"} {
		if _, err := ParseRemote(bad); err == nil {
			t.Errorf("ParseRemote(%q) succeeded, want an error", bad)
		}
	}
}

func TestObserveValidate(t *testing.T) {
	for _, tc := range []struct {
		m    Metrics
		l    Logs
		want string
	}{
		{Metrics{Listen: ":9100", TokenSHA256: strings.Repeat("ab", 32)}, Logs{}, ""},
		{Metrics{Listen: ":9100"}, Logs{}, "metrics: token_sha256"},
		{Metrics{Listen: ":9100", Auth: MetricsAuthToken, TokenSHA256: strings.Repeat("AB", 32)}, Logs{}, "metrics: token_sha256"},
		{Metrics{Listen: "127.0.0.1:9100", Auth: MetricsAuthNone}, Logs{Remote: "syslog+tcp://h:514", SpoolBytes: MinSpoolBytes}, ""},
		{Metrics{Auth: MetricsAuthNone}, Logs{}, "metrics: auth"},
		{Metrics{Listen: "localhost:9100"}, Logs{}, "metrics: listen"},
		{Metrics{Listen: ":9100", Auth: "basic"}, Logs{}, `metrics: auth: "basic"`},
		{Metrics{}, Logs{SpoolBytes: 1 << 20}, "logs: spool_bytes"},
		{Metrics{}, Logs{Remote: "syslog+tcp://h:514", SpoolBytes: 1}, "logs: spool_bytes: 1 is outside"},
		{Metrics{}, Logs{Remote: "http://h"}, "logs: remote"},
	} {
		a := Appliance{Name: "x", BuildID: "b", Arch: "amd64", Metrics: tc.m, Logs: tc.l}
		err := a.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Validate(%+v, %+v) = %v, want %q", tc.m, tc.l, err, tc.want)
		}
	}
	if got := (Logs{}).EffectiveSpoolBytes(); got != DefaultSpoolBytes {
		t.Errorf("EffectiveSpoolBytes() = %d, want %d", got, DefaultSpoolBytes)
	}
}
