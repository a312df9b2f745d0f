package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// minimal is the smallest valid config; tests append to or edit it.
const minimal = `name: hello
services:
  - name: hello
    go: ./cmd/hello
`

func TestParseDefaults(t *testing.T) {
	c, err := Parse("dir/ingot.yaml", []byte(minimal))
	if err != nil {
		t.Fatalf("Parse(minimal) = %v", err)
	}
	dir, _ := filepath.Abs("dir")
	want := &Config{
		File:     "dir/ingot.yaml",
		Dir:      dir,
		Name:     "hello",
		Hostname: "hello",
		Targets:  []Target{TargetVMAmd64},
		Kernels:  map[Target]KernelSource{},
		Management: Management{VsockPort: 1024,
			TLSCertFile: filepath.Join(dir, ".ingot", "tls-cert.pem"), TLSKeyFile: filepath.Join(dir, ".ingot", "tls-key.pem")},
		Network:   Network{Mode: NetworkDHCP},
		PermBytes: 64 << 20,
		Disk:      Disk{BootBytes: 64 << 20, RootSlotBytes: 256 << 20},
		TokenFile: filepath.Join(dir, ".ingot", "token"),
		Update:    Update{HealthWindow: 30 * time.Second},
		Clock:     spec.Clock{NTP: []string{"0.pool.ntp.org", "1.pool.ntp.org", "2.pool.ntp.org", "3.pool.ntp.org"}, Defaulted: true},
		Services: []Service{{
			Service: spec.Service{
				Name:           "hello",
				Restart:        spec.RestartAlways,
				LogBufferBytes: 1 << 20,
				GraceSeconds:   10,
			},
			Go:  &GoPackage{Path: "./cmd/hello"},
			Pos: Pos{File: "dir/ingot.yaml", Line: 3, Column: 5},
		}},
	}
	if diff := cmp.Diff(want, c, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("Parse(minimal) mismatch (-want +got):\n%s", diff)
	}
	if got := c.ManagementTCP(TargetVMAmd64); got != "" {
		t.Errorf("ManagementTCP(vm-amd64) = %q, want off", got)
	}
	if got := c.ManagementTCP(TargetRPi); got != ":7443" {
		t.Errorf("ManagementTCP(rpi) = %q, want :7443", got)
	}
}

const full = `name: shop
hostname: shop.example.org
targets: [vm-amd64, vm-arm64, rpi]
kernel:
  vm-amd64: debian:kernels/amd64.deb
  rpi: gomod:github.com/gokrazy/kernel.rpi@v0.0.0-20250101000000-abcdef
token_file: /etc/shop/token
services:
  - name: db
    image: registry.example/db:1.2
    entrypoint: [/bin/db]
    args: [--port, 5432]
    env: {PORT: 5432, DEBUG: true, NAME: x}
    restart: on-failure
    user: postgres
    volumes: ["/perm/db:/var/lib/db", "/perm/conf:/etc/db:ro"]
    resources: {memory: 128Mi, cpu: "500m", pids: 256}
    privileged: true
    log_buffer: 2Mi
    grace: 30s
  - name: web
    go: example.com/web/cmd/web@v1.2.3
    after: [db]
    user: "1000:100"
    resources: {cpu: 1.5}
    health: {http: "http://127.0.0.1:8080/healthz", interval: 10s, timeout: 1500ms, retries: 5, restart: true}
  - name: tool
    go: ../tools/cmd/tool
    restart: never
    user: root
management: {vsock_port: 2000, tcp: "0.0.0.0:8443", tls_cert: /etc/ingot-certs/x.pem, tls_key: keys/x.key}
network:
  static:
    address: 192.168.1.10/24
    gateway: 192.168.1.1
    dns: [1.1.1.1, "2606:4700:4700::1111"]
perm: 1Gi
disk: {boot_size: 128Mi, root_size: 512MiB}
update: {health_window: 1m}
release: 42
`

