package stage1

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ingotdev/ingot/builder/assemble"
	ingotconfig "github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/hypervisor/vm"
	"github.com/ingotdev/ingot/internal/vmtest"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/certpin"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// The observability tests of issue 15: examples/hello built with metrics:
// and logs:, booted as `ingot run` boots it, watched by a real Prometheus
// and a real rsyslog on the host (Debian's packages, from
// scripts/setup.sh). The guest reaches the host's loopback at 10.0.2.2.

const (
	metricsGuestPort = 9100
	// hostFromGuest is the host's loopback as QEMU's user network shows
	// it to the guest.
	hostFromGuest = "10.0.2.2"
	// scrapeWatch is how long Prometheus scrapes the appliance.
	scrapeWatch = 30 * time.Second
	// receiverAway is how long the syslog receiver is stopped.
	receiverAway = 30 * time.Second
)

// helloConfig is examples/hello with extra arguments for its service.
func helloConfig(t *testing.T, args ...string) *ingotconfig.Config {
	t.Helper()
	vmtest.Kernel(t, "amd64")
	cfg, err := ingotconfig.Load("../../examples/hello/ingot.yaml")
	if err != nil {
		t.Fatal(err)
	}
	hello, ok := cfg.Service("hello")
	if !ok {
		t.Fatal("examples/hello has no hello service")
	}
	hello.Args = append(hello.Args, args...)
	cfg.Metrics = spec.Metrics{Listen: fmt.Sprintf(":%d", metricsGuestPort), Auth: spec.MetricsAuthToken}
	return cfg
}

// buildImage builds cfg's vm-amd64 image in dir and returns its path and
// build id.
func buildImage(t *testing.T, cfg *ingotconfig.Config, dir string) (string, string) {
	t.Helper()
	img := filepath.Join(dir, cfg.Name+".img")
	rep, err := assemble.Image(t.Context(), cfg, ingotconfig.TargetVMAmd64, img, assemble.WithCacheDir(filepath.Join(dir, "cache")))
	if err != nil {
		t.Fatal(err)
	}
	return img, rep.BuildID
}

// withMetricsForward forwards a free host port to the guest's metrics.
func withMetricsForward(port int) func(*vm.Config) {
	return func(c *vm.Config) {
		c.Forwards = append(c.Forwards, qemu.Forward{Proto: "tcp", HostPort: port, GuestPort: metricsGuestPort})
	}
}

// scrape fetches the appliance's metrics with the token (none: without).
func scrape(t *testing.T, port int, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", port, spec.MetricsPath), nil)
	if token != "" {
		req.Header.Set(mgmt.HeaderAuthorization, mgmt.BearerPrefix+token)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// sample finds "name value" in an exposition.
func sample(exposition, series string) (float64, bool) {
	for line := range strings.Lines(exposition) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// readMetricsToken returns the management token and the metrics token
// derived from it, and writes the metrics token to a file for Prometheus.
func readMetricsToken(t *testing.T, cfg *ingotconfig.Config, dir string) (mgmtToken, metricsToken, metricsTokenFile string) {
	t.Helper()
	tok, err := cfg.Token()
	if err != nil {
		t.Fatal(err)
	}
	if metricsToken, err = certpin.MetricsToken(tok); err != nil {
		t.Fatal(err)
	}
	metricsTokenFile = filepath.Join(dir, "metrics-token")
	if err := os.WriteFile(metricsTokenFile, []byte(metricsToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return tok, metricsToken, metricsTokenFile
}

// prometheus runs Debian's Prometheus against the appliance.
type prometheus struct {
	t   *testing.T
	api string
}

func startPrometheus(t *testing.T, dir string, target int, tokenFile string) *prometheus {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus (Debian's prometheus package, installed by scripts/setup.sh): %v", err)
	}
	conf := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, `global:
  scrape_interval: 2s
  scrape_timeout: 2s
scrape_configs:
  - job_name: ingot
    authorization:
      type: Bearer
      credentials_file: %s
    static_configs:
      - targets: ["127.0.0.1:%d"]
`, tokenFile, target), 0o644); err != nil {
		t.Fatal(err)
	}
	port := vmtest.FreePort(t)
	logFile, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file="+conf, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port), "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logFile.Name())
			t.Logf("prometheus log:\n%s", tail(string(b)))
		}
	})
	return &prometheus{t: t, api: fmt.Sprintf("http://127.0.0.1:%d/api/v1/", port)}
}

