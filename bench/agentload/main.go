// Command agentload puts the management agent of an appliance under load
// and checks that it keeps up: it boots a copy of examples/hello whose
// service prints "tick N" lines at -log-rate lines per second (hello's
// -tick, on a fixed schedule), then for -duration holds -followers log
// followers (GET /v1/logs?follow=1, half over hybrid vsock through ingot
// run's vhost-user back-end, half over TLS on TCP through a QEMU user-net
// forward with the certificate pinned) while status workers send
// GET /v1/status at -rps requests per second in total on a fixed schedule,
// split the same way. Run it from the repository root:
//
//	INGOT_KERNEL_DEB=.cache/kernels/linux-image-cloud-amd64.deb go run ./bench/agentload
//
// Every follower checks that the tick numbers arrive exactly once and in
// order; lost_lines counts the ticks a follower never got (gaps, and
// ticks it had not reached -drain after the load ended). Status latency
// is measured per request, from sending it to the end of its body; a
// worker that falls a whole interval behind its schedule skips the slots
// it missed instead of bursting, so status_rps is what the agent really
// served, reported beside the target -rps. init_rss_mib is the largest
// resident memory of ingot-init (PID 1, which runs the agent) that the
// status answers reported (mgmt.HostStatus.InitRSSBytes).
//
// The anchor, measured in the same run on the same guest while the
// followers go on, is the same status loop (workers, rate, schedule)
// against the hello service itself: a minimal Go net/http server
// answering GET / in plain HTTP through a user-net forward. ratio is our
// p99 over the anchor's p99. The last line is:
//
//	RESULT agentload lost_lines=… p50_ms=… p99_ms=… init_rss_mib=… anchor_p50_ms=… anchor_p99_ms=… ratio=… status_rps=… target_rps=… log_lps=… followers=…
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ingotdev/ingot/internal/vmtest"

	"github.com/ingotdev/ingot/builder/assemble"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/hypervisor/vm"
	"github.com/ingotdev/ingot/mgmt"
)

const (
	serviceName  = "hello"
	helloPort    = 8080
	mgmtTCPPort  = 7443
	vmMemoryMiB  = 512
	bootLimit    = 5 * time.Minute
	bytesPerMiB  = 1 << 20
	requestLimit = 30 * time.Second
	// openParallel bounds the connections opened at once: until its
	// first authenticated request a connection counts against the
	// agent's per-peer bound on unauthenticated ones (16).
	openParallel = 4
)

// transports are the two ways the host reaches the agent.
var transports = []string{"vsock", "tls"}

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "bench/agentload: %v\n", err)
		os.Exit(1)
	}
}

type options struct {
	accel          qemu.Accel
	duration       time.Duration
	anchorDuration time.Duration
	drain          time.Duration
	followers      int
	rps            float64
	workers        int
	logRate        int
	cpus           int
	console        io.Writer
}

