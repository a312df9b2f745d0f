package config

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/packer/format/spec"
)

func TestParseMetricsAndLogs(t *testing.T) {
	c, err := Parse("dir/ingot.yaml", []byte(minimal+"metrics: {}\nlogs: {remote: \"syslog+tls://logs.example:6514\", ca: ca.pem, spool: 1Mi}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Metrics != (spec.Metrics{Listen: ":9100", Auth: spec.MetricsAuthToken}) {
		t.Errorf("metrics: {} = %+v, want :9100 with token auth", c.Metrics)
	}
	abs, _ := filepath.Abs("dir/ca.pem")
	if c.Logs.Remote != "syslog+tls://logs.example:6514" || c.Logs.CAFile != abs || c.Logs.SpoolBytes != 1<<20 {
		t.Errorf("logs = %+v", c.Logs)
	}
	c, err = Parse("dir/ingot.yaml", []byte(minimal+"metrics: {listen: \"127.0.0.1:9200\", auth: none}\nlogs: {remote: \"syslog+udp://10.0.0.1:514\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Metrics.Listen != "127.0.0.1:9200" || c.Metrics.Auth != spec.MetricsAuthNone || c.Logs.SpoolBytes != 0 {
		t.Errorf("metrics = %+v, logs = %+v", c.Metrics, c.Logs)
	}
	if c, _ := Parse("dir/ingot.yaml", []byte(minimal)); c.Metrics.Listen != "" || c.Logs.Remote != "" {
		t.Errorf("without the sections: metrics %+v, logs %+v; want both off", c.Metrics, c.Logs)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"metrics: {auth: basic}\n", `ingot.yaml:5:17: metrics.auth: "basic" is not one of token, none`},
		{"metrics: {listen: \"9100\"}\n", `ingot.yaml:5:19: metrics.listen: "9100" is not a listen address`},
		{"logs: {remote: \"syslog+tls://h:6514\"}\n", `ingot.yaml:5:16: logs.remote: syslog+tls needs ca:`},
		{"logs: {remote: \"https://h:6514\"}\n", `ingot.yaml:5:16: logs.remote: "https://h:6514": want syslog+tls://HOST:PORT`},
		{"logs: {remote: \"syslog+tcp://h\"}\n", `ingot.yaml:5:16: logs.remote: "syslog+tcp://h": want HOST:PORT`},
		{"logs: {remote: \"syslog+tcp://h:1\", spool: 1Ki}\n", `ingot.yaml:5:43: logs.spool: 1024 bytes is outside 65536..1073741824`},
		{"logs: {ca: x}\n", `ingot.yaml:5:7: logs.remote: required field missing`},
	} {
		_, err := Parse("ingot.yaml", []byte(minimal+tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want %q", tc.yaml, err, tc.want)
		}
	}
}