func TestParseFull(t *testing.T) {
	c, err := Parse("/a/b/ingot.yaml", []byte(full))
	if err != nil {
		t.Fatalf("Parse(full) = %v", err)
	}
	if c.Hostname != "shop.example.org" || c.PermBytes != 1<<30 || c.Disk != (Disk{128 << 20, 512 << 20}) {
		t.Errorf("Parse(full) hostname, perm, disk = %q, %d, %+v", c.Hostname, c.PermBytes, c.Disk)
	}
	if diff := cmp.Diff([]Target{TargetVMAmd64, TargetVMArm64, TargetRPi}, c.Targets); diff != "" {
		t.Errorf("targets (-want +got):\n%s", diff)
	}
	wantK := map[Target]KernelSource{
		TargetVMAmd64: {Kind: KernelDebian, Path: "/a/b/kernels/amd64.deb", Pos: Pos{"/a/b/ingot.yaml", 5, 13}},
		TargetRPi:     {Kind: KernelGoModule, Module: "github.com/gokrazy/kernel.rpi", Version: "v0.0.0-20250101000000-abcdef", Pos: Pos{"/a/b/ingot.yaml", 6, 8}},
	}
	if diff := cmp.Diff(wantK, c.Kernels); diff != "" {
		t.Errorf("kernels (-want +got):\n%s", diff)
	}
	if c.TokenFile != "/etc/shop/token" {
		t.Errorf("TokenFile = %q, want /etc/shop/token", c.TokenFile)
	}
	db := c.Services[0]
	wantDB := Service{
		Service: spec.Service{
			Name: "db", Args: []string{"--port", "5432"}, Env: map[string]string{"PORT": "5432", "DEBUG": "true", "NAME": "x"},
			Restart: spec.RestartOnFailure, User: "postgres",
			Resources:      spec.Resources{MemoryBytes: 128 << 20, CPUMillis: 500, Pids: 256},
			LogBufferBytes: 2 << 20, GraceSeconds: 30,
		},
		Image: "registry.example/db:1.2", Entrypoint: []string{"/bin/db"},
		Volumes:    []spec.Volume{{Source: "/perm/db", Target: "/var/lib/db"}, {Source: "/perm/conf", Target: "/etc/db", ReadOnly: true}},
		Privileged: true, Pos: Pos{"/a/b/ingot.yaml", 9, 5},
	}
	if diff := cmp.Diff(wantDB, db); diff != "" {
		t.Errorf("service db (-want +got):\n%s", diff)
	}
	web := c.Services[1]
	if diff := cmp.Diff(&GoPackage{Path: "example.com/web/cmd/web", Version: "v1.2.3"}, web.Go); diff != "" || web.Go.Local() {
		t.Errorf("service web go (-want +got):\n%s", diff)
	}
	if web.User != "1000:100" {
		t.Errorf("service web user = %q, want 1000:100", web.User)
	}
	if web.Resources.CPUMillis != 1500 {
		t.Errorf("web cpu = %d millis, want 1500", web.Resources.CPUMillis)
	}
	wantHealth := &spec.Health{HTTP: "http://127.0.0.1:8080/healthz", IntervalMillis: 10000, TimeoutMillis: 1500, Retries: 5, Restart: true}
	if diff := cmp.Diff(wantHealth, web.Health); diff != "" {
		t.Errorf("service web health (-want +got):\n%s", diff)
	}
	if db.Health != nil {
		t.Errorf("service db health = %+v, want none", db.Health)
	}
	tool := c.Services[2]
	if !tool.Go.Local() || tool.Restart != spec.RestartNever || tool.User != "root" {
		t.Errorf("service tool = %+v, want local, never, root", tool)
	}
	if c.Management != (Management{VsockPort: 2000, TCP: "0.0.0.0:8443", TLSCertFile: "/etc/ingot-certs/x.pem", TLSKeyFile: "/a/b/keys/x.key"}) {
		t.Errorf("management = %+v", c.Management)
	}
	wantNet := Network{Mode: NetworkStatic, Address: netip.MustParsePrefix("192.168.1.10/24"),
		Gateway: netip.MustParseAddr("192.168.1.1"),
		DNS:     []netip.Addr{netip.MustParseAddr("1.1.1.1"), netip.MustParseAddr("2606:4700:4700::1111")}}
	if diff := cmp.Diff(wantNet, c.Network, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("network (-want +got):\n%s", diff)
	}
	if c.Release != 42 {
		t.Errorf("release = %d, want 42", c.Release)
	}
	if c.Update.HealthWindow != time.Minute {
		t.Errorf("health window = %v, want 1m", c.Update.HealthWindow)
	}
	var order []string
	for _, s := range c.StartOrder() {
		order = append(order, s.Name)
	}
	if diff := cmp.Diff([]string{"db", "web", "tool"}, order); diff != "" {
		t.Errorf("StartOrder (-want +got):\n%s", diff)
	}
}

