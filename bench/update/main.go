// Command update measures an A/B update of the hello appliance the way a
// user runs one: it boots a copy of examples/hello with vm.Run, changes
// the greeting and times one push.Update (build, push, reboot, trial
// confirmed, new greeting answering). To see how much of the vsock
// channel the upload uses, the same run then boots examples/vsock-echo on
// the same vhost-user backend and times 64 MiB written host→guest through
// its echo while the echo is drained. Run it from the repository root:
//
//	INGOT_KERNEL_DEB=.cache/kernels/linux-image-cloud-amd64.deb go run ./bench/update
//
// MB/s are 10^6 bytes per second. The last line is:
//
//	RESULT update total_s=… push_mbps=… raw_vsock_mbps=… push_efficiency=…
//
// where push_efficiency is push_mbps / raw_vsock_mbps.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ingotdev/ingot/internal/vmtest"

	"github.com/ingotdev/ingot/builder/assemble"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/hypervisor/vm"
	"github.com/ingotdev/ingot/internal/pullrig"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/mgmt/push"
	"github.com/ingotdev/ingot/mgmt/transport"
)

const (
	helloPort       = 8080
	echoPort        = 5000
	vmMemoryMiB     = 512
	bootLimit       = 3 * time.Minute
	bytesPerMiB     = 1 << 20
	copyBufferBytes = 256 << 10
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "bench/update: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	accel := flag.String("accel", string(qemu.AccelTCG), "accelerator: tcg, kvm or auto")
	rawMiB := flag.Int("raw-mib", 64, "MiB written through the vsock echo")
	rawRuns := flag.Int("raw-runs", 3, "echo transfers measured (the median counts)")
	verbose := flag.Bool("v", false, "print the guests' consoles")
	flag.Parse()
	if _, err := vmtest.KernelDeb("amd64"); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	tmp, err := os.MkdirTemp("", "ingot-bench-update-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cache := assemble.WithCacheDir(filepath.Join(tmp, "cache"))
	var console io.Writer
	if *verbose {
		console = os.Stderr
	}

	totalS, pushMBps, err := benchUpdate(ctx, tmp, qemu.Accel(*accel), cache, console)
	if err != nil {
		return err
	}
	rawMBps, err := benchRawVsock(ctx, tmp, qemu.Accel(*accel), cache, console, int64(*rawMiB)*bytesPerMiB, *rawRuns)
	if err != nil {
		return err
	}
	fmt.Printf("RESULT update total_s=%.2f push_mbps=%.2f raw_vsock_mbps=%.2f push_efficiency=%.3f\n",
		totalS, pushMBps, rawMBps, pushMBps/rawMBps)
	return nil
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
			fmt.Fprintf(os.Stderr, "vm: %v\n", err)
		}
	}
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

