// Command delta measures what a chunked release saves an appliance that
// pulls an update, with the appliance's own pull code: it builds a copy
// of examples/hello for vm-amd64 as release 1 and, each after a one-line
// change to the copy, releases 2, 3 and 4, publishes and signs all four
// in one docker-registry (distribution 2.8, started by the bench with its
// storage in a temporary directory), and lets a device running release 1
// pull each of 2, 3 and 4 (a fresh device each time). A device is the
// agent's real update engine over files (internal/pullrig, as in
// bench/fleet): an update.Manager over a boot directory, a running slot a
// holding release 1's root and an empty slot b, and a pull.Puller, whose
// PullNow cuts the running slot with packer/format/cdc, copies every
// chunk of the new root it already has, downloads the rest, verifies
// each chunk and the whole root, stages the boot files and commits slot
// b as the trial. The bench then checks that slot.json names slot b as
// the trial and that slot b holds exactly the release's root.
//
// The changes, each from release 1:
//
//   - release 2, the RESULT: hello's default greeting in cmd/hello/main.go
//     becomes a longer string;
//   - release 3: the same greeting becomes a string of the same length
//     (printed before the RESULT for comparison: Go's linker sorts
//     read-only data by size, so a string whose length changes moves the
//     data after it and every instruction that refers to that data, and
//     far more of the binary changes);
//   - release 4: the GREETING in hello's ingot.yaml changes, so no binary
//     does: of the root only the appliance's description (appliance.json,
//     and build.json, whose build id changes with it) differs (printed
//     before the RESULT).
//
// Releases 2 to 4 are published with patches against release 1
// (publish.WithDeltaFrom, as `ingot publish` makes them against what the
// tag held): a chunk that changed a little comes as a small zstd patch
// decoded with the device's own running slot as dictionary.
//
// It ends with
//
//	RESULT delta root_bytes=… fetched_bytes=… ratio=… anchor_bytes=… anchor_ratio=…
//
// where root_bytes is release 2's root (PullResult.BytesRoot),
// fetched_bytes the bytes the device downloaded for it (chunk blobs and
// patches, PullResult.BytesFetched), ratio = fetched_bytes / root_bytes,
// and the anchor is the same release pulled by a device with nothing to
// reuse (an empty running slot), which downloads every chunk: what a full
// download of the root costs on the wire; anchor_ratio = fetched_bytes /
// anchor_bytes. Each pull's line also gives registry_bytes, what the
// registry served it through a counting proxy: the root's chunks plus the
// manifests, signature, config, chunk index and boot files.
//
// Usage (kernels from `make setup`):
//
//	INGOT_KERNEL_DEB=.cache/kernels/linux-image-cloud-amd64.deb go run ./bench/delta
package main

import (
	"context"
	"crypto/ecdsa"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/internal/pullrig"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/slot"
)

// The one-line changes, in cmd/hello/main.go (releases 2 and 3) and in
// ingot.yaml (release 4).
const (
	mainGo       = "cmd/hello/main.go"
	greetingLine = `greeting = "hello from ingot"`
	longerLine   = `greeting = "hello from ingot, release 2"`
	sameSizeLine = `greeting = "hallo from ingot"`
	envLine      = "GREETING: hello from ingot"
	changedEnv   = "GREETING: hello from ingot, release 4"
)

// repository is where the bench publishes its releases.
const repository = "delta/hello"