// svc wraps service lines in a valid config: the service mapping starts
// at line 3, column 5.
func svc(lines string) string {
	return "name: hello\nservices:\n  - " + strings.ReplaceAll(strings.TrimSpace(lines), "\n", "\n    ") + "\n"
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // the whole error message
	}{
		// Syntax and shape.
		{"syntax", "name: [\n", `ingot.yaml:1: YAML syntax: did not find expected node content`},
		{"empty file", "", `ingot.yaml:1:1: name: required field missing (the file is empty)`},
		{"comment only", "# nothing\n", `ingot.yaml:1:1: name: required field missing (the file is empty)`},
		{"not a mapping", "- a\n", `ingot.yaml:1:1: expected a mapping, got a list`},
		{"two documents", minimal + "---\nname: x\n", `ingot.yaml:5:1: a second YAML document; the config is one document`},
		// Unknown fields.
		{"unknown top field", minimal + "nmae: x\n", `ingot.yaml:5:1: nmae: unknown field (known: name, hostname, targets, kernel, token_file, services, management, network, perm, disk, update, release, metrics, logs, clock, debug)`},
		{"unknown service field", svc("name: a\ngo: ./a\nrestrat: never"), `ingot.yaml:5:5: services[0].restrat: unknown field (known: name, go, image, args, entrypoint, env, restart, after, user, volumes, resources, privileged, needs_perm, log_buffer, grace, health, wait_for_clock)`},
		{"unknown resources field", svc("name: a\ngo: ./a\nresources: {memroy: 1Mi}"), `ingot.yaml:5:17: services[0].resources.memroy: unknown field (known: memory, cpu, pids)`},
		{"field twice", "name: a\nname: b\nservices: [{name: a, go: ./a}]\n", `ingot.yaml:2:1: name: set twice (first at line 1)`},
		// Missing required fields.
		{"missing name", "services: [{name: a, go: ./a}]\n", `ingot.yaml:1:1: name: required field missing`},
		{"missing services", "name: a\n", `ingot.yaml:1:1: services: required field missing`},
		{"missing service name", svc("go: ./a"), `ingot.yaml:3:5: services[0].name: required field missing`},
		{"neither go nor image", svc("name: a"), `ingot.yaml:3:5: services[0]: has neither go: nor image:; a service needs exactly one of them`},
		{"both go and image", svc("name: a\ngo: ./a\nimage: x:1"), `ingot.yaml:5:5: services[0]: has both go: and image:; a service is exactly one of them`},
		{"no services", "name: a\nservices: []\n", `ingot.yaml:2:11: services: must list at least one service`},
		// Wrong types.
		{"name is a number", "name: 42\nservices: [{name: a, go: ./a}]\n", `ingot.yaml:1:7: name: expected a string, got the number 42`},
		{"services is a mapping", "name: a\nservices: {a: b}\n", `ingot.yaml:2:11: services: expected a list, got a mapping`},
		{"args is a string", svc("name: a\ngo: ./a\nargs: -v"), `ingot.yaml:5:11: services[0].args: expected a list, got "-v"`},
		{"env is a list", svc("name: a\ngo: ./a\nenv: [A]"), `ingot.yaml:5:10: services[0].env: expected a mapping of NAME: value, got a list`},
		{"grace is a number", svc("name: a\ngo: ./a\ngrace: 10"), `ingot.yaml:5:12: services[0].grace: expected a duration (like 10s or 1m30s), got the number 10`},
		{"privileged is a string", svc("name: a\nimage: x:1\nprivileged: yes"), `ingot.yaml:5:17: services[0].privileged: expected true or false, got "yes"`},
		{"vsock port is a string", minimal + "management: {vsock_port: high}\n", `ingot.yaml:5:26: management.vsock_port: expected an integer, got "high"`},
		// Bad values.
		{"bad restart", svc("name: a\ngo: ./a\nrestart: sometimes"), `ingot.yaml:5:14: services[0].restart: "sometimes" is not one of always, on-failure, never`},
		{"bad name", "name: Hello_World\nservices: [{name: a, go: ./a}]\n", `ingot.yaml:1:7: name: "Hello_World" must be 1 to 63 lowercase letters, digits and inner hyphens (the name is the default hostname and seeds partition GUIDs)`},
		{"bad hostname", minimal + "hostname: -x\n", `ingot.yaml:5:11: hostname: "-x" is not a hostname: label "-x" must be 1 to 63 lowercase letters, digits and inner hyphens`},
		{"bad service name", svc("name: My-Svc\ngo: ./a"), `ingot.yaml:3:11: services[0].name: "My-Svc" must be 1 to 32 lowercase letters, digits, '-' or '_', starting with a letter`},
		{"absolute go path", svc("name: a\ngo: /src/a"), `ingot.yaml:4:9: services[0].go: "/src/a": write local packages relative to the config directory (./cmd/x), so the config builds on any machine`},
		{"local go with version", svc("name: a\ngo: ./a@v1"), `ingot.yaml:4:9: services[0].go: "./a@v1": a local package has no version; use ./dir or module/path@version`},
		{"unclean go path", svc("name: a\ngo: ./a/../b"), `ingot.yaml:4:9: services[0].go: "./a/../b": not a clean path (no //, /./ or /../ inside)`},
		// The clock.
		{"wait_for_clock without NTP", svc("name: a\ngo: ./a\nwait_for_clock: true") + "clock: {ntp: []}\n", `ingot.yaml:5:5: services[0].wait_for_clock: clock.ntp names no server, so the clock is never synced and the service would never start`},
		{"wait_for_clock not a bool", svc("name: a\ngo: ./a\nwait_for_clock: soon"), `ingot.yaml:5:21: services[0].wait_for_clock: expected true or false, got "soon"`},
		{"ntp not a list", minimal + "clock: {ntp: pool.ntp.org}\n", `ingot.yaml:5:14: clock.ntp: expected a list, got "pool.ntp.org"`},
		{"ntp bad port", minimal + "clock: {ntp: [a, \"b:99999\"]}\n", `ingot.yaml:5:18: clock.ntp[1]: "b:99999": port "99999" is not 1..65535`},
		{"ntp bad host", minimal + "clock: {ntp: [\"a b\"]}\n", `ingot.yaml:5:15: clock.ntp[0]: "a b": want a host name or address, optionally with :port`},
		{"clock unknown field", minimal + "clock: {servers: [a]}\n", `ingot.yaml:5:9: clock.servers: unknown field (known: ntp)`},
		// Wi-Fi.
		{"wifi with static", minimal + "network: {static: {address: 10.0.0.2/24}, wifi: {ssid: x, psk_file: p, firmware_deb: f.deb}}\n", `ingot.yaml:5:43: network.wifi: wifi: and static: do not mix: on Wi-Fi the address comes by DHCP`},
		{"wifi without ssid", minimal + "network: {wifi: {psk_file: p, firmware_deb: f.deb}}\n", `ingot.yaml:5:17: network.wifi.ssid: required field missing`},
		{"wifi without psk_file", minimal + "network: {wifi: {ssid: x, firmware_deb: f.deb}}\n", `ingot.yaml:5:17: network.wifi.psk_file: required field missing`},
		{"wifi without firmware", minimal + "network: {wifi: {ssid: x, psk_file: p}}\n", `ingot.yaml:5:17: network.wifi.firmware_deb: required field missing`},
		{"wifi ssid too long", minimal + "network: {wifi: {ssid: " + strings.Repeat("s", 33) + ", psk_file: p, firmware_deb: f.deb}}\n", `ingot.yaml:5:24: network.wifi.ssid: "` + strings.Repeat("s", 33) + `": want 1 to 32 bytes`},
		{"wifi unknown field", minimal + "network: {wifi: {ssid: x, psk_file: p, firmware_deb: f.deb, psk: secret}}\n", `ingot.yaml:5:61: network.wifi.psk: unknown field (known: ssid, psk_file, firmware_deb)`},
		{"network mapping without static or wifi", minimal + "network: {}\n", `ingot.yaml:5:10: network.static: required field missing`},
		{"bad target", minimal + "targets: [vm-amd64, rpi5]\n", `ingot.yaml:5:21: targets[1]: "rpi5" is not one of vm-amd64, vm-arm64, rpi, rpi-armv7`},
		{"target twice", minimal + "targets: [rpi, rpi]\n", `ingot.yaml:5:16: targets[1]: target rpi is listed twice`},
		{"no targets", minimal + "targets: []\n", `ingot.yaml:5:10: targets: must list at least one target (vm-amd64, vm-arm64, rpi, rpi-armv7)`},
		{"kernel unknown target", minimal + "kernel: {vm-sparc: debian:x.deb}\n", `ingot.yaml:5:10: kernel.vm-sparc: unknown target (known: vm-amd64, vm-arm64, rpi, rpi-armv7)`},
		{"kernel bad source", minimal + "kernel: {vm-amd64: ./x.deb}\n", `ingot.yaml:5:20: kernel.vm-amd64: "./x.deb" is not a kernel source (debian:PATH.deb or gomod:MODULE@VERSION)`},
		{"size unit", svc("name: a\ngo: ./a\nlog_buffer: 1Mb"), `ingot.yaml:5:17: services[0].log_buffer: "1Mb" has unknown unit "Mb" (use B, Ki, Mi, Gi, Ti, or K, M, G, T)`},
		{"size zero", svc("name: a\ngo: ./a\nresources: {memory: 0}"), `ingot.yaml:5:25: services[0].resources.memory: must be larger than 0`},
		{"cpu too small", svc("name: a\ngo: ./a\nresources: {cpu: 1m}"), `ingot.yaml:5:22: services[0].resources.cpu: "1m" is below the smallest quota, 10m (0.01 CPU)`},
		{"pids range", svc("name: a\ngo: ./a\nresources: {pids: 0}"), `ingot.yaml:5:23: services[0].resources.pids: 0 is out of range 1..4194304`},
		{"bad duration", svc("name: a\ngo: ./a\ngrace: soon"), `ingot.yaml:5:12: services[0].grace: "soon" is not a duration (like 10s or 1m30s)`},
		{"negative release", minimal + "release: -1\n", `ingot.yaml:5:10: release: -1 is out of range 0..9007199254740991`},
		{"release not a number", minimal + "release: v2\n", `ingot.yaml:5:10: release: expected an integer, got "v2"`},
		{"negative duration", minimal + "update: {health_window: -1s}\n", `ingot.yaml:5:25: update.health_window: must be longer than 0`},
		{"perm not MiB", minimal + "perm: 1000K\n", `ingot.yaml:5:7: perm: 1000000 is not a whole number of MiB`},
		{"root size not MiB", minimal + "disk: {root_size: 100M}\n", `ingot.yaml:5:19: disk.root_size: 100000000 is not a whole number of MiB`},
		{"vsock port range", minimal + "management: {vsock_port: 0}\n", `ingot.yaml:5:26: management.vsock_port: 0 is out of range 1..4294967294`},
		{"tcp address", minimal + "management: {tcp: \"7443\"}\n", `ingot.yaml:5:19: management.tcp: "7443" is not a listen address (like :7443 or 0.0.0.0:7443)`},
		{"network mode", minimal + "network: wifi\n", `ingot.yaml:5:10: network: "wifi" is not one of dhcp, none, or a mapping with static:`},
		{"static address", minimal + "network: {static: {address: 10.0.0.1}}\n", `ingot.yaml:5:29: network.static.address: "10.0.0.1" is not an address with prefix length (like 192.168.1.10/24)`},
		{"gateway outside", minimal + "network: {static: {address: 10.0.0.5/24, gateway: 10.0.1.1}}\n", `ingot.yaml:5:51: network.static.gateway: 10.0.1.1 is outside the network 10.0.0.0/24`},
		{"dns not an address", minimal + "network: {static: {address: 10.0.0.5/24, dns: [10.0.0.1, dns.google]}}\n", `ingot.yaml:5:58: network.static.dns[1]: "dns.google" is not an IP address`},
		{"env name", svc("name: a\ngo: ./a\nenv: {1X: y}"), `ingot.yaml:5:11: services[0].env.1X: not an environment variable name (letters, digits, _; not starting with a digit)`},
		{"env reserved", svc("name: a\ngo: ./a\nenv: {INGOT_BUILD_ID: y}"), `ingot.yaml:5:11: services[0].env.INGOT_BUILD_ID: set by ingot for every service; choose another name`},
		{"go user by name", svc("name: a\ngo: ./a\nuser: www-data"), `ingot.yaml:5:11: services[0].user: "www-data" is not a user (root, nobody, UID or UID:GID)`},
		{"volumes on go", svc("name: a\ngo: ./a\nvolumes: [/perm/a:/a]"), `ingot.yaml:5:5: services[0].volumes: only an image service has volumes; a Go service reads and writes /perm/a directly`},
		{"volume outside perm", svc("name: a\nimage: x:1\nvolumes: [/etc:/etc]"), `ingot.yaml:5:15: services[0].volumes[0]: "/etc:/etc": the source must be a clean path under /perm/`},
		{"volume over init's logs", svc("name: a\nimage: x:1\nvolumes: [/perm/a:/a, /perm/log:/logs]"), `ingot.yaml:5:27: services[0].volumes[1]: the source /perm/log is in init's log directory /perm/log, which no container may write`},
		{"volume in init's logs", svc("name: a\nimage: x:1\nvolumes: [/perm/log/a:/logs]"), `ingot.yaml:5:15: services[0].volumes[0]: the source /perm/log/a is in init's log directory /perm/log, which no container may write`},
		{"volume over the puller's state", svc("name: a\nimage: x:1\nvolumes: [/perm/.ingot-pull:/steal]"), `ingot.yaml:5:15: services[0].volumes[0]: the source /perm/.ingot-pull is in /perm/.ingot-pull, which ingot-init keeps (its clock, the release puller's state and registry credentials)`},
		{"volume over another service", "name: x\nservices:\n  - name: a\n    image: x:1\n    volumes: [/perm/b/data:/data]\n  - name: b\n    go: ./b\n", `ingot.yaml:5:15: services[0].volumes[0]: the source /perm/b/data is in /perm/b, the directory of service b`},
		{"entrypoint on go", svc("name: a\ngo: ./a\nentrypoint: [x]"), `ingot.yaml:5:5: services[0].entrypoint: only an image service has an entrypoint; a Go service's program is its binary`},
		{"reserved service name", svc("name: log\ngo: ./a"), `ingot.yaml:3:11: services[0].name: "log" is reserved for ingot-init (reserved: init, log)`},
		{"log buffer too large", svc("name: a\ngo: ./a\nlog_buffer: 1Gi"), `ingot.yaml:5:17: services[0].log_buffer: 1Gi is more than the maximum, 64Mi`},
		{"health without probe", svc("name: a\ngo: ./a\nhealth: {retries: 2}"), `ingot.yaml:5:13: services[0].health: set http: (a URL to GET) or tcp: (HOST:PORT to connect to)`},
		{"health both probes", svc("name: a\ngo: ./a\nhealth: {http: \"http://127.0.0.1/\", tcp: \"127.0.0.1:1\"}"), `ingot.yaml:5:41: services[0].health.tcp: set http: or tcp:, not both`},
		{"health https", svc("name: a\ngo: ./a\nhealth: {http: \"https://127.0.0.1/\"}"), `ingot.yaml:5:20: services[0].health.http: "https://127.0.0.1/": want an http:// URL (the probe runs inside the appliance, e.g. http://127.0.0.1:8080/healthz)`},
		{"health tcp no port", svc("name: a\ngo: ./a\nhealth: {tcp: \"127.0.0.1\"}"), `ingot.yaml:5:19: services[0].health.tcp: "127.0.0.1": want HOST:PORT (127.0.0.1:5432): address 127.0.0.1: missing port in address`},
		{"health no host", svc("name: a\ngo: ./a\nhealth: {tcp: \":80\"}"), `ingot.yaml:5:19: services[0].health.tcp: ":80" has no host (127.0.0.1:PORT for the appliance itself)`},
		{"health interval short", svc("name: a\ngo: ./a\nhealth: {tcp: \"127.0.0.1:80\", interval: 10ms}"), `ingot.yaml:5:45: services[0].health.interval: 10ms is outside 1s..1h0m0s (whole milliseconds)`},
		{"health timeout long", svc("name: a\ngo: ./a\nhealth: {tcp: \"127.0.0.1:80\", interval: 2s, timeout: 3s}"), `ingot.yaml:5:58: services[0].health.timeout: 3s is outside 100ms..the interval, 2s (whole milliseconds)`},
		{"health unknown field", svc("name: a\ngo: ./a\nhealth: {tcp: \"127.0.0.1:80\", every: 2s}"), `ingot.yaml:5:35: services[0].health.every: unknown field (known: http, tcp, interval, timeout, retries, restart)`},
		{"health retries zero", svc("name: a\ngo: ./a\nhealth: {tcp: \"127.0.0.1:80\", retries: 0}"), `ingot.yaml:5:44: services[0].health.retries: 0 is out of range 1..100`},
		{"grace too long", svc("name: a\ngo: ./a\ngrace: 1h"), `ingot.yaml:5:12: services[0].grace: 1h0m0s is longer than the maximum, 10m0s`},
		{"grace fraction", svc("name: a\ngo: ./a\ngrace: 1500ms"), `ingot.yaml:5:12: services[0].grace: 1.5s is not a whole number of seconds`},
		{"uid -1", svc("name: a\ngo: ./a\nuser: 4294967295"), `ingot.yaml:5:11: services[0].user: "4294967295": ids go up to 4294967294`},
		{"env NUL", svc("name: a\ngo: ./a\nenv: {A: \"x\\0y\"}"), `ingot.yaml:5:14: services[0].env.A: contains a NUL byte`},
		{"hostname too long", minimal + "hostname: " + strings.Repeat("a.", 32) + "a\n", `ingot.yaml:5:11: hostname: "` + strings.Repeat("a.", 32) + `a" is longer than 64 bytes`},
		{"needs perm without perm", svc("name: a\ngo: ./a\nneeds_perm: true") + "perm: false\n", `ingot.yaml:5:5: services[0].needs_perm: the service needs perm, but perm: is off, so it would never start`},
		{"after twice", "name: x\nservices:\n  - {name: a, go: ./a, after: [b, b]}\n  - {name: b, go: ./b}\n", `ingot.yaml:3:35: services[0].after[1]: "b" is listed twice`},
		// Cross-service checks.
		{"duplicate service", "name: x\nservices:\n  - {name: a, go: ./a}\n  - {name: b, go: ./b}\n  - {name: a, image: a:1}\n",
			`ingot.yaml:5:12: services[2].name: duplicate service "a" (first at line 3)`},
		{"after unknown", "name: x\nservices:\n  - {name: a, go: ./a, after: [c]}\n  - {name: b, go: ./b}\n",
			`ingot.yaml:3:32: services[0].after[0]: unknown service "c" (services: a, b)`},
		{"after self", "name: x\nservices:\n  - {name: a, go: ./a, after: [a]}\n",
			`ingot.yaml:3:32: services[0].after[0]: a service cannot start after itself`},
		{"after cycle", "name: x\nservices:\n  - {name: a, go: ./a, after: [c]}\n  - {name: b, go: ./b, after: [a]}\n  - {name: c, go: ./c, after: [b]}\n",
			`ingot.yaml:4:32: services[1].after[0]: dependency cycle: a -> c -> b -> a`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("ingot.yaml", []byte(tt.in))
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, want error %q", tt.in, c, tt.want)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("Parse(%q) error\n got %s\nwant %s", tt.in, got, tt.want)
			}
			var list ErrorList
			if !errors.As(err, &list) || len(list) != 1 {
				t.Errorf("Parse(%q) error = %#v, want an ErrorList of one", tt.in, err)
			}
		})
	}
}