func run() error {
	var o options
	accel := flag.String("accel", string(qemu.AccelTCG), "accelerator: tcg, kvm or auto")
	flag.DurationVar(&o.duration, "duration", 60*time.Second, "how long the followers and the status load run")
	flag.DurationVar(&o.anchorDuration, "anchor-duration", 20*time.Second, "how long the anchor's status loop runs (after the agent's)")
	flag.DurationVar(&o.drain, "drain", 30*time.Second, "how long followers may take, after the load, to reach the last tick")
	flag.IntVar(&o.followers, "followers", 100, "log followers, split over vsock and TLS")
	flag.Float64Var(&o.rps, "rps", 1000, "status requests per second in total, split over vsock and TLS")
	flag.IntVar(&o.workers, "workers", 32, "status workers per transport, each on its own connection")
	flag.IntVar(&o.logRate, "log-rate", 2000, "lines per second the service logs")
	flag.IntVar(&o.cpus, "cpus", 0, "guest vCPUs (0: ingot run's default)")
	verbose := flag.Bool("v", false, "print the guest's console")
	flag.Parse()
	o.accel = qemu.Accel(*accel)
	if o.duration <= 0 || o.anchorDuration <= 0 || o.followers < 2 || o.rps <= 0 || o.workers < 1 || o.logRate < 1 || o.logRate > 1_000_000 {
		return errors.New("-duration and -anchor-duration must be positive, -followers at least 2, -rps, -workers and -log-rate at least 1, -log-rate at most 1000000")
	}
	if *verbose {
		o.console = os.Stderr
	}
	if _, err := vmtest.KernelDeb("amd64"); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	tmp, err := os.MkdirTemp("", "ingot-bench-agentload-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	return bench(ctx, tmp, o)
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

func bench(ctx context.Context, tmp string, o options) error {
	appDir := filepath.Join(tmp, "app")
	tick := time.Second / time.Duration(o.logRate)
	cfg, pin, err := writeApp(appDir, tick)
	if err != nil {
		return err
	}
	img := filepath.Join(tmp, "app.img")
	start := time.Now()
	rep, err := assemble.Image(ctx, cfg, config.TargetVMAmd64, img, assemble.WithCacheDir(filepath.Join(tmp, "cache")))
	if err != nil {
		return err
	}
	logf("built %s in %s", rep.BuildID, time.Since(start).Round(time.Millisecond))
	tlsPort, err := vmtest.FreeTCPPort()
	if err != nil {
		return err
	}
	helloHostPort, err := vmtest.FreeTCPPort()
	if err != nil {
		return err
	}
	runDir := filepath.Join(tmp, "run")
	stopVM := runVM(ctx, vm.Config{Image: img, RunDir: runDir, Accel: o.accel, MemoryMiB: vmMemoryMiB, CPUs: o.cpus,
		Forwards: []qemu.Forward{
			{Proto: "tcp", HostPort: tlsPort, GuestPort: mgmtTCPPort},
			{Proto: "tcp", HostPort: helloHostPort, GuestPort: helloPort},
		},
		Console: o.console, Logf: logf})
	defer stopVM()

	tok, err := os.ReadFile(filepath.Join(appDir, ".ingot/token"))
	if err != nil {
		return err
	}
	// newClient makes a client of the agent over transport t.
	newClient := func(t string) (*mgmt.Client, error) {
		if t == "vsock" {
			return mgmt.NewClient(fmt.Sprintf("unix://%s?port=%d", vm.VsockPath(runDir), config.DefaultVsockPort), string(tok))
		}
		return mgmt.NewClient(fmt.Sprintf("https://127.0.0.1:%d", tlsPort), string(tok), mgmt.WithCertSHA256(pin))
	}
	clients := map[string]*mgmt.Client{}
	for _, t := range transports {
		c, err := newClient(t)
		if err != nil {
			return err
		}
		defer c.Close()
		clients[t] = c
	}
	boot := time.Now()
	var st0 mgmt.Status
	for _, t := range transports {
		if st0, err = waitStatus(ctx, clients[t], bootLimit); err != nil {
			return fmt.Errorf("agent over %s: %w", t, err)
		}
	}
	helloURL := fmt.Sprintf("http://127.0.0.1:%d/", helloHostPort)
	if err := waitHTTP(ctx, helloURL, bootLimit); err != nil {
		return err
	}
	var rss maxValue
	rss.observe(st0)
	logf("agent answers over vsock and TLS, hello over HTTP, %s after QEMU started; init resident %.1f MiB before the load",
		time.Since(boot).Round(time.Millisecond), float64(st0.Host.InitRSSBytes)/bytesPerMiB)

	// Followers first, so that they see every line of the load.
	followCtx, stopFollowers := context.WithCancel(ctx)
	defer stopFollowers()
	fs := make([]*follower, o.followers)
	var wg sync.WaitGroup
	sem := make(chan struct{}, openParallel)
	openErrs := make(chan error, o.followers)
	for i := range fs {
		fs[i] = &follower{transport: transports[i%len(transports)], progress: make(chan struct{}, 1)}
		sem <- struct{}{}
		stream, err := clients[fs[i].transport].Logs(followCtx, serviceName, 0, true)
		<-sem
		if err != nil {
			return fmt.Errorf("follower %d over %s: %w", i, fs[i].transport, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer stream.Close()
			if err := fs[i].run(stream); err != nil && followCtx.Err() == nil {
				openErrs <- fmt.Errorf("follower %d over %s: %w", i, fs[i].transport, err)
			}
		}()
	}
	logf("%d followers open (%d over vsock, %d over TLS)", o.followers, (o.followers+1)/2, o.followers/2)

	// The agent's status loop.
	var agentWorkers []worker
	for _, t := range transports {
		for range o.workers {
			c, err := newClient(t)
			if err != nil {
				return err
			}
			defer c.Close()
			agentWorkers = append(agentWorkers, worker{transport: t, do: func(ctx context.Context) error {
				st, err := c.Status(ctx)
				if err == nil {
					rss.observe(st)
				}
				return err
			}})
		}
	}
	if err := warm(ctx, agentWorkers); err != nil {
		return err
	}
	logf("status load: %.0f requests/s over %d workers per transport for %s", o.rps, o.workers, o.duration)
	firstTick, err := newestTick(ctx, clients["vsock"])
	if err != nil {
		return err
	}
	loadStart := time.Now()
	agent := statusLoop(ctx, agentWorkers, o.rps, o.duration)
	lastTick, err := newestTick(ctx, clients["vsock"])
	if err != nil {
		return err
	}
	loadTime := time.Since(loadStart)
	logf("the service logged %.0f lines/s during the agent's load (ticks %d to %d)", float64(lastTick-firstTick)/loadTime.Seconds(), firstTick, lastTick)
	agent.print("agent")
	for _, t := range transports {
		agent.byTransport[t].print("agent over " + t)
	}

	// The anchor: the same loop against hello's GET /, followers still
	// running.
	var anchorWorkers []worker
	for range transports {
		for range o.workers {
			hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}}
			defer hc.CloseIdleConnections()
			anchorWorkers = append(anchorWorkers, worker{transport: "http", do: func(ctx context.Context) error {
				return getBody(ctx, hc, helloURL)
			}})
		}
	}
	if err := warm(ctx, anchorWorkers); err != nil {
		return err
	}
	logf("anchor: the same loop against hello's GET / (plain HTTP, user-net forward) for %s", o.anchorDuration)
	anchor := statusLoop(ctx, anchorWorkers, o.rps, o.anchorDuration)
	anchor.print("anchor")

	// Every follower must reach the newest tick.
	end, err := newestTick(ctx, clients["vsock"])
	if err != nil {
		return err
	}
	drainUntil := time.Now().Add(o.drain)
	for _, f := range fs {
		for f.last() < end && time.Now().Before(drainUntil) {
			select {
			case <-f.progress:
			case <-time.After(time.Until(drainUntil)):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	stopFollowers()
	wg.Wait()
	close(openErrs)
	if err := <-openErrs; err != nil { // nil when closed empty
		return err
	}
	if st, err := clients["vsock"].Status(ctx); err == nil {
		rss.observe(st)
		logf("init resident %.1f MiB after the load (largest seen %.1f MiB)", float64(st.Host.InitRSSBytes)/bytesPerMiB, float64(rss.get())/bytesPerMiB)
	}

	var lost, behind, disorder, dropNotes int64
	for i, f := range fs {
		f.mu.Lock()
		short := max(0, end-f.lastTick)
		if f.gaps > 0 || short > 0 || f.disorder > 0 {
			logf("follower %d (%s): first tick %d, last %d of %d, %d missing in gaps, %d out of order or repeated, %d drop notes",
				i, f.transport, f.firstTick, f.lastTick, end, f.gaps, f.disorder, f.dropNotes)
		}
		lost += f.gaps + short
		behind += short
		disorder += f.disorder
		dropNotes += f.dropNotes
		f.mu.Unlock()
	}
	logRate := float64(lastTick-firstTick) / loadTime.Seconds()
	logf("followers: %d lines lost (%d of them not reached %s after the load), %d out of order or repeated, %d drop notes; the service logged %.0f lines/s during the load, up to tick %d",
		lost, behind, o.drain, disorder, dropNotes, logRate, end)
	if disorder > 0 {
		return fmt.Errorf("%d log lines arrived out of order or twice", disorder)
	}
	if agent.ok == 0 || anchor.ok == 0 {
		return errors.New("no status request succeeded")
	}
	p50, p99 := agent.percentile(0.50), agent.percentile(0.99)
	ap50, ap99 := anchor.percentile(0.50), anchor.percentile(0.99)
	fmt.Printf("RESULT agentload lost_lines=%d p50_ms=%.2f p99_ms=%.2f init_rss_mib=%.1f anchor_p50_ms=%.2f anchor_p99_ms=%.2f ratio=%.2f status_rps=%.0f target_rps=%.0f status_errors=%d log_lps=%.0f followers=%d\n",
		lost, ms(p50), ms(p99), float64(rss.get())/bytesPerMiB, ms(ap50), ms(ap99), float64(p99)/float64(ap99),
		agent.rate(), o.rps, agent.errors, logRate, o.followers)
	return nil
}

// writeApp writes the benchmark's appliance to dir: hello's service
// logging a tick every tick, management on vsock and on TLS over TCP with
// a fresh certificate, and hello's token. It returns the config and the
// certificate's pin.
func writeApp(dir string, tick time.Duration) (*config.Config, string, error) {
	src, err := os.ReadFile("examples/hello/cmd/hello/main.go")
	if err != nil {
		return nil, "", fmt.Errorf("%w (run from the repository root)", err)
	}
	tok, err := os.ReadFile("examples/hello/.ingot/token")
	if err != nil {
		return nil, "", fmt.Errorf("%w (run from the repository root)", err)
	}
	certPEM, keyPEM, pin, err := mgmt.GenerateCertificate("agentload", time.Now())
	if err != nil {
		return nil, "", err
	}
	yaml := fmt.Sprintf(`name: agentload
targets: [vm-amd64]
services:
  - name: %s
    go: ./cmd/hello
    args: [-listen, ":%d", -tick, "%dus"]
    restart: always
management: {tcp: ":%d"}
`, serviceName, helloPort, tick.Microseconds(), mgmtTCPPort)
	files := map[string][]byte{
		"cmd/hello/main.go":       src,
		"go.mod":                  []byte("module hello\n\ngo 1.26\n"),
		config.FileName:           []byte(yaml),
		".ingot/token":            tok,
		config.DefaultTLSCertFile: certPEM,
		config.DefaultTLSKeyFile:  keyPEM,
	}
	for name, b := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, "", err
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, "", err
		}
	}
	cfg, err := config.Load(filepath.Join(dir, config.FileName))
	return cfg, pin, err
}

// runVM starts vm.Run in the background; the returned function stops the
// VM and waits for it.
func runVM(ctx context.Context, c vm.Config) func() {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- vm.Run(ctx, c) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			logf("vm: %v", err)
		}
	}
}