func main() {
	verbose := flag.Bool("v", false, "print the build's and the publisher's progress and the devices' logs")
	keep := flag.Bool("keep", false, "keep the work directory (images, devices) and print its path")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *verbose, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "bench/delta:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

// change is one release's one-line change from release 1; changes[0] is
// the RESULT's.
type change struct {
	n        uint64
	file     string
	from, to string
	label    string
	rel      pullrig.Release
	delta    delta
}

// delta is what a device on release 1 pulled of a release.
type delta struct {
	root, fetched, reused, registry int64
}

func (d delta) ratio() float64 { return float64(d.fetched) / float64(d.root) }

func run(ctx context.Context, verbose, keep bool) error {
	ws, cleanup, err := pullrig.NewWorkspace("delta", keep, logf)
	if err != nil {
		return err
	}
	defer cleanup()
	tmp := ws.Dir
	var devLog func(string, ...any)
	if verbose {
		ws.Progress = os.Stderr
		devLog = logf
	}
	rel1, err := ws.Build(ctx, 1)
	if err != nil {
		return err
	}
	changes := []*change{
		{n: 2, file: mainGo, from: greetingLine, to: longerLine, label: "longer greeting in main.go"},
		{n: 3, file: mainGo, from: greetingLine, to: sameSizeLine, label: "same-length greeting in main.go"},
		{n: 4, file: config.FileName, from: envLine, to: changedEnv, label: "greeting in ingot.yaml"},
	}
	for _, c := range changes {
		path := filepath.Join(ws.App, c.file)
		if err := pullrig.ChangeLine(path, c.from, c.to); err != nil {
			return err
		}
		logf("release %d: one line of %s changed: %s -> %s", c.n, c.file, c.from, c.to)
		if c.rel, err = ws.Build(ctx, c.n); err != nil {
			return err
		}
		// Back to release 1's source: each change is made alone.
		if err := pullrig.ChangeLine(path, c.to, c.from); err != nil {
			return err
		}
	}

	// Each later release carries patches against release 1, what the
	// devices run.
	reg, key, err := ws.PublishReleases(ctx, repository, []pullrig.Release{rel1, changes[0].rel, changes[1].rel, changes[2].rel})
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

	for _, c := range changes {
		dev, err := pullrig.NewDevice(pullrig.DeviceConfig{
			Dir: filepath.Join(tmp, fmt.Sprintf("device-%d", c.n)), Base: base, Running: base.Running,
			Keys: []*ecdsa.PublicKey{&key.PublicKey}, Name: rel1.Name, Release: rel1.Number,
			BuildID: rel1.Report.BuildID, Logf: devLog,
		})
		if err != nil {
			return fmt.Errorf("device for release %d: %w", c.n, err)
		}
		if c.delta, err = pullRelease(ctx, dev, proxy, c.rel); err != nil {
			return err
		}
	}
	for _, c := range changes[1:] {
		fmt.Printf("%s (release %d): root_bytes=%d fetched_bytes=%d ratio=%.4f registry_bytes=%d\n",
			c.label, c.n, c.delta.root, c.delta.fetched, c.delta.ratio(), c.delta.registry)
	}
	r := changes[0]
	// The anchor: the same release pulled by a device with nothing to
	// reuse, which downloads every chunk (compressed): what a full
	// download of the root costs on the wire.
	empty, err := pullrig.NewDevice(pullrig.DeviceConfig{
		Dir: filepath.Join(tmp, "device-anchor"), Base: base, Running: base.Empty,
		Keys: []*ecdsa.PublicKey{&key.PublicKey}, Name: rel1.Name, Release: rel1.Number,
		BuildID: rel1.Report.BuildID, Logf: devLog,
	})
	if err != nil {
		return fmt.Errorf("anchor device: %w", err)
	}
	anchor, err := pullRelease(ctx, empty, proxy, r.rel)
	if err != nil {
		return err
	}
	fmt.Printf("%s (release %d): registry_bytes=%d; a device with nothing to reuse fetches %d bytes of it\n", r.label, r.n, r.delta.registry, anchor.fetched)
	fmt.Printf("RESULT delta root_bytes=%d fetched_bytes=%d ratio=%.4f anchor_bytes=%d anchor_ratio=%.4f\n",
		r.delta.root, r.delta.fetched, r.delta.ratio(), anchor.fetched, float64(r.delta.fetched)/float64(anchor.fetched))
	return nil
}

// pullRelease lets dev, running release 1, pull release rel through
// proxy, and checks what it installed.
func pullRelease(ctx context.Context, dev *pullrig.Device, proxy *pullrig.CountingProxy, rel pullrig.Release) (delta, error) {
	ref := fmt.Sprintf("%s/%s:%d", proxy.Host, repository, rel.Number)
	proxy.Reset()
	res, err := dev.Puller.PullNow(ctx, mgmt.PullRequest{Ref: ref})
	if err != nil {
		return delta{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	counts := proxy.Counts()
	if res.Slot != string(slot.B) || res.Release.Release != rel.Number || res.Release.BuildID != rel.Report.BuildID {
		return delta{}, fmt.Errorf("pull %s: installed release %d (build %s) into slot %q, want release %d (build %s) in slot b",
			ref, res.Release.Release, res.Release.BuildID, res.Slot, rel.Number, rel.Report.BuildID)
	}
	if err := dev.CheckTrial(); err != nil {
		return delta{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	if err := dev.CheckSlotB(rel.Image); err != nil {
		return delta{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	logf("release %d pulled by a device on release 1: root %d bytes: %d fetched, %d reused from the running slot; the registry served %d bytes in %d requests; slot b holds release %d's root, slot.json names it the trial",
		rel.Number, res.BytesRoot, res.BytesFetched, res.BytesReused, counts.Served, counts.Requests, rel.Number)
	return delta{root: res.BytesRoot, fetched: res.BytesFetched, reused: res.BytesReused, registry: counts.Served}, nil
}