// query runs an instant query and returns its vector's values.
func (p *prometheus) query(q string) ([]float64, error) {
	resp, err := http.Get(p.api + "query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("query %s: %s", q, body.Error)
	}
	var out []float64
	for _, r := range body.Data.Result {
		s, _ := r.Value[1].(string)
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("query %s: value %q", q, s)
		}
		out = append(out, f)
	}
	return out, nil
}

// waitValue polls q until it yields one value that ok accepts.
func (p *prometheus) waitValue(q string, timeout time.Duration, ok func(float64) bool) float64 {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v, err := p.query(q)
		if err == nil && len(v) == 1 && ok(v[0]) {
			return v[0]
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("Prometheus: %s = %v (%v) after %v", q, v, err, timeout)
		}
		time.Sleep(time.Second)
	}
}

// TestVMPrometheus is issue 15's "Done when" for metrics: Prometheus
// scrapes a booted appliance for 30 s; its API shows hello up at 1 and
// hello's restart counter rising after a crash; promtool finds nothing
// to complain about in the exposition; a scrape without the token gets
// nothing.
func TestVMPrometheus(t *testing.T) {
	cfg := helloConfig(t, "-crashable")
	dir := t.TempDir()
	img, _ := buildImage(t, cfg, dir)
	mgmtToken, token, tokenFile := readMetricsToken(t, cfg, dir)
	metricsPort := vmtest.FreePort(t)
	v := startPipelineVM(t, img, filepath.Join(dir, "run"), withMetricsForward(metricsPort))
	v.waitFor(bootDoneRE, pipelineBootTimeout)
	v.web()

	if code, body := scrape(t, metricsPort, ""); code != http.StatusUnauthorized || strings.Contains(body, "ingot_") {
		t.Errorf("scrape without the token = %d %.200q, want 401 and no metrics", code, body)
	}
	if code, body := scrape(t, metricsPort, "not-the-token-"+strings.Repeat("x", 32)); code != http.StatusUnauthorized || strings.Contains(body, "ingot_") {
		t.Errorf("scrape with a wrong token = %d %.200q, want 401 and no metrics", code, body)
	}
	// The management token stays off the plain-HTTP port.
	if code, body := scrape(t, metricsPort, mgmtToken); code != http.StatusUnauthorized || strings.Contains(body, "ingot_") {
		t.Errorf("scrape with the management token = %d %.200q, want 401 and no metrics", code, body)
	}

	prom := startPrometheus(t, dir, metricsPort, tokenFile)
	start := time.Now()
	prom.waitValue(`up{job="ingot"}`, 2*time.Minute, func(f float64) bool { return f == 1 })
	prom.waitValue(`ingot_service_up{service="hello"}`, time.Minute, func(f float64) bool { return f == 1 })
	before := prom.waitValue(`ingot_service_restarts_total{service="hello"}`, time.Minute, func(float64) bool { return true })

	// Crash hello halfway through the watch.
	time.Sleep(scrapeWatch/2 - time.Since(start))
	client := &http.Client{Timeout: 5 * time.Second}
	if resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/crash", v.port)); err == nil {
		resp.Body.Close()
	}
	v.waitFor(regexp.MustCompile(`hello: .*crashing on request`), time.Minute)
	time.Sleep(scrapeWatch - time.Since(start))

	after := prom.waitValue(`ingot_service_restarts_total{service="hello"}`, time.Minute, func(f float64) bool { return f > before })
	prom.waitValue(`ingot_service_up{service="hello"}`, time.Minute, func(f float64) bool { return f == 1 })
	rose := prom.waitValue(`increase(ingot_service_restarts_total{service="hello"}[5m]) > 0`, time.Minute, func(float64) bool { return true })
	t.Logf("Prometheus: restarts of hello %v -> %v (increase %v) over %v of scraping", before, after, rose, time.Since(start).Round(time.Second))
	prom.waitValue(`ingot_build_info{target="vm-amd64",slot="a"}`, time.Minute, func(f float64) bool { return f == 1 })
	prom.waitValue(`sum(ingot_agent_requests_total{route="GET /metrics",code="200"})`, time.Minute, func(f float64) bool { return f >= 5 })

	code, exposition := scrape(t, metricsPort, token)
	if code != http.StatusOK {
		t.Fatalf("scrape with the token = %d %q", code, exposition)
	}
	for _, series := range []string{`ingot_node_memory_total_bytes`, `ingot_node_uptime_seconds`, `ingot_perm_size_bytes`,
		`ingot_service_memory_bytes{service="hello"}`, `ingot_service_cpu_seconds_total{service="hello"}`,
		`ingot_service_health{service="hello",state="healthy"}`, `ingot_update_trial`} {
		if _, ok := sample(exposition, series); !ok {
			t.Errorf("exposition lacks %s", series)
		}
	}
	lint := exec.Command("promtool", "check", "metrics")
	lint.Stdin = strings.NewReader(exposition)
	if out, err := lint.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("promtool check metrics: %v\n%s\nexposition:\n%s", err, out, exposition)
	}
	v.stop()
}