// TestParseClock: servers as written, an empty list for NTP off, and
// wait_for_clock carried into the service; only the default servers are
// marked Defaulted (DHCP's servers come first).
func TestParseClock(t *testing.T) {
	c, err := Parse("ingot.yaml", []byte(svc("name: a\ngo: ./a\nwait_for_clock: true")+"clock: {ntp: [\"10.0.2.2:1234\", time.example.org, \"[fd00::1]:123\"]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.0.2.2:1234", "time.example.org", "[fd00::1]:123"}; !slices.Equal(c.Clock.NTP, want) || !c.Services[0].WaitForClock || c.Clock.Defaulted {
		t.Errorf("clock = %+v, wait_for_clock = %v; want %v, not defaulted, and true", c.Clock, c.Services[0].WaitForClock, want)
	}
	c, err = Parse("ingot.yaml", []byte(minimal+"clock: {ntp: []}\n"))
	if err != nil || len(c.Clock.NTP) != 0 || c.Clock.Defaulted || c.Clock.AsksDHCP() {
		t.Errorf("clock: {ntp: []} = %+v, %v; want NTP off, no DHCP", c.Clock, err)
	}
	for _, yaml := range []string{"clock: {}\n", ""} {
		c, err = Parse("ingot.yaml", []byte(minimal+yaml))
		if err != nil || !slices.Equal(c.Clock.NTP, spec.DefaultNTPServers) || !c.Clock.Defaulted || !c.Clock.AsksDHCP() {
			t.Errorf("%q: clock = %+v, %v; want the default servers, defaulted, DHCP first", yaml, c.Clock, err)
		}
	}
	c, err = Parse("ingot.yaml", []byte(minimal+"clock: {ntp: [0.pool.ntp.org]}\n"))
	if err != nil || c.Clock.Defaulted {
		t.Errorf("a pool server named in ingot.yaml = %+v, %v; want it as named, not defaulted", c.Clock, err)
	}
}

// TestParseWiFi: network.wifi keeps DHCP (eth0 too) and resolves its
// files against the config's directory; PSK reads and checks the
// passphrase, naming the file and never the content.
func TestParseWiFi(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "ingot.yaml")
	c, err := Parse(name, []byte(minimal+"targets: [rpi]\nnetwork: {wifi: {ssid: \"my net\", psk_file: secrets/psk, firmware_deb: /fw/brcm.deb}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	w := c.Network.WiFi
	if c.Network.Mode != NetworkDHCP || w == nil || w.SSID != "my net" || w.PSKFile != filepath.Join(dir, "secrets", "psk") || w.FirmwareDeb != "/fw/brcm.deb" {
		t.Fatalf("network = %+v, wifi %+v; want DHCP with the wifi as written", c.Network, w)
	}
	if _, err := w.PSK(); err == nil || !strings.Contains(err.Error(), name+":6:") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("PSK of a missing file = %v, want it named at the line of psk_file", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "secrets"), 0o700); err != nil {
		t.Fatal(err)
	}
	for content, want := range map[string]string{
		"correct horse\n":       "",
		"12345678":              "",
		"short\n":               "a WPA2 passphrase is 8 to 63 characters, this one has 5",
		strings.Repeat("x", 64): "this one has 64",
		"tab\there is bad":      "byte 3 is not printable ASCII",
		"pässwörter":            "is not printable ASCII",
	} {
		if err := os.WriteFile(w.PSKFile, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		psk, err := w.PSK()
		switch {
		case want == "" && (err != nil || psk != strings.TrimSuffix(content, "\n")):
			t.Errorf("PSK of %q = %q, %v; want it without the newline", content, psk, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), w.PSKFile)):
			t.Errorf("PSK of %q = %v, want an error naming the file with %q", content, err, want)
		case want != "" && strings.Contains(err.Error(), strings.TrimSuffix(content, "\n")):
			t.Errorf("PSK error %q repeats the passphrase", err)
		}
	}
}

