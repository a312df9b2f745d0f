// Command fleet measures a fleet pulling one release from one registry:
// N appliance update engines in one process, each the agent's real update
// code (an update.Manager over file-backed slots and a boot directory,
// and a pull.Puller with its own state directory and its own HTTP
// client), all pull release 2 of hello from one docker-registry
// (distribution 2.8, started by the bench with its storage in a temporary
// directory) at once and commit it as their trial.
//
// It builds a copy of examples/hello for vm-amd64 as release 1, changes
// one line of its main.go (the default greeting) and builds release 2,
// publishes and signs both, then runs two fleets of N devices:
//
//   - the fleet: every device runs release 1 (slot a holds release 1's
//     root, one read-only file all devices share; slot b is each device's
//     own file; the boot directory holds release 1's boot files), so it
//     reuses the chunks it has and downloads the rest;
//   - the anchor: the same N devices with nothing to reuse (an empty
//     running slot), each downloading every chunk of the root: what a
//     full-root download costs the registry.
//
// The registry's answers pass through a counting reverse proxy, which
// counts the bytes it served (manifests and blobs) and its error answers.
// It ends with
//
//	RESULT fleet n=… all_updated_s=… registry_bytes=… bytes_per_device=… failed=… anchor_s=… anchor_bytes_per_device=… ratio_bytes=…
//
// where all_updated_s is the time from the first request until the last
// device committed its trial, failed counts devices whose pull returned an
// error or whose slot.json names no trial of slot b afterwards, and
// ratio_bytes = bytes_per_device / anchor_bytes_per_device. The builds,
// the devices and the proxy are internal/pullrig's, which bench/delta
// shares.
//
// Usage (kernels from `make setup`):
//
//	INGOT_KERNEL_DEB=.cache/kernels/linux-image-cloud-amd64.deb go run ./bench/fleet [-n 200] [-concurrency 0]
package main

import (
	"context"
	"crypto/ecdsa"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ingotdev/ingot/internal/pullrig"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/slot"
)

// The one-line change between release 1 and release 2: hello's default
// greeting.
const (
	greetingLine = `greeting = "hello from ingot"`
	changedLine  = `greeting = "hello from ingot, release 2"`
)

// repository is where the bench publishes its releases.
const repository = "fleet/hello"