// waitStatus asks c for its status until it answers with the host usage
// that the benchmark samples.
func waitStatus(ctx context.Context, c *mgmt.Client, limit time.Duration) (mgmt.Status, error) {
	deadline := time.Now().Add(limit)
	for {
		rctx, cancel := context.WithTimeout(ctx, requestLimit)
		st, err := c.Status(rctx)
		cancel()
		if err == nil {
			if st.Host == nil || st.Host.InitRSSBytes == 0 {
				return st, fmt.Errorf("status reports no resident memory of init (host %+v): an agent without mgmt.HostStatus.InitRSSBytes?", st.Host)
			}
			return st, nil
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("no status within %s: %w", limit, err)
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// waitHTTP gets url until it answers 200.
func waitHTTP(ctx context.Context, url string, limit time.Duration) error {
	hc := &http.Client{}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(limit)
	for {
		err := getBody(ctx, hc, url)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("GET %s: nothing within %s: %w", url, limit, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// getBody gets url with hc and reads the whole answer, which must be 200.
func getBody(ctx context.Context, hc *http.Client, url string) error {
	ctx, cancel := context.WithTimeout(ctx, requestLimit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// maxValue is the largest init resident memory seen.
type maxValue struct{ v atomic.Int64 }

func (m *maxValue) observe(st mgmt.Status) {
	if st.Host == nil {
		return
	}
	for {
		old := m.v.Load()
		if st.Host.InitRSSBytes <= old || m.v.CompareAndSwap(old, st.Host.InitRSSBytes) {
			return
		}
	}
}

func (m *maxValue) get() int64 { return m.v.Load() }

// follower reads one followed log stream and checks the tick numbers.
type follower struct {
	transport string
	// progress gets a token (without blocking) after each tick.
	progress chan struct{}

	mu        sync.Mutex
	firstTick int64
	lastTick  int64
	gaps      int64 // ticks skipped
	disorder  int64 // ticks not above the previous one
	dropNotes int64 // the agent's "lines dropped" notes
}

// dropNote is how the agent's ring tells a follower it fell behind
// (logs.Ring.Follow): a line with Seq 0.
func isDropNote(l mgmt.LogLine) bool { return l.Seq == 0 }

func (f *follower) run(s *mgmt.LogStream) error {
	for {
		l, err := s.Next()
		if err != nil {
			return err
		}
		if isDropNote(l) {
			f.mu.Lock()
			f.dropNotes++
			f.mu.Unlock()
			continue
		}
		num, ok := strings.CutPrefix(l.Text, "tick ")
		if !ok {
			continue // hello's own log lines
		}
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			return fmt.Errorf("line %d: %q: not a tick", l.Seq, l.Text)
		}
		f.mu.Lock()
		switch {
		case f.lastTick == 0:
			f.firstTick = n
		case n <= f.lastTick:
			f.disorder++
		default:
			f.gaps += n - f.lastTick - 1
		}
		f.lastTick = max(f.lastTick, n)
		f.mu.Unlock()
		select {
		case f.progress <- struct{}{}:
		default:
		}
	}
}

func (f *follower) last() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastTick
}

// newestTick asks the agent for the newest tick the service logged.
func newestTick(ctx context.Context, c *mgmt.Client) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, requestLimit)
	defer cancel()
	s, err := c.Logs(ctx, serviceName, 100, false)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	var newest int64
	for {
		l, err := s.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, err
		}
		if num, ok := strings.CutPrefix(l.Text, "tick "); ok {
			if n, err := strconv.ParseInt(num, 10, 64); err == nil {
				newest = max(newest, n)
			}
		}
	}
	if newest == 0 {
		return 0, errors.New("the service's last 100 lines hold no tick")
	}
	return newest, nil
}

// worker sends one kind of request on its own connection.
type worker struct {
	transport string
	do        func(context.Context) error
}

// warm sends each worker's first request, a few at a time, so that every
// worker holds an open, authenticated connection before the clock starts.
func warm(ctx context.Context, ws []worker) error {
	sem := make(chan struct{}, openParallel)
	errs := make(chan error, len(ws))
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := w.do(ctx); err != nil {
				errs <- fmt.Errorf("first request over %s: %w", w.transport, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs // nil when closed empty
}

// loopResult is what a status loop measured.
type loopResult struct {
	ok, errors, skipped int64
	firstErr            error
	elapsed             time.Duration
	latencies           []time.Duration // sorted
	byTransport         map[string]*loopResult
}

func (r *loopResult) add(o *loopResult) {
	r.ok += o.ok
	r.errors += o.errors
	r.skipped += o.skipped
	if r.firstErr == nil {
		r.firstErr = o.firstErr
	}
	r.latencies = append(r.latencies, o.latencies...)
}

func (r *loopResult) rate() float64 { return float64(r.ok) / r.elapsed.Seconds() }

func (r *loopResult) percentile(p float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	return r.latencies[min(len(r.latencies)-1, int(p*float64(len(r.latencies))))]
}

func (r *loopResult) print(name string) {
	logf("%s: %d answered (%.0f/s), %d errors, %d slots skipped behind schedule; latency p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms",
		name, r.ok, r.rate(), r.errors, r.skipped, ms(r.percentile(0.5)), ms(r.percentile(0.9)), ms(r.percentile(0.99)), ms(r.percentile(1)))
	if r.firstErr != nil {
		logf("%s: first error: %v", name, r.firstErr)
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// statusLoop runs every worker for d: rate requests per second in total,
// an equal share per transport, which that transport's workers share,
// each on a fixed schedule offset from the others'. A worker more than
// one interval late skips the slots it missed (counted), so a slow server
// sees no bursts.
func statusLoop(ctx context.Context, ws []worker, rate float64, d time.Duration) *loopResult {
	perTransport := map[string]int{}
	for _, w := range ws {
		perTransport[w.transport]++
	}
	perTransportRate := rate / float64(len(perTransport))
	start := time.Now()
	end := start.Add(d)
	results := make([]*loopResult, len(ws))
	var wg sync.WaitGroup
	index := map[string]int{}
	for i, w := range ws {
		n := perTransport[w.transport]
		interval := time.Duration(float64(n) / perTransportRate * float64(time.Second))
		offset := time.Duration(index[w.transport]) * interval / time.Duration(n)
		index[w.transport]++
		r := &loopResult{}
		results[i] = r
		wg.Add(1)
		go func() {
			defer wg.Done()
			for due := start.Add(offset); due.Before(end); due = due.Add(interval) {
				now := time.Now()
				if late := now.Sub(due); late > interval {
					skip := int64(late / interval)
					r.skipped += skip
					due = due.Add(time.Duration(skip) * interval)
					if !due.Before(end) {
						return
					}
				} else if late < 0 {
					select {
					case <-time.After(-late):
					case <-ctx.Done():
						return
					}
				}
				sent := time.Now()
				err := w.do(ctx)
				took := time.Since(sent)
				if err != nil {
					r.errors++
					if r.firstErr == nil {
						r.firstErr = err
					}
					continue
				}
				r.ok++
				r.latencies = append(r.latencies, took)
			}
		}()
	}
	wg.Wait()
	total := &loopResult{elapsed: time.Since(start), byTransport: map[string]*loopResult{}}
	for i, r := range results {
		t := ws[i].transport
		if total.byTransport[t] == nil {
			total.byTransport[t] = &loopResult{elapsed: total.elapsed}
		}
		total.byTransport[t].add(r)
		total.add(r)
	}
	slices.Sort(total.latencies)
	for _, r := range total.byTransport {
		slices.Sort(r.latencies)
	}
	return total
}
