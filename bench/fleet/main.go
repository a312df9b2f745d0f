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
// ratio_bytes = bytes_per_device / anchor_bytes_per_device.
//
// Usage (kernels from `make setup`):
//
//	INGOT_KERNEL_DEB=.cache/kernels/linux-image-cloud-amd64.deb go run ./bench/fleet [-n 200] [-concurrency 0]
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/ingotdev/ingot/appliance/pull"
	"github.com/ingotdev/ingot/appliance/update"
	"github.com/ingotdev/ingot/builder/assemble"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/internal/regtest"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/mgmt/publish"
	"github.com/ingotdev/ingot/packer/format/image"
	"github.com/ingotdev/ingot/packer/format/slot"
)

// The one-line change between release 1 and release 2: hello's default
// greeting.
const (
	greetingLine = `greeting = "hello from ingot"`
	changedLine  = `greeting = "hello from ingot, release 2"`
)

const (
	target = config.TargetVMAmd64
	arch   = "amd64"
	// linkAbove: boot files larger than this are hard-linked into each
	// device's boot directory rather than copied (the update path
	// replaces boot files by rename, never in place).
	linkAbove = 64 << 10
)

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
	if os.Getenv("INGOT_KERNEL_DEB") == "" {
		return errors.New("INGOT_KERNEL_DEB is not set: export INGOT_KERNEL_DEB=.cache/kernels/linux-image-cloud-amd64.deb (make setup downloads it)")
	}
	tmp, err := os.MkdirTemp("", "ingot-bench-fleet-")
	if err != nil {
		return err
	}
	if keep {
		logf("work directory: %s", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	progress := io.Discard
	if verbose {
		progress = os.Stderr
	}

	app := filepath.Join(tmp, "hello")
	if err := copyHello(app); err != nil {
		return err
	}
	img1, rep1, err := build(ctx, tmp, app, 1, progress)
	if err != nil {
		return err
	}
	mainGo := filepath.Join(app, "cmd/hello/main.go")
	src, err := os.ReadFile(mainGo)
	if err != nil {
		return err
	}
	if bytes.Count(src, []byte(greetingLine)) != 1 {
		return fmt.Errorf("%s: no single line %q to change", mainGo, greetingLine)
	}
	if err := os.WriteFile(mainGo, bytes.Replace(src, []byte(greetingLine), []byte(changedLine), 1), 0o644); err != nil {
		return err
	}
	img2, rep2, err := build(ctx, tmp, app, 2, progress)
	if err != nil {
		return err
	}

	reg, err := regtest.Launch(ctx, filepath.Join(tmp, "registry"))
	if err != nil {
		return err
	}
	defer reg.Stop()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	for _, r := range []struct {
		img string
		rep *assemble.Report
		tag string
	}{{img1, rep1, "1"}, {img2, rep2, "2"}} {
		if err := publishSigned(ctx, reg.Host, r.tag, r.img, r.rep, key, progress); err != nil {
			return err
		}
	}

	proxy, err := startCountingProxy(reg.Host)
	if err != nil {
		return err
	}
	defer proxy.Close()

	base, err := prepareBase(tmp, img1)
	if err != nil {
		return err
	}
	f := &fleet{
		tmp: tmp, base: base, key: &key.PublicKey, proxy: proxy, n: n, concurrency: concurrency,
		ref: proxy.host + "/fleet/hello:2", buildID: rep1.BuildID, verbose: verbose,
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
	fl, err := f.phase(ctx, "fleet", base.running)
	if err != nil {
		return err
	}
	logf("anchor: %d devices with an empty running slot pull release 2", n)
	an, err := f.phase(ctx, "anchor", base.empty)
	if err != nil {
		return err
	}
	fmt.Printf("RESULT fleet n=%d all_updated_s=%.2f registry_bytes=%d bytes_per_device=%d failed=%d anchor_s=%.2f anchor_bytes_per_device=%d ratio_bytes=%.4f\n",
		n, fl.seconds, fl.bytes, fl.bytes/int64(n), fl.failed, an.seconds, an.bytes/int64(n),
		float64(fl.bytes)/float64(an.bytes))
	return nil
}

// build builds the appliance directory app as release rel for vm-amd64.
func build(ctx context.Context, tmp, app string, rel uint64, progress io.Writer) (string, *assemble.Report, error) {
	cfg, err := config.Load(filepath.Join(app, config.FileName))
	if err != nil {
		return "", nil, err
	}
	cfg.Release = rel
	img := filepath.Join(tmp, fmt.Sprintf("hello-%d.img", rel))
	start := time.Now()
	rep, err := assemble.Image(ctx, cfg, target, img, assemble.WithCacheDir(filepath.Join(tmp, "cache")), assemble.WithProgress(progress))
	if err != nil {
		return "", nil, fmt.Errorf("release %d: %w", rel, err)
	}
	logf("release %d: build %s, root %d bytes, built in %s", rel, rep.BuildID, rep.RootBytes, time.Since(start).Round(time.Millisecond))
	return img, rep, nil
}

// publishSigned publishes image img as host/fleet/hello:tag and signs it.
func publishSigned(ctx context.Context, host, tag, img string, rep *assemble.Report, key *ecdsa.PrivateKey, progress io.Writer) error {
	t, err := name.NewTag(host+"/fleet/hello:"+tag, name.Insecure)
	if err != nil {
		return err
	}
	res, err := publish.Push(ctx, t, []publish.Image{{Path: img, Created: rep.Created, SBOM: rep.SBOM}}, publish.WithLog(progress))
	if err != nil {
		return err
	}
	if _, err := publish.Sign(ctx, t.Context(), res.Digest, key); err != nil {
		return err
	}
	logf("published %s as %s: %d bytes of blobs, %d uploaded", img, res.Ref, res.Bytes, res.BytesUploaded)
	return nil
}

// base is what every device starts from: release 1's boot directory, and
// the two running roots the phases share (release 1's, and an empty one).
type base struct {
	bootDir        string
	running, empty string
	partBytes      int64
}

// prepareBase extracts release 1's boot files and root from its image.
func prepareBase(tmp, img string) (*base, error) {
	im, err := image.Open(img)
	if err != nil {
		return nil, err
	}
	defer im.Close()
	b := &base{bootDir: filepath.Join(tmp, "base", "boot"), running: filepath.Join(tmp, "base", "root-a.release1"), empty: filepath.Join(tmp, "base", "root-a.empty")}
	bootFS, err := im.Boot()
	if err != nil {
		return nil, err
	}
	if err := os.CopyFS(b.bootDir, bootFS); err != nil {
		return nil, fmt.Errorf("boot files of %s: %w", img, err)
	}
	part, err := im.Root(slot.A)
	if err != nil {
		return nil, err
	}
	root, err := im.RootSquashfs(slot.A)
	if err != nil {
		return nil, err
	}
	b.partBytes = part.Size()
	f, err := os.Create(b.running)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(f, root)
	if err == nil {
		err = f.Truncate(b.partBytes)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.running, err)
	}
	if err := sparseFile(b.empty, b.partBytes); err != nil {
		return nil, err
	}
	for _, p := range []string{b.running, b.empty} {
		if err := os.Chmod(p, 0o444); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func sparseFile(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// readOnlyPartition is a running slot that many devices share: reads
// only.
type readOnlyPartition struct {
	*os.File
	size int64
}

func (p readOnlyPartition) WriteAt([]byte, int64) (int, error) {
	return 0, fmt.Errorf("%s: the running slot is shared and read-only", p.Name())
}

func (p readOnlyPartition) SizeBytes() int64 { return p.size }

// fleet runs the phases.
type fleet struct {
	tmp         string
	base        *base
	key         *ecdsa.PublicKey
	proxy       *countingProxy
	n           int
	concurrency int
	ref         string
	buildID     string
	verbose     bool
}

// device is one appliance's update engine.
type device struct {
	bootDir string
	puller  *pull.Puller
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
	devices := make([]*device, f.n)
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

	f.proxy.reset()
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
			res, err := d.puller.PullNow(ctx, mgmt.PullRequest{Ref: f.ref})
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
	served, requests, pings, errorAnswers := f.proxy.counts()

	failed := 0
	for i, d := range devices {
		err := errs[i]
		if err == nil {
			if s, serr := update.ReadState(d.bootDir); serr != nil {
				err = serr
			} else if s.Trial != slot.B || s.Active != slot.A {
				err = fmt.Errorf("slot.json %+v after the pull, want active a and trial b", s)
			}
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
		label, f.n, elapsed.Round(time.Millisecond), failed, served, served/int64(f.n),
		rootFetched.Load()/int64(f.n), rootReused.Load()/int64(f.n), requests, pings, errorAnswers,
		durations[len(durations)/2].Round(time.Millisecond), durations[len(durations)-1].Round(time.Millisecond),
		heapBefore>>20, peakHeap.Load()>>20)
	return phaseResult{seconds: elapsed.Seconds(), bytes: served, failed: failed}, nil
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

// newDevice makes device i in dir: release 1's boot directory (slot.json:
// slot a active), the shared running slot a, its own empty slot b, and
// the agent's update Manager and release Puller over them.
func (f *fleet) newDevice(dir, running string, i int) (*device, error) {
	bootDir := filepath.Join(dir, "boot")
	if err := copyBootDir(f.base.bootDir, bootDir); err != nil {
		return nil, err
	}
	slotB := filepath.Join(dir, slot.B.PartitionLabel())
	if err := sparseFile(slotB, f.base.partBytes); err != nil {
		return nil, err
	}
	partBytes := f.base.partBytes
	open := func(_ context.Context, n slot.Name) (update.Partition, error) {
		if n == slot.A {
			fl, err := os.Open(running)
			if err != nil {
				return nil, err
			}
			return readOnlyPartition{File: fl, size: partBytes}, nil
		}
		return update.OpenFile(slotB)
	}
	mgr, err := update.NewManager(bootDir, slot.A, open, update.WithArch(arch))
	if err != nil {
		return nil, err
	}
	devLog := func(string, ...any) {}
	if f.verbose {
		devLog = func(format string, args ...any) { logf("device %d: "+format, append([]any{i}, args...)...) }
	}
	p, err := pull.New(pull.Config{
		Insecure: true, Keys: []*ecdsa.PublicKey{f.key}, Target: string(target), Arch: arch,
		Release: 1, BuildID: f.buildID, StateDir: filepath.Join(dir, "perm", "pull"), Slots: mgr,
		Reboot:      func(context.Context) error { return nil },
		RebootDelay: time.Millisecond, Logf: devLog,
		Transport: http.DefaultTransport.(*http.Transport).Clone(),
	})
	if err != nil {
		return nil, err
	}
	return &device{bootDir: bootDir, puller: p}, nil
}

// copyBootDir copies the boot directory src to dst, hard-linking files
// larger than linkAbove.
func copyBootDir(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Size() > linkAbove {
			return os.Link(path, to)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(to, data, 0o644)
	})
}

// countingProxy is a reverse proxy in front of the registry that counts
// the bytes of the answers it served, the requests and the registry's
// error answers (429 and 5xx).
type countingProxy struct {
	host                       string
	srv                        *http.Server
	served, requests, errorAns atomic.Int64
	// pings counts GET /v2/: a client's check of the API version and of
	// how to authenticate.
	pings atomic.Int64
}

func startCountingProxy(registryHost string) (*countingProxy, error) {
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: registryHost})
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// One idle connection to the registry per device at most: a fleet
	// pulls at once, and connections closed after each request would
	// pile up in TIME_WAIT.
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 1024, 1024
	rp.Transport = tr
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &countingProxy{host: l.Addr().String()}
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		if r.URL.Path == "/v2/" {
			p.pings.Add(1)
		}
		r.Host = registryHost
		rp.ServeHTTP(&countingWriter{ResponseWriter: w, p: p}, r)
	})}
	go p.srv.Serve(l)
	return p, nil
}