func main() {
	n := flag.Int("n", 200, "devices")
	concurrency := flag.Int("concurrency", 0, "devices pulling at the same time (0: all at once)")
	verbose := flag.Bool("v", false, "print the build's progress and every device's log")
	keep := flag.Bool("keep", false, "keep the work directory and print its path")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the two fleets' pulls to this file")
	flag.Parse()
	if *n < 1 {
		fmt.Fprintln(os.Stderr, "bench/fleet: -n must be at least 1")
		os.Exit(2)
	}
	if *concurrency <= 0 || *concurrency > *n {
		*concurrency = *n
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *n, *concurrency, *verbose, *keep, *cpuProfile); err != nil {
		fmt.Fprintln(os.Stderr, "bench/fleet:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

func run(ctx context.Context, n, concurrency int, verbose, keep bool, cpuProfile string) error {
	ws, cleanup, err := pullrig.NewWorkspace("fleet", keep, logf)
	if err != nil {
		return err
	}
	defer cleanup()
	tmp := ws.Dir
	if verbose {
		ws.Progress = os.Stderr
	}
	rel1, err := ws.Build(ctx, 1)
	if err != nil {
		return err
	}
	if err := pullrig.ChangeLine(filepath.Join(ws.App, "cmd/hello/main.go"), greetingLine, changedLine); err != nil {
		return err
	}
	rel2, err := ws.Build(ctx, 2)
	if err != nil {
		return err
	}

	// Each later release carries patches against release 1, what the
	// devices run.
	reg, key, err := ws.PublishReleases(ctx, repository, []pullrig.Release{rel1, rel2})
	if err != nil {
		return err
	}
	defer reg.Stop()

	proxy, err := pullrig.StartCountingProxy(reg.Host)
	if err != nil {
		return err
	}
	defer proxy.Close()

	base, err := pullrig.PrepareBase(filepath.Join(tmp, "base"), rel1.Image)
	if err != nil {
		return err
	}
	f := &fleet{
		tmp: tmp, base: base, key: &key.PublicKey, proxy: proxy, n: n, concurrency: concurrency,
		ref: proxy.Host + "/" + repository + ":2", name: rel1.Name, buildID: rel1.Report.BuildID, verbose: verbose,
	}
	if cpuProfile != "" {
		pf, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	logf("fleet: %d devices on release 1 pull release 2 (%s), %d at a time", n, f.ref, concurrency)
	fl, err := f.phase(ctx, "fleet", base.Running)
	if err != nil {
		return err
	}
	logf("anchor: %d devices with an empty running slot pull release 2", n)
	an, err := f.phase(ctx, "anchor", base.Empty)
	if err != nil {
		return err
	}
	fmt.Printf("RESULT fleet n=%d all_updated_s=%.2f registry_bytes=%d bytes_per_device=%d failed=%d anchor_s=%.2f anchor_bytes_per_device=%d ratio_bytes=%.4f\n",
		n, fl.seconds, fl.bytes, fl.bytes/int64(n), fl.failed, an.seconds, an.bytes/int64(n),
		float64(fl.bytes)/float64(an.bytes))
	return nil
}

// fleet runs the phases.
type fleet struct {
	tmp         string
	base        *pullrig.Base
	key         *ecdsa.PublicKey
	proxy       *pullrig.CountingProxy
	n           int
	concurrency int
	ref         string
	name        string
	buildID     string
	verbose     bool
}

// phaseResult is what one phase measured.
type phaseResult struct {
	seconds float64
	bytes   int64
	failed  int
}

// phase makes n devices whose running slot is the file running and lets
// them all pull f.ref.
func (f *fleet) phase(ctx context.Context, label, running string) (phaseResult, error) {
	dir := filepath.Join(f.tmp, label)
	defer os.RemoveAll(dir)
	devices := make([]*pullrig.Device, f.n)
	for i := range devices {
		d, err := f.newDevice(filepath.Join(dir, fmt.Sprint(i)), running, i)
		if err != nil {
			return phaseResult{}, fmt.Errorf("%s: device %d: %w", label, i, err)
		}
		devices[i] = d
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heapBefore := ms.HeapInuse

	f.proxy.Reset()
	sem := make(chan struct{}, f.concurrency)
	durations := make([]time.Duration, f.n)
	errs := make([]error, f.n)
	var wg sync.WaitGroup
	var peakHeap atomic.Uint64
	// What the devices' results say of the root: downloaded, or copied
	// from the running slot.
	var rootFetched, rootReused atomic.Int64
	stopSampling := sampleHeap(&peakHeap)
	start := time.Now()
	for i, d := range devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			t0 := time.Now()
			res, err := d.Puller.PullNow(ctx, mgmt.PullRequest{Ref: f.ref})
			durations[i] = time.Since(t0)
			rootFetched.Add(res.BytesFetched)
			rootReused.Add(res.BytesReused)
			if err == nil && res.Slot != string(slot.B) {
				err = fmt.Errorf("installed into slot %q, want b", res.Slot)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopSampling()
	c := f.proxy.Counts()

	failed := 0
	for i, d := range devices {
		err := errs[i]
		if err == nil {
			err = d.CheckTrial()
		}
		if err != nil {
			failed++
			if failed <= 5 {
				logf("%s: device %d: %v", label, i, err)
			}
		}
	}
	slices.Sort(durations)
	logf("%s: %d devices in %s: %d failed; %d bytes served (%d per device; of the root %d fetched and %d reused per device) in %d requests (%d of them GET /v2/), %d error answers (429/5xx); per device p50 %s, max %s; heap %d MiB before, peak %d MiB",
		label, f.n, elapsed.Round(time.Millisecond), failed, c.Served, c.Served/int64(f.n),
		rootFetched.Load()/int64(f.n), rootReused.Load()/int64(f.n), c.Requests, c.Pings, c.ErrorAnswers,
		durations[len(durations)/2].Round(time.Millisecond), durations[len(durations)-1].Round(time.Millisecond),
		heapBefore>>20, peakHeap.Load()>>20)
	return phaseResult{seconds: elapsed.Seconds(), bytes: c.Served, failed: failed}, nil
}

// sampleHeap records the peak heap in use until the returned function is
// called.
func sampleHeap(peak *atomic.Uint64) func() {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// newDevice makes device i in dir, running release 1 from the file
// running.
func (f *fleet) newDevice(dir, running string, i int) (*pullrig.Device, error) {
	var devLog func(string, ...any)
	if f.verbose {
		devLog = func(format string, args ...any) { logf("device %d: "+format, append([]any{i}, args...)...) }
	}
	return pullrig.NewDevice(pullrig.DeviceConfig{
		Dir: dir, Base: f.base, Running: running, Keys: []*ecdsa.PublicKey{f.key},
		Name: f.name, Release: 1, BuildID: f.buildID, Logf: devLog,
	})
}