// benchUpdate boots hello, updates it to a new greeting and returns the
// update's wall time and its upload throughput.
func benchUpdate(ctx context.Context, tmp string, accel qemu.Accel, cache assemble.Option, console io.Writer) (float64, float64, error) {
	appDir := filepath.Join(tmp, "hello")
	if err := pullrig.CopyHello(appDir); err != nil {
		return 0, 0, err
	}
	cfg, err := config.Load(filepath.Join(appDir, config.FileName))
	if err != nil {
		return 0, 0, err
	}
	img := filepath.Join(tmp, "hello.img")
	start := time.Now()
	rep, err := assemble.Image(ctx, cfg, config.TargetVMAmd64, img, cache)
	if err != nil {
		return 0, 0, err
	}
	logf("hello v1: build %s in %s", rep.BuildID, time.Since(start).Round(time.Millisecond))
	port, err := freePort()
	if err != nil {
		return 0, 0, err
	}
	runDir := filepath.Join(tmp, "hello-run")
	stopVM := runVM(ctx, vm.Config{Image: img, RunDir: runDir, Accel: accel, MemoryMiB: vmMemoryMiB,
		Forwards: []qemu.Forward{{Proto: "tcp", HostPort: port, GuestPort: helloPort}},
		Console:  console, Logf: logf})
	defer stopVM()
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	if err := waitBody(ctx, url, cfg.Services[0].Env["GREETING"], bootLimit); err != nil {
		return 0, 0, fmt.Errorf("hello v1: %w", err)
	}
	logf("hello v1 answers %s after the build", time.Since(start).Round(time.Millisecond))

	tok, err := os.ReadFile(filepath.Join(appDir, ".ingot/token"))
	if err != nil {
		return 0, 0, err
	}
	c, err := mgmt.NewClient(fmt.Sprintf("unix://%s?port=%d", vm.VsockPath(runDir), config.DefaultVsockPort), string(tok))
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	const greeting = "hello from ingot, updated"
	if err := pullrig.ChangeLine(filepath.Join(appDir, config.FileName), "GREETING: "+cfg.Services[0].Env["GREETING"], "GREETING: "+greeting); err != nil {
		return 0, 0, err
	}
	cfg2, err := config.Load(filepath.Join(appDir, config.FileName))
	if err != nil {
		return 0, 0, err
	}
	start = time.Now()
	r, err := push.New(c, push.WithLog(os.Stderr), push.WithAssembleOptions(cache)).Update(ctx, cfg2)
	if err != nil {
		return 0, 0, err
	}
	if err := waitBody(ctx, url, greeting, bootLimit); err != nil {
		return 0, 0, fmt.Errorf("hello v2: %w", err)
	}
	total := time.Since(start)
	logf("update: %s total, root %d bytes pushed in %s (%.1f MB/s), slot %s (health window %s)",
		total.Round(time.Millisecond), r.RootBytes, r.PushDuration.Round(time.Millisecond), r.PushMBps(), r.Slot, cfg2.Update.HealthWindow)
	return total.Seconds(), r.PushMBps(), nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitBody polls url until its body contains want.
func waitBody(ctx context.Context, url, want string, limit time.Duration) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(limit)
	var last string
	var lastErr error
	for time.Now().Before(deadline) {
		resp, err := hc.Get(url)
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			last, lastErr = string(b), rerr
			if rerr == nil && strings.Contains(last, want) {
				return nil
			}
		} else {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("GET %s = %q, %v after %s; want a body with %q", url, last, lastErr, limit, want)
}

// benchRawVsock boots examples/vsock-echo and returns the median MB/s of
// runs transfers of n bytes through the echo on the hybrid vsock socket.
func benchRawVsock(ctx context.Context, tmp string, accel qemu.Accel, cache assemble.Option, console io.Writer, n int64, runs int) (float64, error) {
	cfg, err := config.Load("examples/vsock-echo/" + config.FileName)
	if err != nil {
		return 0, fmt.Errorf("%w (run from the repository root)", err)
	}
	img := filepath.Join(tmp, "echo.img")
	if _, err := assemble.Image(ctx, cfg, config.TargetVMAmd64, img, cache); err != nil {
		return 0, err
	}
	runDir := filepath.Join(tmp, "echo-run")
	stopVM := runVM(ctx, vm.Config{Image: img, RunDir: runDir, Accel: accel, MemoryMiB: vmMemoryMiB, Console: console, Logf: logf})
	defer stopVM()
	target := fmt.Sprintf("unix://%s?port=%d", vm.VsockPath(runDir), echoPort)
	deadline := time.Now().Add(bootLimit)
	for {
		// A small round trip says the echo service is up.
		_, err := echo(ctx, target, 4096)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("vsock echo on port %d: %w", echoPort, err)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
	if _, err := echo(ctx, target, n/4); err != nil { // warm-up
		return 0, err
	}
	var rates []float64
	for i := range runs {
		d, err := echo(ctx, target, n)
		if err != nil {
			return 0, err
		}
		rate := float64(n) / 1e6 / d.Seconds()
		logf("raw vsock %d: %d MiB through the echo in %s: %.1f MB/s", i+1, n/bytesPerMiB, d.Round(time.Millisecond), rate)
		rates = append(rates, rate)
	}
	slices.Sort(rates)
	return rates[len(rates)/2], nil
}

// echo writes n bytes to the echo service while reading the echo back,
// and returns the time until the last byte came back.
func echo(ctx context.Context, target string, n int64) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	c, err := transport.Dial(ctx, target)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	stopWatch := context.AfterFunc(ctx, func() { c.Close() })
	defer stopWatch()
	buf := make([]byte, copyBufferBytes)
	if _, err := rand.Read(buf); err != nil {
		return 0, err
	}
	start := time.Now()
	werr := make(chan error, 1)
	go func() {
		var sent int64
		for sent < n {
			k, err := c.Write(buf[:min(int64(len(buf)), n-sent)])
			sent += int64(k)
			if err != nil {
				werr <- fmt.Errorf("write after %d bytes: %w", sent, err)
				return
			}
		}
		werr <- nil
	}()
	got, err := io.CopyBuffer(io.Discard, io.LimitReader(c, n), make([]byte, copyBufferBytes))
	d := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("read echo after %d bytes: %w", got, err)
	}
	if got != n {
		return 0, fmt.Errorf("echo ended after %d of %d bytes", got, n)
	}
	if err := <-werr; err != nil {
		return 0, err
	}
	return d, nil
}