// TestParseUser: a user as appliance.json takes it; an image's user is
// numbers or a name to resolve in the image, root and nobody included, so
// an image cannot give those names other ids.
func TestParseUser(t *testing.T) {
	for _, tt := range []struct {
		user, program, want string
	}{
		{"root", "go: ./a", "root"},
		{"nobody", "go: ./a", "nobody"},
		{"1000", "go: ./a", "1000:1000"},
		{"\"1000:100\"", "go: ./a", "1000:100"},
		{"root", "image: x:1", "0:0"},
		{"nobody", "image: x:1", "65534:65534"},
		{"www-data", "image: x:1", "www-data"},
		{"1000", "image: x:1", "1000:1000"},
	} {
		c, err := Parse("ingot.yaml", []byte(svc("name: a\n"+tt.program+"\nuser: "+tt.user)))
		if err != nil {
			t.Errorf("user: %s (%s): Parse = %v", tt.user, tt.program, err)
			continue
		}
		if got := c.Services[0].User; got != tt.want {
			t.Errorf("user: %s (%s) = %q, want %q", tt.user, tt.program, got, tt.want)
		}
	}
}

func TestParseReportsEveryError(t *testing.T) {
	in := "name: a\nservices:\n  - {name: a, go: ./a, restart: maybe}\n  - {name: b, go: 3}\nperm: lots\n"
	_, err := Parse("x.yaml", []byte(in))
	want := `x.yaml:3:33: services[0].restart: "maybe" is not one of always, on-failure, never
x.yaml:4:19: services[1].go: expected a string, got the number 3
x.yaml:5:7: perm: "lots" is not a size (like 64Mi, 1GiB or 4096)`
	if err == nil || err.Error() != want {
		t.Errorf("Parse(%q) error =\n%v\nwant\n%s", in, err, want)
	}
}

