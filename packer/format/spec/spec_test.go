package spec

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const validJSON = `{
  "name": "hello",
  "build_id": "b-123",
  "arch": "amd64",
  "services": [
    {"name": "db", "path": "/usr/bin/db", "user": "root", "needs_perm": true, "condition": "no-static-network"},
    {"name": "hello", "path": "/usr/bin/hello", "args": ["-listen", ":8080"],
     "env": {"GREETING": "hi"}, "restart": "on-failure", "after": ["db"],
     "log_buffer_bytes": 4096, "grace_seconds": 3}
  ],
  "management": {"vsock_port": 1024, "token_sha256": "` + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" + `"},
  "network": {"address": "10.0.2.15/24", "gateway": "10.0.2.2", "dns": ["10.0.2.3"]}
}`

func TestParseValid(t *testing.T) {
	a, err := Parse([]byte(validJSON))
	if err != nil {
		t.Fatalf("Parse(valid) = %v", err)
	}
	want := &Appliance{
		Name: "hello", BuildID: "b-123", Arch: "amd64",
		Services: []Service{
			{Name: "db", Path: "/usr/bin/db", User: "root", NeedsPerm: true, Condition: ConditionNoStaticNetwork},
			{Name: "hello", Path: "/usr/bin/hello", Args: []string{"-listen", ":8080"},
				Env: map[string]string{"GREETING": "hi"}, Restart: RestartOnFailure, After: []string{"db"},
				LogBufferBytes: 4096, GraceSeconds: 3},
		},
		Management: Management{VsockPort: 1024, TokenSHA256: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
		Network: Network{Address: netip.MustParsePrefix("10.0.2.15/24"), Gateway: netip.MustParseAddr("10.0.2.2"),
			DNS: []netip.Addr{netip.MustParseAddr("10.0.2.3")}},
	}
	if diff := cmp.Diff(want, a, cmp.Comparer(func(x, y netip.Addr) bool { return x == y }),
		cmp.Comparer(func(x, y netip.Prefix) bool { return x == y })); diff != "" {
		t.Errorf("Parse(valid) mismatch (-want +got):\n%s", diff)
	}
	if got := a.EffectiveHostname(); got != "hello" {
		t.Errorf("EffectiveHostname() = %q, want %q", got, "hello")
	}
	// Round trip through Marshal.
	b, err := a.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	a2, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse(Marshal()) = %v\n%s", err, b)
	}
	b2, _ := a2.Marshal()
	if string(b) != string(b2) {
		t.Errorf("Marshal not stable:\n%s\n%s", b, b2)
	}
}

func TestMarshalOmitsEmptyNetwork(t *testing.T) {
	a := &Appliance{Name: "x", BuildID: "1", Arch: "arm64"}
	b, err := a.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"network": {}`) {
		t.Errorf("Marshal() = %s, want an empty network object", b)
	}
	if _, err := Parse(b); err != nil {
		t.Errorf("Parse(Marshal(minimal)) = %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	base := func(services string) string {
		return `{"name":"hello","build_id":"1","arch":"amd64","services":[` + services + `]}`
	}
	svc := func(extra string) string { return base(`{"name":"s","path":"/bin/s"` + extra + `}`) }
	for _, tc := range []struct {
		name, in, want string
	}{
		{"syntax", `{"name":`, "offset 8: unexpected end"},
		{"unknown field", `{"name":"a","build_id":"1","arch":"amd64","bogus":1}`, `unknown field "bogus"`},
		{"wrong type", `{"name":"a","build_id":"1","arch":"amd64","services":"x"}`, "field services"},
		{"trailing", `{"name":"a","build_id":"1","arch":"amd64"} {}`, "data after"},
		{"no name", `{"build_id":"1","arch":"amd64"}`, "name:"},
		{"no build id", `{"name":"a","arch":"amd64"}`, "build_id:"},
		{"bad arch", `{"name":"a","build_id":"1","arch":"AMD 64"}`, "arch:"},
		{"bad default hostname", `{"name":"my_app","build_id":"1","arch":"amd64"}`, "default hostname"},
		{"bad hostname", `{"name":"a","build_id":"1","arch":"amd64","hostname":"-x"}`, "hostname:"},
		{"bad service name", base(`{"name":"Web","path":"/bin/w"}`), `services[0] "Web": name:`},
		{"volume over init's logs", base(`{"name":"s","path":"/bin/s","container":{"image":"x:1","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","rootfs":"/oci/s/rootfs","argv":["/x"],"volumes":[{"source":"/perm/log","target":"/logs"}]}}`), `services[0] "s": container: volumes[0]: the source /perm/log is in init's log directory`},
		{"volume over another service", base(`{"name":"s","path":"/bin/s","container":{"image":"x:1","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","rootfs":"/oci/s/rootfs","argv":["/x"],"volumes":[{"source":"/perm/t/x","target":"/x"}]}},{"name":"t","path":"/bin/t"}`), `services[0] "s": container: volumes[0]: the source /perm/t/x is in /perm/t, the directory of service t`},
		// The rule ingot.yaml's names follow: a file, user and directory name.
		{"service name starts with a digit", base(`{"name":"1web","path":"/bin/w"}`), "starting with a letter"},
		{"service name has a dot", base(`{"name":"a.b","path":"/bin/w"}`), "starting with a letter"},
		{"service name too long", base(`{"name":"` + strings.Repeat("a", MaxServiceNameBytes+1) + `","path":"/bin/w"}`), "1 to 32"},
		{"reserved name", base(`{"name":"init","path":"/bin/w"}`), "reserved"},
		{"relative path", base(`{"name":"w","path":"bin/w"}`), "path:"},
		{"unclean path", base(`{"name":"w","path":"/bin/../w"}`), "path:"},
		{"duplicate", base(`{"name":"w","path":"/w"},{"name":"w","path":"/w"}`), "also used by services[0]"},
		{"bad restart", svc(`,"restart":"sometimes"`), "restart:"},
		{"bad env key", svc(`,"env":{"A-B":"1"}`), "env: key"},
		{"reserved env", svc(`,"env":{"INGOT_SERVICE":"1"}`), "set by ingot for every service"},
		{"after self", svc(`,"after":["s"]`), "itself"},
		{"after unknown", svc(`,"after":["nope"]`), `unknown service "nope"`},
		{"after twice", base(`{"name":"a","path":"/a"},{"name":"s","path":"/s","after":["a","a"]}`), "twice"},
		{"cycle", base(`{"name":"a","path":"/a","after":["c"]},{"name":"b","path":"/b","after":["a"]},{"name":"c","path":"/c","after":["b"]}`), "cycle a -> c -> b -> a"},
		{"bad user", svc(`,"user":"www"`), "user:"},
		{"bad gid", svc(`,"user":"1:x"`), "group"},
		{"uid -1", svc(`,"user":"4294967295"`), "ids go up to 4294967294"},
		{"log buffer", svc(`,"log_buffer_bytes":-1`), "log_buffer_bytes:"},
		{"grace", svc(`,"grace_seconds":100000`), "grace_seconds:"},
		{"bad condition", svc(`,"condition":"sunny"`), "condition:"},
		{"token", `{"name":"a","build_id":"1","arch":"amd64","management":{"token_sha256":"ABC"}}`, "token_sha256"},
		{"bad address", `{"name":"a","build_id":"1","arch":"amd64","network":{"address":"10.0.0.1"}}`, "network: address:"},
		{"network unknown field", `{"name":"a","build_id":"1","arch":"amd64","network":{"bogus":1}}`, `unknown field "bogus"`},
		{"bad dns", `{"name":"a","build_id":"1","arch":"amd64","network":{"address":"10.0.0.2/8","dns":["x"]}}`, "dns[0]"},
		{"syntax mid-way", `{"name":x}`, "offset 9"},
		{"gateway without address", `{"name":"a","build_id":"1","arch":"amd64","network":{"gateway":"10.0.0.1"}}`, "need an address"},
		{"wait_for_clock without NTP", svc(`,"wait_for_clock":true`), `services[0] "s": wait_for_clock: clock.ntp names no server`},
		{"bad ntp server", `{"name":"a","build_id":"1","arch":"amd64","clock":{"ntp":["a:0"]}}`, `clock: ntp[0]: "a:0": port "0" is not 1..65535`},
		{"ntp server with a slash", `{"name":"a","build_id":"1","arch":"amd64","clock":{"ntp":["a/b"]}}`, `clock: ntp[0]: "a/b": want a host name`},
		{"defaulted without servers", `{"name":"a","build_id":"1","arch":"amd64","clock":{"defaulted":true}}`, "clock: defaulted: set, but ntp names no server"},
		{"too many ntp servers", `{"name":"a","build_id":"1","arch":"amd64","clock":{"ntp":["a","a","a","a","a","a","a","a","a"]}}`, "clock: ntp: 9 servers, at most 8"},
		{"absolute module", `{"name":"a","build_id":"1","arch":"arm64","modules":["/lib/modules/x.ko"]}`, `modules[0]: "/lib/modules/x.ko": want a clean relative path of a .ko file`},
		{"module escapes", `{"name":"a","build_id":"1","arch":"arm64","modules":["../../etc/x.ko"]}`, `modules[0]: "../../etc/x.ko"`},
		{"module not a .ko", `{"name":"a","build_id":"1","arch":"arm64","modules":["kernel/x.so"]}`, `modules[0]: "kernel/x.so"`},
		{"gateway family", `{"name":"a","build_id":"1","arch":"amd64","network":{"address":"10.0.0.2/8","gateway":"fe80::1"}}`, "family"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse(%s) = %v, want error containing %q", tc.in, err, tc.want)
			}
		})
	}
}

