package builder

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/packer/format/spec"
	"github.com/ingotdev/ingot/packer/rootfs"
)

// testToken is a management token of the form config.CheckToken accepts.
const testToken = "9f2c4e6a8b0d1f3e5a7c9b1d3f5e7a9c"

// testConfig parses services (YAML list items) as the config of the test
// module testdata/app, with a token file and a stand-in kernel .deb in a
// temporary directory.
func testConfig(t *testing.T, services string, extra ...string) *config.Config {
	t.Helper()
	tmp := t.TempDir()
	token := filepath.Join(tmp, "token")
	kernel := filepath.Join(tmp, "linux-image-test.deb")
	if err := os.WriteFile(token, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kernel, []byte("not really a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	y := fmt.Sprintf(`name: app
targets: [vm-amd64, vm-arm64, rpi-armv7]
kernel: {vm-amd64: "debian:%s", vm-arm64: "debian:%s"}
token_file: %s
services:
%s
%s`, kernel, kernel, token, services, strings.Join(extra, "\n"))
	cfg, err := config.Parse(filepath.Join("testdata", "app", "ingot.yaml"), []byte(y))
	if err != nil {
		t.Fatalf("config.Parse:\n%s\n%v", y, err)
	}
	cfg.Management.TLSCertFile = filepath.Join(tmp, "tls-cert.pem")
	cfg.Management.TLSKeyFile = filepath.Join(tmp, "tls-key.pem")
	if err := os.WriteFile(cfg.Management.TLSCertFile, []byte(testCertPEM), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.Management.TLSKeyFile, []byte(testKeyPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func testOptions(t *testing.T, cache string) []Option {
	return []Option{WithCacheDir(cache), WithIngotSource(filepath.Join("testdata", "fakeingot"))}
}

// treeHash digests every entry of t: path, metadata and content.
func treeHash(t *testing.T, tree *rootfs.Tree) string {
	t.Helper()
	h := sha256.New()
	err := tree.Walk(func(p string, e *rootfs.Entry) error {
		fmt.Fprintf(h, "%q %v %o %d %d %d %d %q\n", p, e.Kind, e.Mode, e.UID, e.GID, e.ModTime, e.Size, e.Target)
		if e.Kind == rootfs.KindFile {
			data := readEntry(t, tree, p)
			if int64(len(data)) != e.Size {
				return fmt.Errorf("%s: content is %d bytes, Size says %d", p, len(data), e.Size)
			}
			h.Write(data)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func readEntry(t *testing.T, tree *rootfs.Tree, p string) []byte {
	t.Helper()
	e, ok := tree.Get(p)
	if !ok || e.Kind != rootfs.KindFile {
		t.Fatalf("tree: %s is missing or not a file (%v)", p, e.Kind)
	}
	rc, err := e.Content.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func elfMachine(t *testing.T, data []byte) elf.Machine {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("not an ELF file: %v", err)
	}
	return f.Machine
}

func TestBuildArchitectures(t *testing.T) {
	cfg := testConfig(t, "  - {name: hello, go: ./cmd/hello}")
	cache := t.TempDir()
	for _, tt := range []struct {
		target  config.Target
		machine elf.Machine
		class   elf.Class
	}{
		{config.TargetVMAmd64, elf.EM_X86_64, elf.ELFCLASS64},
		{config.TargetVMArm64, elf.EM_AARCH64, elf.ELFCLASS64},
		{config.TargetRPiArmv7, elf.EM_ARM, elf.ELFCLASS32},
	} {
		t.Run(string(tt.target), func(t *testing.T) {
			r, err := Build(context.Background(), cfg, tt.target, testOptions(t, cache)...)
			if err != nil {
				t.Fatalf("Build(%s) = %v", tt.target, err)
			}
			for _, p := range []string{"/init", "/usr/bin/hello"} {
				data := readEntry(t, r.Root, p)
				if got := elfMachine(t, data); got != tt.machine {
					t.Errorf("Build(%s): %s ELF machine = %v, want %v", tt.target, p, got, tt.machine)
				}
				f, _ := elf.NewFile(bytes.NewReader(data))
				if f.Class != tt.class {
					t.Errorf("Build(%s): %s ELF class = %v, want %v", tt.target, p, f.Class, tt.class)
				}
				if f.Section(".symtab") != nil {
					t.Errorf("Build(%s): %s has a symbol table; want it stripped (-s)", tt.target, p)
				}
				if e, _ := r.Root.Get(p); e.Mode != 0o755 || e.UID != 0 {
					t.Errorf("Build(%s): %s mode %o uid %d, want 0755 root", tt.target, p, e.Mode, e.UID)
				}
			}
			if !bytes.Equal(r.Init, readEntry(t, r.Root, "/init")) {
				t.Errorf("Build(%s): Result.Init differs from /init", tt.target)
			}
			if r.Arch != tt.target.Arch() || r.Target != tt.target {
				t.Errorf("Build(%s) = arch %q target %q", tt.target, r.Arch, r.Target)
			}
		})
	}
}

func TestBuildTreeLayout(t *testing.T) {
	cfg := testConfig(t, "  - {name: hello, go: ./cmd/hello}\n  - {name: hello2, go: ./cmd/hello}")
	r, err := Build(context.Background(), cfg, config.TargetVMAmd64, append(testOptions(t, t.TempDir()), WithSourceDateEpoch(1234))...)
	if err != nil {
		t.Fatalf("Build = %v", err)
	}
	want := map[string]rootfs.Entry{
		"/proc":            {Kind: rootfs.KindDir, Mode: 0o555},
		"/sys":             {Kind: rootfs.KindDir, Mode: 0o555},
		"/dev":             {Kind: rootfs.KindDir, Mode: 0o755},
		"/run":             {Kind: rootfs.KindDir, Mode: 0o755},
		"/tmp":             {Kind: rootfs.KindDir, Mode: 0o1777},
		"/perm":            {Kind: rootfs.KindDir, Mode: 0o755},
		"/oci":             {Kind: rootfs.KindDir, Mode: 0o755},
		"/lib/modules":     {Kind: rootfs.KindDir, Mode: 0o755},
		"/etc/ingot":       {Kind: rootfs.KindDir, Mode: 0o755},
		"/etc/resolv.conf": {Kind: rootfs.KindSymlink, Mode: 0o777, Target: "/run/resolv.conf"},
		"/usr/bin/hello2":  {Kind: rootfs.KindHardlink, Target: "/usr/bin/hello"},
		"/usr/lib/ingot":   {Kind: rootfs.KindDir, Mode: 0o755},
		DHCPPath:           {Kind: rootfs.KindFile, Mode: 0o755},
	}
	for p, w := range want {
		e, ok := r.Root.Get(p)
		if !ok {
			t.Errorf("tree has no %s", p)
			continue
		}
		got := rootfs.Entry{Kind: e.Kind, Mode: e.Mode, Target: e.Target}
		if diff := cmp.Diff(w, got); diff != "" {
			t.Errorf("tree %s (-want +got):\n%s", p, diff)
		}
	}
	err = r.Root.Walk(func(p string, e *rootfs.Entry) error {
		if e.ModTime != 1234 {
			t.Errorf("%s: ModTime = %d, want 1234 (the epoch)", p, e.ModTime)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{
		"/etc/hostname": "app\n",
		"/etc/hosts":    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tapp\n",
		"/etc/passwd":   "root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
		"/etc/group":    "root:x:0:\nnogroup:x:65534:\n",
	} {
		if got := string(readEntry(t, r.Root, p)); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	var info BuildInfo
	if err := json.Unmarshal(readEntry(t, r.Root, BuildInfoPath), &info); err != nil {
		t.Fatal(err)
	}
	if info.BuildID != r.BuildID || info.SourceDateEpoch != 1234 || info.Kernel.Source != "debian:linux-image-test.deb" ||
		len(info.Binaries) != 5 || info.Binaries[1].Package != Stage0Package || info.Binaries[1].Path != Stage0Path ||
		info.Binaries[2].Package != "./cmd/hello" || info.Binaries[4].Package != DHCPPackage || !strings.HasPrefix(info.GoVersion, "go1.") {
		t.Errorf("build.json = %+v", info)
	}
	if sum := sha256.Sum256([]byte("not really a kernel")); info.Kernel.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("build.json kernel sha256 = %s, want the .deb's", info.Kernel.SHA256)
	}
}

func TestBuildApplianceJSON(t *testing.T) {
	cfg := testConfig(t, `  - name: db
    go: ./cmd/world
    restart: on-failure
    user: "1000:100"
    needs_perm: true
    grace: 30s
    log_buffer: 2Mi
  - name: hello
    go: ./cmd/hello
    args: [-listen, ":8080"]
    env: {GREETING: hi, PORT: 8080}
    after: [db]
    wait_for_clock: true`,
		"hostname: app.example.org",
		"clock: {ntp: [\"10.0.0.1:4123\", time.example.org]}",
		"management: {vsock_port: 2048, tcp: \":7443\"}",
		"network: {static: {address: 10.0.0.5/24, gateway: 10.0.0.1, dns: [10.0.0.1]}}")
	r, err := Build(context.Background(), cfg, config.TargetVMArm64, testOptions(t, t.TempDir())...)
	if err != nil {
		t.Fatalf("Build = %v", err)
	}
	got, err := spec.Parse(readEntry(t, r.Root, spec.AppliancePath))
	if err != nil {
		t.Fatalf("spec.Parse(appliance.json) = %v", err)
	}
	tokenSum := sha256.Sum256([]byte(testToken))
	want := `{
  "name": "app",
  "build_id": "` + r.BuildID + `",
  "arch": "arm64",
  "target": "vm-arm64",
  "hostname": "app.example.org",
  "services": [
    {
      "name": "db",
      "path": "/usr/bin/db",
      "restart": "on-failure",
      "user": "1000:100",
      "needs_perm": true,
      "log_buffer_bytes": 2097152,
      "grace_seconds": 30
    },
    {
      "name": "hello",
      "path": "/usr/bin/hello",
      "args": [
        "-listen",
        ":8080"
      ],
      "env": {
        "GREETING": "hi",
        "PORT": "8080"
      },
      "restart": "always",
      "after": [
        "db"
      ],
      "log_buffer_bytes": 1048576,
      "grace_seconds": 10,
      "wait_for_clock": true
    }
  ],
  "management": {
    "vsock_port": 2048,
    "token_sha256": "` + hex.EncodeToString(tokenSum[:]) + `",
    "tcp": ":7443",
    "tls_cert_sha256": "` + testCertSHA256 + `",
    "health_window_seconds": 30
  },
  "network": {
    "address": "10.0.0.5/24",
    "gateway": "10.0.0.1",
    "dns": [
      "10.0.0.1"
    ]
  },
  "clock": {
    "ntp": [
      "10.0.0.1:4123",
      "time.example.org"
    ]
  }
}
`
	if diff := cmp.Diff(want, string(readEntry(t, r.Root, spec.AppliancePath))); diff != "" {
		t.Errorf("appliance.json (-want +got):\n%s", diff)
	}
	if e, ok := r.Root.Get(spec.TLSKeyPath); !ok || e.Mode != 0o600 || e.UID != 0 || string(readEntry(t, r.Root, spec.TLSKeyPath)) != testKeyPEM {
		t.Errorf("%s in the root = %+v, want the key, mode 0600, owned by root", spec.TLSKeyPath, e)
	}
	if len(r.BuildID) != 16 || got.BuildID != r.BuildID {
		t.Errorf("BuildID = %q, appliance.json build_id = %q, want the same 16 hex digits", r.BuildID, got.BuildID)
	}
	netipEqual := cmp.Options{cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })}
	if diff := cmp.Diff(got, r.Appliance, netipEqual); diff != "" {
		t.Errorf("Result.Appliance differs from appliance.json (-file +result):\n%s", diff)
	}
}

func TestBuildDeterministic(t *testing.T) {
	cfg := testConfig(t, "  - {name: hello, go: ./cmd/hello}\n  - {name: world, go: ./cmd/world}")
	build := func(opts ...Option) *Result {
		t.Helper()
		r, err := Build(context.Background(), cfg, config.TargetVMAmd64, append(testOptions(t, t.TempDir()), opts...)...)
		if err != nil {
			t.Fatalf("Build = %v", err)
		}
		return r
	}
	a, b := build(), build()
	if ha, hb := treeHash(t, a.Root), treeHash(t, b.Root); ha != hb {
		t.Errorf("two builds from the same inputs: tree hashes %s and %s differ", ha, hb)
	}
	if a.BuildID != b.BuildID {
		t.Errorf("two builds from the same inputs: build ids %s and %s differ", a.BuildID, b.BuildID)
	}
	// Instruction-set variables of the caller's environment must not leak
	// into the image.
	t.Setenv("GOAMD64", "v3")
	if c := build(); c.BuildID != a.BuildID {
		t.Errorf("GOAMD64=v3 in the environment changed the build id from %s to %s", a.BuildID, c.BuildID)
	}
	if c := build(WithSourceDateEpoch(1)); c.BuildID == a.BuildID {
		t.Errorf("a different epoch gave the same build id %s", c.BuildID)
	}
	other := testConfig(t, "  - {name: hello, go: ./cmd/world}\n  - {name: world, go: ./cmd/world}")
	c, err := Build(context.Background(), other, config.TargetVMAmd64, testOptions(t, t.TempDir())...)
	if err != nil {
		t.Fatal(err)
	}
	if c.BuildID == a.BuildID {
		t.Errorf("a different binary gave the same build id %s", c.BuildID)
	}
}

func TestBuildSourceDateEpochEnv(t *testing.T) {
	for _, tt := range []struct {
		env  string
		want int64
		err  bool
	}{
		{"", DefaultEpoch, false},
		{"1700000000", 1700000000, false},
		{"yesterday", 0, true},
	} {
		o := options{getenv: func(k string) string {
			if k == "SOURCE_DATE_EPOCH" {
				return tt.env
			}
			return ""
		}}
		got, err := o.sourceDateEpoch()
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("sourceDateEpoch(SOURCE_DATE_EPOCH=%q) = %d, %v, want %d, error %v", tt.env, got, err, tt.want, tt.err)
		}
	}
}

func TestBuildBrokenPackage(t *testing.T) {
	cfg := testConfig(t, "  - {name: hello, go: ./cmd/hello}\n  - {name: oops, go: ./cmd/broken}")
	_, err := Build(context.Background(), cfg, config.TargetVMAmd64, testOptions(t, t.TempDir())...)
	var ce *CompileError
	if !errors.As(err, &ce) {
		t.Fatalf("Build(broken) = %v, want a *CompileError", err)
	}
	if ce.Service != "oops" || ce.Package != "./cmd/broken" || ce.Target != "linux/amd64" {
		t.Errorf("CompileError = service %q package %q target %q, want oops ./cmd/broken linux/amd64", ce.Service, ce.Package, ce.Target)
	}
	msg := err.Error()
	for _, want := range []string{`builder: service "oops": go build ./cmd/broken for linux/amd64: exit status 1`,
		"cmd/broken/main.go:4:15: undefined: undefinedFunction"} {
		if !strings.Contains(msg, want) {
			t.Errorf("Build(broken) error =\n%s\nwant it to contain %q", msg, want)
		}
	}
}

func TestBuildParallel(t *testing.T) {
	goPath, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	logPath := filepath.Join(dir, "log")
	wrapper := filepath.Join(dir, "go")
	// The wrapper logs when each `go build` starts and ends, and holds
	// each build for a moment so that overlap cannot come from luck.
	script := fmt.Sprintf(`#!/bin/sh
if [ "$1" = build ]; then echo "start $$ $(date +%%s.%%N)" >> %[1]s; sleep 0.5; fi
%[2]s "$@"; rc=$?
if [ "$1" = build ]; then echo "end $$ $(date +%%s.%%N)" >> %[1]s; fi
exit $rc
`, logPath, goPath)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, "  - {name: hello, go: ./cmd/hello}\n  - {name: world, go: ./cmd/world}")
	opts := append(testOptions(t, t.TempDir()), WithGoCommand(wrapper), func(o *options) { o.maxParallel = 4 })
	if _, err := Build(context.Background(), cfg, config.TargetVMAmd64, opts...); err != nil {
		t.Fatalf("Build = %v", err)
	}
	log, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	// Count how many builds ran at once at most.
	type event struct {
		at    float64
		delta int
	}
	var events []event
	for _, line := range strings.Split(strings.TrimSpace(string(log)), "\n") {
		f := strings.Fields(line)
		at, err := strconv.ParseFloat(f[2], 64)
		if err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		events = append(events, event{at, map[string]int{"start": 1, "end": -1}[f[0]]})
	}
	if len(events) != 10 {
		t.Fatalf("go build ran %d times, want 5 (ingot-init, ingot-stage0, hello, world, dhcp); log:\n%s", len(events)/2, log)
	}
	for i := range events { // insertion sort by time
		for j := i; j > 0 && events[j].at < events[j-1].at; j-- {
			events[j], events[j-1] = events[j-1], events[j]
		}
	}
	running, most := 0, 0
	for _, e := range events {
		running += e.delta
		most = max(most, running)
	}
	if most < 3 {
		t.Errorf("at most %d go builds ran at once, want 3; log:\n%s", most, log)
	}
}

func TestBuildWarmCacheSkipsLink(t *testing.T) {
	cfg := testConfig(t, "  - {name: hello, go: ./cmd/hello}")
	cache := t.TempDir()
	if _, err := Build(context.Background(), cfg, config.TargetVMAmd64, testOptions(t, cache)...); err != nil {
		t.Fatal(err)
	}
	outs, _ := filepath.Glob(filepath.Join(cache, "go", "*", "*"))
	var bins []string
	for _, o := range outs {
		if !strings.HasSuffix(o, ".lock") {
			bins = append(bins, o)
		}
	}
	if len(bins) != 4 {
		t.Fatalf("cache holds %v, want 4 binaries (ingot-init, ingot-stage0, hello, dhcp)", bins)
	}
	before := map[string]uint64{}
	for _, b := range bins {
		st, _ := os.Stat(b)
		before[b] = inode(st)
	}
	if _, err := Build(context.Background(), cfg, config.TargetVMAmd64, testOptions(t, cache)...); err != nil {
		t.Fatal(err)
	}
	for _, b := range bins {
		st, err := os.Stat(b)
		if err != nil || inode(st) != before[b] {
			t.Errorf("warm build replaced %s; want go build to find it up to date", b)
		}
	}
}

func TestBuildErrors(t *testing.T) {
	cfg := testConfig(t, "  - {name: hello, go: ./cmd/hello}")
	ctx := context.Background()
	opts := testOptions(t, t.TempDir())

	if _, err := Build(ctx, cfg, config.TargetRPi, opts...); err == nil ||
		err.Error() != "builder: testdata/app/ingot.yaml: target rpi is not in targets: vm-amd64, vm-arm64, rpi-armv7" {
		t.Errorf("Build(rpi) = %v, want the target refused", err)
	}
	noToken := *cfg
	noToken.TokenFile = filepath.Join(t.TempDir(), "token")
	if _, err := Build(ctx, &noToken, config.TargetVMAmd64, opts...); err == nil || !strings.Contains(err.Error(), noToken.TokenFile+" does not exist") {
		t.Errorf("Build(no token) = %v, want an error naming the token file", err)
	}
	missing := filepath.Join(t.TempDir(), "gone.deb")
	if _, err := Build(ctx, cfg, config.TargetVMAmd64, append(opts, WithKernelDeb(missing))...); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("Build(missing kernel) = %v, want an error naming %s", err, missing)
	}
	missingLayout := filepath.Join(t.TempDir(), "no-layout")
	withImage := testConfig(t, "  - {name: web, image: \"oci-layout:"+missingLayout+"\"}")
	if _, err := Build(ctx, withImage, config.TargetVMAmd64, opts...); err == nil || !strings.Contains(err.Error(), `service "web": oci: oci-layout:`+missingLayout) {
		t.Errorf("Build(missing image) = %v, want an error naming the service and image", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Build(cancelled, cfg, config.TargetVMAmd64, opts...); !errors.Is(err, context.Canceled) {
		t.Errorf("Build(cancelled) = %v, want context.Canceled", err)
	}
}

func TestResolveKernel(t *testing.T) {
	tmp := t.TempDir()
	touch := func(p string) string {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("deb"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfgKernel := touch(filepath.Join(tmp, "cfg", "k.deb"))
	envKernel := touch(filepath.Join(tmp, "env", "k.deb"))
	dirKernel := touch(filepath.Join(tmp, "kdir", "linux-image-cloud-arm64.deb"))
	cacheKernel := touch(filepath.Join(tmp, "cache", "kernels", "linux-image-cloud-amd64.deb"))
	srcKernel := touch(filepath.Join(tmp, "src", ".cache", "kernels", "linux-image-cloud-arm64.deb"))

	withKernel, err := config.Parse(filepath.Join(tmp, "ingot.yaml"), []byte("name: a\ntargets: [vm-amd64, vm-arm64, rpi]\nkernel: {vm-amd64: debian:cfg/k.deb}\nservices: [{name: a, go: ./a}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	plain := *withKernel
	plain.Kernels = nil
	// A mirror that has nothing: the pinned fetch fails, as offline.
	empty := httptest.NewServer(http.NotFoundHandler())
	defer empty.Close()
	// A mirror with one package, pinned in a lock in its own directory.
	deb := []byte("!<arch>\nnot really a kernel\n")
	sum := sha256.Sum256(deb)
	pool := "debian/pool/main/l/linux/linux-image-cloud-amd64_1_amd64.deb"
	mirror := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/"+pool {
			http.NotFound(w, r)
			return
		}
		w.Write(deb)
	}))
	defer mirror.Close()
	pinned := plain
	pinned.Dir = filepath.Join(tmp, "pinned")
	lockLine := "deb:linux-image-cloud-amd64 " + pool + " " + strconv.Itoa(len(deb)) + " " + hex.EncodeToString(sum[:]) + "\n"
	touch(filepath.Join(pinned.Dir, "ingot.lock"))
	if err := os.WriteFile(filepath.Join(pinned.Dir, "ingot.lock"), []byte(lockLine), 0o644); err != nil {
		t.Fatal(err)
	}
	badPin := plain
	badPin.Dir = filepath.Join(tmp, "badpin")
	touch(filepath.Join(badPin.Dir, "ingot.lock"))
	if err := os.WriteFile(filepath.Join(badPin.Dir, "ingot.lock"), []byte(strings.Replace(lockLine, hex.EncodeToString(sum[:])[:8], "00000000", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	for _, tt := range []struct {
		name   string
		cfg    *config.Config
		target config.Target
		o      options
		src    string
		want   string // path, or "error: substring"
	}{
		{"flag beats config", withKernel, config.TargetVMAmd64, options{kernelDeb: envKernel, getenv: env()}, "", envKernel},
		{"config", withKernel, config.TargetVMAmd64, options{getenv: env("INGOT_KERNEL_DEB", envKernel)}, "", cfgKernel},
		{"env per arch", &plain, config.TargetVMArm64, options{getenv: env("INGOT_KERNEL_DEB_ARM64", envKernel)}, "", envKernel},
		{"env amd64 legacy", &plain, config.TargetVMAmd64, options{getenv: env("INGOT_KERNEL_DEB", envKernel)}, "", envKernel},
		{"env names missing file", &plain, config.TargetVMAmd64, options{getenv: env("INGOT_KERNEL_DEB_AMD64", tmp+"/nope.deb")}, "", "error: $INGOT_KERNEL_DEB_AMD64"},
		{"kernel dir", &plain, config.TargetVMArm64, options{getenv: env("INGOT_KERNEL_DIR", filepath.Join(tmp, "kdir")), cacheDir: filepath.Join(tmp, "cache")}, filepath.Join(tmp, "src"), dirKernel},
		{"cache dir", &plain, config.TargetVMAmd64, options{getenv: env(), cacheDir: filepath.Join(tmp, "cache")}, filepath.Join(tmp, "src"), cacheKernel},
		{"pinned, fetched", &pinned, config.TargetVMAmd64, options{getenv: env(), cacheDir: filepath.Join(tmp, "pcache"), debMirror: mirror.URL}, filepath.Join(tmp, "src"),
			filepath.Join(tmp, "pcache", "debs", "linux-image-cloud-amd64_1_amd64.deb")},
		{"pinned, cached", &pinned, config.TargetVMAmd64, options{getenv: env(), cacheDir: filepath.Join(tmp, "pcache"), debMirror: empty.URL}, "",
			filepath.Join(tmp, "pcache", "debs", "linux-image-cloud-amd64_1_amd64.deb")},
		{"pin does not match", &badPin, config.TargetVMAmd64, options{getenv: env(), cacheDir: filepath.Join(tmp, "bcache"), debMirror: mirror.URL}, filepath.Join(tmp, "src"),
			"error: GET " + mirror.URL + "/" + pool + ": sha256 mismatch: expected 00000000"},
		{"source cache when offline", &plain, config.TargetVMArm64, options{getenv: env(), cacheDir: filepath.Join(tmp, "cache"), debMirror: empty.URL}, filepath.Join(tmp, "src"), srcKernel},
		{"none", &plain, config.TargetVMAmd64, options{getenv: env(), cacheDir: filepath.Join(tmp, "nocache"), debMirror: empty.URL}, "", "error: 404 Not Found; set kernel: {vm-amd64: debian:PATH.deb} in " + withKernel.File},
		{"rpi default", &plain, config.TargetRPi, options{getenv: env()}, "", "gomod:github.com/gokrazy/kernel.rpi"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k, err := resolveKernel(t.Context(), tt.cfg, tt.target, tt.src, tt.o)
			got := k.Path
			if k.Kind == config.KernelGoModule {
				got = k.String()
			}
			if err != nil {
				got = "error: " + err.Error()
			}
			if !strings.HasPrefix(tt.want, "error: ") && got != tt.want || strings.HasPrefix(tt.want, "error: ") && !strings.Contains(got, tt.want[len("error: "):]) {
				t.Errorf("resolveKernel(%s) = %s, want %s", tt.target, got, tt.want)
			}
		})
	}
	// The bad pin cached nothing, and a lock that pins the kernel is
	// left as it was.
	if ents, _ := os.ReadDir(filepath.Join(tmp, "bcache", "debs")); len(ents) != 0 {
		t.Errorf("a download that failed its digest left %v in the cache", ents)
	}
	if b, _ := os.ReadFile(filepath.Join(pinned.Dir, "ingot.lock")); string(b) != lockLine {
		t.Errorf("a build rewrote a lock that pinned the kernel: %q", b)
	}
}

func TestLocateIngot(t *testing.T) {
	g := &goTool{cmd: "go", getenv: os.Getenv, progress: newProgress(nil)}
	ctx := context.Background()
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	// Inside this repository the config directory's module is ingot.
	src, err := locateIngot(ctx, g, filepath.Join(repo, "examples", "hello"), options{getenv: os.Getenv})
	if err != nil || src.dir != repo {
		t.Errorf("locateIngot(examples/hello) = %+v, %v, want %s", src, err, repo)
	}
	// A module that does not require ingot falls back to $INGOT_SOURCE.
	fake, _ := filepath.Abs(filepath.Join("testdata", "fakeingot"))
	src, err = locateIngot(ctx, g, filepath.Join("testdata", "app"), options{getenv: func(k string) string {
		if k == "INGOT_SOURCE" {
			return fake
		}
		return ""
	}})
	if err != nil || src.dir != fake {
		t.Errorf("locateIngot(testdata/app, INGOT_SOURCE) = %+v, %v, want %s", src, err, fake)
	}
	// Without $INGOT_SOURCE, the source this binary was built from.
	src, err = locateIngot(ctx, g, filepath.Join("testdata", "app"), options{getenv: func(string) string { return "" }})
	if err != nil || src.dir != repo {
		t.Errorf("locateIngot(testdata/app) = %+v, %v, want the source of this test, %s", src, err, repo)
	}
	// $INGOT_SOURCE must really be ingot.
	app, _ := filepath.Abs(filepath.Join("testdata", "app"))
	_, err = locateIngot(ctx, g, app, options{getenv: func(k string) string {
		if k == "INGOT_SOURCE" {
			return app
		}
		return ""
	}})
	if err == nil || !strings.Contains(err.Error(), "go.mod is module example.com/app, not github.com/ingotdev/ingot") {
		t.Errorf("locateIngot(INGOT_SOURCE=app) = %v, want a module mismatch", err)
	}
}