func (p *countingProxy) reset() {
	p.served.Store(0)
	p.requests.Store(0)
	p.errorAns.Store(0)
	p.pings.Store(0)
}

func (p *countingProxy) counts() (served, requests, pings, errorAnswers int64) {
	return p.served.Load(), p.requests.Load(), p.pings.Load(), p.errorAns.Load()
}

func (p *countingProxy) Close() error { return p.srv.Close() }

type countingWriter struct {
	http.ResponseWriter
	p *countingProxy
}

func (w *countingWriter) WriteHeader(status int) {
	if status == http.StatusTooManyRequests || status >= 500 {
		w.p.errorAns.Add(1)
	}
	w.ResponseWriter.WriteHeader(status)
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *countingWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.p.served.Add(int64(n))
	return n, err
}

// copyHello copies examples/hello (its service as a module of its own,
// its config and its .ingot directory) to dir.
func copyHello(dir string) error {
	const src = "examples/hello"
	if _, err := os.Stat(filepath.Join(src, config.FileName)); err != nil {
		return fmt.Errorf("%w (run from the repository root)", err)
	}
	for _, sub := range []string{".ingot", "cmd"} {
		if err := os.CopyFS(filepath.Join(dir, sub), os.DirFS(filepath.Join(src, sub))); err != nil {
			return err
		}
	}
	cfg, err := os.ReadFile(filepath.Join(src, config.FileName))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, config.FileName), cfg, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module hello\n\ngo 1.26\n"), 0o644)
}