func TestNTPServerAddr(t *testing.T) {
	for in, want := range map[string]string{
		"pool.ntp.org":     "pool.ntp.org:123",
		"10.0.2.2:1234":    "10.0.2.2:1234",
		"fd00::1":          "[fd00::1]:123",
		"[fd00::1]:4123":   "[fd00::1]:4123",
		"time.example:123": "time.example:123",
	} {
		if got, err := NTPServerAddr(in); err != nil || got != want {
			t.Errorf("NTPServerAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", ":123", "a:", "a:x", "[fd00::1", "a b", "a:70000"} {
		if got, err := NTPServerAddr(in); err == nil {
			t.Errorf("NTPServerAddr(%q) = %q, want an error", in, got)
		}
	}
}

// TestServiceNames: ingot.yaml's rule, so every name a user can write
// is one the appliance takes.
func TestServiceNames(t *testing.T) {
	for _, name := range []string{"a", "web", "my_db-2", strings.Repeat("a", MaxServiceNameBytes)} {
		if err := CheckServiceName(name); err != nil {
			t.Errorf("CheckServiceName(%q) = %v, want nil", name, err)
		}
	}
	for _, name := range []string{"", "Web", "1web", "-web", "a.b", "a b", strings.Repeat("a", MaxServiceNameBytes+1), "init", "log"} {
		if err := CheckServiceName(name); err == nil {
			t.Errorf("CheckServiceName(%q) = nil, want an error", name)
		}
	}
}

func TestServiceDefaults(t *testing.T) {
	s := Service{Name: "a", Path: "/a"}
	if got := s.RestartPolicy(); got != RestartAlways {
		t.Errorf("RestartPolicy() = %q, want %q", got, RestartAlways)
	}
	if got := s.LogBuffer(); got != DefaultLogBufferBytes {
		t.Errorf("LogBuffer() = %d, want %d", got, DefaultLogBufferBytes)
	}
	if got := s.Grace(); got != 10*time.Second {
		t.Errorf("Grace() = %v, want 10s", got)
	}
}

func TestCredential(t *testing.T) {
	for _, tc := range []struct {
		user string
		want Credential
	}{
		{"", Credential{NobodyID, NobodyID}},
		{"nobody", Credential{NobodyID, NobodyID}},
		{"root", Credential{0, 0}},
		{"1000", Credential{1000, 1000}},
		{"1000:100", Credential{1000, 100}},
		{"0", Credential{0, 0}},
	} {
		got, err := Service{User: tc.user}.Credential()
		if err != nil || got != tc.want {
			t.Errorf("Credential(%q) = %v, %v, want %v", tc.user, got, err, tc.want)
		}
	}
	for _, user := range []string{"admin", "+1", "1:", ":1", "0x10", "99999999999"} {
		if got, err := (Service{User: user}).Credential(); err == nil {
			t.Errorf("Credential(%q) = %v, want error", user, got)
		}
	}
}

func TestLoadNamesFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "appliance.json")
	if err := os.WriteFile(p, []byte(`{"name":"a"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), p+": build_id") {
		t.Errorf("Load(%s) = %v, want error naming the file and build_id", p, err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Errorf("Load(missing) = nil error")
	}
}

func TestLoadStage0(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "stage0.json")
	write := func(s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"modules":["/lib/modules/6.1/kernel/a.ko","/lib/modules/6.1/kernel/b.ko"]}`)
	s, err := LoadStage0(p)
	if err != nil {
		t.Fatalf("LoadStage0() = %v", err)
	}
	if want := []string{"/lib/modules/6.1/kernel/a.ko", "/lib/modules/6.1/kernel/b.ko"}; !cmp.Equal(s.Modules, want) {
		t.Errorf("LoadStage0().Modules = %q, want %q", s.Modules, want)
	}
	write(`{"modules":["a.ko"]}`)
	if _, err := LoadStage0(p); err == nil || !strings.Contains(err.Error(), "modules[0]") {
		t.Errorf("LoadStage0(relative) = %v, want modules[0] error", err)
	}
	write(`{"modules":["/m/a.ko","/m/b.ko"],"on_demand":{"/m/b.ko":["pci:v000015ADd000007C0sv*"]}}`)
	if s, err := LoadStage0(p); err != nil || !cmp.Equal(s.OnDemand["/m/b.ko"], []string{"pci:v000015ADd000007C0sv*"}) {
		t.Errorf("LoadStage0(on_demand) = %+v, %v", s, err)
	}
	for in, want := range map[string]string{
		`{"modules":["/m/a.ko"],"on_demand":{"/m/c.ko":["x"]}}`: `"/m/c.ko" is not one of modules`,
		`{"modules":["/m/a.ko"],"on_demand":{"/m/a.ko":[""]}}`:  `on_demand["/m/a.ko"][0]: empty pattern`,
	} {
		write(in)
		if _, err := LoadStage0(p); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("LoadStage0(%s) = %v, want an error with %q", in, err, want)
		}
	}
}