// testCA makes a CA and a certificate for ip signed by it, as PEM files
// in dir: ca.pem, cert.pem, key.pem.
func testCA(t *testing.T, dir string, ip net.IP) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ingot test syslog CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: ip.String()},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{ip}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for name, block := range map[string]*pem.Block{
		"ca.pem":   {Type: "CERTIFICATE", Bytes: caDER},
		"cert.pem": {Type: "CERTIFICATE", Bytes: der},
		"key.pem":  {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// rsyslog is Debian's rsyslogd with a private configuration: TLS on a
// loopback port, every message written to received.log as
// "HOSTNAME APP-NAME STRUCTURED-DATA MSG".
type rsyslog struct {
	t        *testing.T
	dir      string
	cmd      *exec.Cmd
	received string
}

func newRsyslog(t *testing.T, dir string, port int) *rsyslog {
	t.Helper()
	r := &rsyslog{t: t, dir: dir, received: filepath.Join(dir, "received.log")}
	if err := os.MkdirAll(filepath.Join(dir, "work"), 0o700); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`global(workDirectory="%[1]s/work"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile="%[1]s/ca.pem"
  defaultNetstreamDriverCertFile="%[1]s/cert.pem"
  defaultNetstreamDriverKeyFile="%[1]s/key.pem")
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" address="127.0.0.1" port="%[2]d")
template(name="ingot" type="string" string="%%HOSTNAME%% %%APP-NAME%% %%STRUCTURED-DATA%% %%msg%%\n")
action(type="omfile" file="%[1]s/received.log" template="ingot")
`, dir, port)
	if err := os.WriteFile(filepath.Join(dir, "rsyslog.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.stop)
	return r
}

func (r *rsyslog) start() {
	r.t.Helper()
	bin, err := exec.LookPath("rsyslogd")
	if err != nil {
		r.t.Fatalf("rsyslogd (Debian's rsyslog and rsyslog-gnutls packages, installed by scripts/setup.sh): %v", err)
	}
	log, err := os.OpenFile(filepath.Join(r.dir, "rsyslogd.out"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		r.t.Fatal(err)
	}
	r.cmd = exec.Command(bin, "-n", "-f", filepath.Join(r.dir, "rsyslog.conf"), "-i", filepath.Join(r.dir, "rsyslogd.pid"))
	r.cmd.Stdout, r.cmd.Stderr = log, log
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	log.Close()
}

// stop ends rsyslogd as a service manager would, with SIGTERM.
func (r *rsyslog) stop() {
	if r.cmd == nil {
		return
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	r.cmd.Wait()
	r.cmd = nil
}

// received is what rsyslog wrote of hello's ticks.
type received struct {
	// boots lists the boot ids in order of their first line; ticks holds
	// each boot's tick numbers in order of arrival.
	boots []string
	ticks map[string][]int
	// wrong are hello's lines with another hostname or app-name, or
	// without ingot's structured data of the expected build.
	wrong []string
}

var (
	receivedRE = regexp.MustCompile(`^(\S+) (\S+) (\[.*?\]|-) ?(.*)$`)
	sdRE       = regexp.MustCompile(`^\[ingot@32473 build="([^"]*)" boot="([^"]*)"\]$`)
)

func (r *rsyslog) read(hostname, buildID string) received {
	rc := received{ticks: map[string][]int{}}
	b, _ := os.ReadFile(r.received)
	for line := range strings.Lines(string(b)) {
		m := receivedRE.FindStringSubmatch(strings.TrimRight(line, "\n"))
		if m == nil {
			continue
		}
		text, ok := strings.CutPrefix(strings.TrimSpace(m[4]), "tick ")
		if !ok {
			continue
		}
		sd := sdRE.FindStringSubmatch(m[3])
		if m[1] != hostname || m[2] != "hello" || sd == nil || sd[1] != buildID || sd[2] == "" {
			rc.wrong = append(rc.wrong, line)
			continue
		}
		n, err := strconv.Atoi(text)
		if err != nil {
			continue
		}
		boot := sd[2]
		if _, ok := rc.ticks[boot]; !ok {
			rc.boots = append(rc.boots, boot)
		}
		rc.ticks[boot] = append(rc.ticks[boot], n)
	}
	return rc
}

// waitTicks waits until boot number i (0: the first) has a tick of at
// least atLeast.
func (r *rsyslog) waitTicks(hostname, buildID string, i, atLeast int, timeout time.Duration) received {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		rc := r.read(hostname, buildID)
		if len(rc.boots) > i && slices.Max(rc.ticks[rc.boots[i]]) >= atLeast {
			return rc
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(r.dir, "rsyslogd.out"))
			r.t.Fatalf("rsyslog received no tick %d of hello's boot %d within %v (boots %d); rsyslogd said:\n%s", atLeast, i+1, timeout, len(rc.boots), b)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// checkTicks wants ticks 1..last in order of first arrival; it returns
// how many came twice (sent again after a reconnect).
func checkTicks(t *testing.T, what string, ticks []int, last int) (again int) {
	t.Helper()
	next := 1
	seen := map[int]bool{}
	for _, n := range ticks {
		if seen[n] {
			again++
			continue
		}
		if n != next {
			t.Errorf("%s: after tick %d came tick %d: a line lost or reordered", what, next-1, n)
			return again
		}
		seen[n] = true
		next++
	}
	if next-1 < last {
		t.Errorf("%s: received ticks 1..%d, want 1..%d", what, next-1, last)
	}
	return again
}

var consoleTickRE = regexp.MustCompile(`(?m)^hello: tick (\d+)\r?$`)

// lastConsoleTick is the last tick hello printed on the console.
func lastConsoleTick(console string) int {
	m := consoleTickRE.FindAllStringSubmatch(console, -1)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[len(m)-1][1])
	return n
}

// TestVMSyslog is issue 15's "Done when" for remote logs: rsyslog on the
// host's loopback receives hello's lines over TCP+TLS, verified against
// the CA from ingot.yaml, with hello as app-name, the appliance's
// hostname and the build and boot ids; stopped for 30 s and started
// again, it misses no line and gets none out of order (lines of the last
// seconds before it stopped may come twice), while the spool stays within
// its bound; lines spooled when the appliance powers off are sent after
// the next boot.
func TestVMSyslog(t *testing.T) {
	dir := t.TempDir()
	recvDir := filepath.Join(dir, "rsyslog")
	if err := os.MkdirAll(recvDir, 0o700); err != nil {
		t.Fatal(err)
	}
	testCA(t, recvDir, net.ParseIP(hostFromGuest))
	port := vmtest.FreePort(t)
	rs := newRsyslog(t, recvDir, port)
	rs.start()

	cfg := helloConfig(t, "-tick", "200ms")
	cfg.Logs = ingotconfig.Logs{CAFile: filepath.Join(recvDir, "ca.pem"),
		Logs: spec.Logs{Remote: fmt.Sprintf("syslog+tls://%s:%d", hostFromGuest, port), SpoolBytes: spec.MinSpoolBytes}}
	img, buildID := buildImage(t, cfg, dir)
	_, token, _ := readMetricsToken(t, cfg, dir)
	metricsPort := vmtest.FreePort(t)
	v := startPipelineVM(t, img, filepath.Join(dir, "run1"), withMetricsForward(metricsPort))
	v.waitFor(bootDoneRE, pipelineBootTimeout)

	hostname := cfg.Hostname
	rc := rs.waitTicks(hostname, buildID, 0, 20, 2*time.Minute)
	boot1 := rc.boots[0]
	rs.stop()
	lastBefore := slices.Max(rc.ticks[boot1])
	t.Logf("rsyslog stopped after tick %d", lastBefore)

	// Away for 30 s: the spool grows and never passes its bound.
	var maxSpool, bound float64
	for awayStart := time.Now(); time.Since(awayStart) < receiverAway; time.Sleep(time.Second) {
		code, exp := scrape(t, metricsPort, token)
		if code != http.StatusOK {
			t.Fatalf("scrape = %d %q", code, exp)
		}
		spool, ok1 := sample(exp, "ingot_logs_spool_bytes")
		limit, ok2 := sample(exp, "ingot_logs_spool_max_bytes")
		if !ok1 || !ok2 {
			t.Fatalf("exposition lacks the spool's metrics:\n%s", exp)
		}
		bound, maxSpool = limit, max(maxSpool, spool)
		if spool > limit {
			t.Errorf("spool holds %v bytes, over its bound %v", spool, limit)
		}
		if dropped, _ := sample(exp, "ingot_logs_dropped_lines_total"); dropped > 0 {
			t.Errorf("%v lines dropped while the receiver was away 30 s", dropped)
		}
	}
	if bound != float64(spec.MinSpoolBytes) || maxSpool == 0 {
		t.Errorf("spool peaked at %v bytes of %v; want it used, within %d", maxSpool, bound, spec.MinSpoolBytes)
	}
	t.Logf("spool peaked at %v of %v bytes", maxSpool, bound)

	rs.start()
	// 30 s at 5 ticks a second is about 150 ticks; wait for 20 more.
	rc = rs.waitTicks(hostname, buildID, 0, lastBefore+int(receiverAway/(200*time.Millisecond))+20, 3*time.Minute)
	again := checkTicks(t, "boot 1", rc.ticks[boot1], slices.Max(rc.ticks[boot1]))
	t.Logf("boot 1: ticks 1..%d in order, %d sent again after the reconnect", slices.Max(rc.ticks[boot1]), again)

	// Away again, and the appliance powers off: what it spooled is sent
	// after the next boot.
	rs.stop()
	time.Sleep(5 * time.Second)
	last1 := lastConsoleTick(v.stop())
	if last1 <= slices.Max(rc.ticks[boot1]) {
		t.Fatalf("hello's last tick on boot 1's console is %d, want more than the %d received before the receiver stopped", last1, slices.Max(rc.ticks[boot1]))
	}
	rs.start()
	v2 := startPipelineVM(t, img, filepath.Join(dir, "run2"))
	v2.waitFor(bootDoneRE, pipelineBootTimeout)
	rc = rs.waitTicks(hostname, buildID, 1, 5, 2*time.Minute)
	v2.stop()
	if len(rc.boots) != 2 || rc.boots[0] != boot1 {
		t.Fatalf("boots received: %v, want %s then the second", rc.boots, boot1)
	}
	checkTicks(t, "boot 1 (after the power-off)", rc.ticks[boot1], last1)
	checkTicks(t, "boot 2", rc.ticks[rc.boots[1]], 5)
	t.Logf("boot 1's ticks up to %d (the last on its console) arrived after boot 2 began", last1)
	if len(rc.wrong) > 0 {
		t.Errorf("hello's lines with the wrong hostname, app-name or structured data (want %s hello [ingot@32473 build=%q boot=…]): %q",
			hostname, buildID, rc.wrong[:min(3, len(rc.wrong))])
	}
}