func TestParsePermForms(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
	}{
		{"perm: false", 0},
		{"perm: 0", 0},
		{"perm: true", DefaultPermBytes},
		{"perm: 128Mi", 128 << 20},
		{"perm: 1Gi", 1 << 30},
	} {
		c, err := Parse("ingot.yaml", []byte(minimal+tt.in+"\n"))
		if err != nil {
			t.Errorf("Parse(%q) = %v", tt.in, err)
			continue
		}
		if c.PermBytes != tt.want {
			t.Errorf("Parse(%q).PermBytes = %d, want %d", tt.in, c.PermBytes, tt.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		err  bool
	}{
		{"4096", 4096, false},
		{"64Mi", 64 << 20, false},
		{"64MiB", 64 << 20, false},
		{"1 GiB", 1 << 30, false},
		{"500M", 500e6, false},
		{"2k", 2000, false},
		{"1.5Gi", 0, true},
		{"-1", 0, true},
		{"Mi", 0, true},
		{"99999999999Ti", 0, true},
	} {
		got, err := ParseSize(tt.in)
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("ParseSize(%q) = %d, %v, want %d, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestParseCPU(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		err  bool
	}{
		{"0.5", 500, false},
		{"2", 2000, false},
		{"250m", 250, false},
		{"0.001", 0, true},
		{"half", 0, true},
		{"-1", 0, true},
	} {
		got, err := ParseCPU(tt.in)
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("ParseCPU(%q) = %d, %v, want %d, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestTarget(t *testing.T) {
	for _, tt := range []struct {
		t                  Target
		arch, goarm, varnt string
		vm                 bool
	}{
		{TargetVMAmd64, "amd64", "", "", true},
		{TargetVMArm64, "arm64", "", "", true},
		{TargetRPi, "arm64", "", "", false},
		{TargetRPiArmv7, "arm", "7", "v7", false},
	} {
		if got := tt.t.Arch(); got != tt.arch {
			t.Errorf("%s.Arch() = %q, want %q", tt.t, got, tt.arch)
		}
		if got := tt.t.GOARM(); got != tt.goarm {
			t.Errorf("%s.GOARM() = %q, want %q", tt.t, got, tt.goarm)
		}
		if got := tt.t.Variant(); got != tt.varnt {
			t.Errorf("%s.Variant() = %q, want %q", tt.t, got, tt.varnt)
		}
		if got := tt.t.IsVM(); got != tt.vm {
			t.Errorf("%s.IsVM() = %v, want %v", tt.t, got, tt.vm)
		}
	}
	if _, err := ParseTarget("vm-riscv64"); err == nil {
		t.Errorf("ParseTarget(vm-riscv64) = nil error, want error")
	}
}

func TestScaffoldParses(t *testing.T) {
	data := Scaffold("myapp")
	c, err := Parse("ingot.yaml", data)
	if err != nil {
		t.Fatalf("Parse(Scaffold(myapp)) = %v\n%s", err, data)
	}
	if c.Name != "myapp" || len(c.Services) != 1 || c.Services[0].Go.Path != "./cmd/myapp" {
		t.Errorf("Parse(Scaffold(myapp)) = name %q, services %+v", c.Name, c.Services)
	}
	// Every commented-out line must parse too once uncommented, so the
	// scaffold never teaches a field that does not exist.
	var b strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimLeft(line, " ")
		indent := line[:len(line)-len(trimmed)]
		if strings.HasPrefix(trimmed, "# ") && (strings.Contains(trimmed, ": ") || strings.HasPrefix(trimmed, "# - ") || strings.HasSuffix(trimmed, ":")) {
			line = indent + strings.TrimPrefix(trimmed, "# ")
		}
		b.WriteString(line + "\n")
	}
	uncommented := strings.Replace(b.String(), "network: dhcp  ", "network: dhcp #", 1)
	uncommented = strings.Replace(uncommented, "after: [other-service]", "after: [web]", 1)
	uncommented = strings.Replace(uncommented, "ingot.yaml: the appliance", "#", 1)
	if _, err := Parse("ingot.yaml", []byte(uncommented)); err != nil {
		t.Errorf("Parse(uncommented scaffold) = %v\n%s", err, uncommented)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "ingot.yaml")
	if err := os.WriteFile(p, []byte(minimal), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil || c.Dir != dir || c.File != p {
		t.Errorf("Load(%s) = %+v, %v, want Dir %s", p, c, err, dir)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("Load(missing) = %v, want error naming the file", err)
	}
}
