// Package builder turns a config into the parts of an appliance image for
// one target: it cross-compiles every Go service and ingot-init for the
// target's architecture, finds the kernel, and assembles the root
// filesystem as a rootfs.Tree, which the packer writes to disk. The same
// inputs give the same Result, bit for bit: binaries are built with
// -trimpath and without VCS stamping, and every timestamp is the
// SOURCE_DATE_EPOCH (or DefaultEpoch).
//
// Compilation runs one `go build` per distinct package, in parallel up to
// GOMAXPROCS, each writing to a fixed path in the artifact cache
// (WithCacheDir). Go's build cache makes the compile itself incremental,
// and because the output path is stable, `go build` notices an up-to-date
// binary and skips even the link: a warm build costs one `go build` check
// (about 0.1 s) per binary.
//
// ingot-init is built from the ingot module the config directory's module
// sees (`go list -m github.com/ingotdev/ingot`), else from $INGOT_SOURCE,
// else from the source this ingot binary was built from; WithIngotSource
// overrides all of them.
//
// The kernel of a VM target is, in order: WithKernelDeb; kernel: in the
// config; $INGOT_KERNEL_DEB_<ARCH> (and $INGOT_KERNEL_DEB for amd64), which
// must exist when set; then the first existing of
// $INGOT_KERNEL_DIR/linux-image-cloud-<arch>.deb,
// <cache>/kernels/linux-image-cloud-<arch>.deb and
// <ingot source>/.cache/kernels/linux-image-cloud-<arch>.deb (filled by
// `make setup`). A Raspberry Pi target defaults to the Go module
// github.com/gokrazy/kernel.rpi.
package builder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/packer/format/certpin"
	"github.com/ingotdev/ingot/packer/format/spec"
	"github.com/ingotdev/ingot/packer/rootfs"
	"golang.org/x/sync/errgroup"
)

// DefaultEpoch is the timestamp of every file when SOURCE_DATE_EPOCH is not
// set: 2020-01-01T00:00:00Z. A fixed value (rather than the build time)
// keeps images reproducible; it is after 1980 so FAT can store it.
const DefaultEpoch int64 = 1577836800

// Result is everything the packer needs to write the image of one target.
type Result struct {
	Name   string
	Target config.Target
	// Arch is the GOARCH of the target's userland.
	Arch string
	// BuildID identifies this build: a hash of every input (binaries,
	// kernel, configuration, epoch). Equal inputs give equal IDs.
	BuildID string
	// ModTime is the timestamp (Unix seconds) of every file in Root; the
	// packer uses it for the files it adds.
	ModTime int64
	// Root is the root filesystem: /init, /usr/bin/<service>,
	// /etc/ingot/appliance.json, /etc/ingot/build.json, /etc files and
	// mount points.
	Root *rootfs.Tree
	// Init is the ingot-init binary, also at /init in Root.
	Init rootfs.Bytes
	// Stage0 is the ingot-stage0 binary, /init in a VM's initramfs; nil
	// for a Raspberry Pi.
	Stage0 rootfs.Bytes
	// Kernel is where the kernel comes from; for config.KernelDebian,
	// Kernel.Path is an existing .deb file whose SHA-256 is KernelSHA256.
	Kernel       config.KernelSource
	KernelSHA256 string
	// EFILoaderDeb is Debian's systemd-boot-efi package for a VM target
	// (resolveEFILoader); "" for a Raspberry Pi, or with EFILoaderErr
	// saying why it was not found: only writing the image needs it.
	EFILoaderDeb    string
	EFILoaderSHA256 string
	EFILoaderErr    error
	// Appliance is the content of /etc/ingot/appliance.json.
	Appliance *spec.Appliance
	// Binaries lists ingot-init, ingot-stage0 (VM targets) and then every
	// Go service, in config order.
	Binaries []Binary
	// Images lists the image services, in config order, with the digests
	// their references resolved to.
	Images []ImageService
	// GoVersion is the Go toolchain that built the binaries.
	GoVersion string
	// Disk sizes from the config.
	BootBytes, RootSlotBytes, PermBytes int64
}

// Binary is one compiled program in Root.
type Binary struct {
	// Service is the service name, or "" for ingot-init.
	Service string `json:"service,omitempty"`
	// Package is the Go package as configured ("./cmd/hello").
	Package string `json:"package"`
	// Path is the file in Root; Stage0Path for ingot-stage0.
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
	Bytes  int64  `json:"bytes"`
}

// Option changes how Build works.
type Option func(*options)

type options struct {
	cacheDir    string
	progress    io.Writer
	debMirror   string // tests' local mirror; empty in use
	epoch       *int64
	ingotSource string
	kernelDeb   string
	goCmd       string
	getenv      func(string) string
	maxParallel int
}

// WithCacheDir sets the artifact cache (compiled binaries, generated
// modules). The default is $XDG_CACHE_HOME/ingot (os.UserCacheDir).
func WithCacheDir(dir string) Option { return func(o *options) { o.cacheDir = dir } }

// WithProgress makes Build write one line per step (compiles with their
// duration) to w.
func WithProgress(w io.Writer) Option { return func(o *options) { o.progress = w } }

// WithSourceDateEpoch sets the timestamp of every file, in Unix seconds.
// Without it, Build uses $SOURCE_DATE_EPOCH, or DefaultEpoch if unset.
func WithSourceDateEpoch(unixSeconds int64) Option {
	return func(o *options) { o.epoch = &unixSeconds }
}

// WithIngotSource names a checkout of the ingot module to build ingot-init
// from, instead of finding one (see locateIngot for the search order).
func WithIngotSource(dir string) Option { return func(o *options) { o.ingotSource = dir } }

// WithKernelDeb uses the Debian kernel package at path for this build,
// overriding the config and the default search (e.g. a -kernel flag).
func WithKernelDeb(path string) Option { return func(o *options) { o.kernelDeb = path } }

// WithGoCommand runs go at path instead of "go" from $PATH.
func WithGoCommand(path string) Option { return func(o *options) { o.goCmd = path } }

// Build compiles and assembles the root of cfg's appliance for target.
// A Go package that does not compile fails the build with a *CompileError
// naming the service, and cancels the other compiles.
func Build(ctx context.Context, cfg *config.Config, target config.Target, opts ...Option) (*Result, error) {
	o := options{goCmd: "go", getenv: os.Getenv, maxParallel: runtime.GOMAXPROCS(0)}
	for _, opt := range opts {
		opt(&o)
	}
	if !target.Valid() {
		return nil, fmt.Errorf("builder: unknown target %q", target)
	}
	if !cfg.HasTarget(target) {
		return nil, fmt.Errorf("builder: %s: target %s is not in targets: %s", cfg.File, target, targetNames(cfg.Targets))
	}
	if _, ok := cfg.Service(spec.DHCPServiceName); ok && usesDHCP(cfg) {
		return nil, fmt.Errorf("builder: %s: service %q: the name is taken by the DHCP client of network: dhcp; rename the service or set network: none or static", cfg.File, spec.DHCPServiceName)
	}
	if usesWiFi(cfg, target) {
		for _, name := range []string{spec.WiFiServiceName, spec.WiFiDHCPServiceName} {
			if _, ok := cfg.Service(name); ok {
				return nil, fmt.Errorf("builder: %s: service %q: the name is taken by the Wi-Fi of network.wifi; rename the service", cfg.File, name)
			}
		}
	}
	epoch, err := o.sourceDateEpoch()
	if err != nil {
		return nil, err
	}
	if o.cacheDir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("builder: no cache directory (set XDG_CACHE_HOME or use -cache): %w", err)
		}
		o.cacheDir = filepath.Join(base, "ingot")
	}
	tokenHash, metricsTokenHash, err := tokenSHA256(cfg)
	if err != nil {
		return nil, err
	}
	var wifiPSK, wifiDigest string
	if usesWiFi(cfg, target) {
		if wifiPSK, err = cfg.Network.WiFi.PSK(); err != nil {
			return nil, fmt.Errorf("builder: %w", err)
		}
		fw, err := fileSHA256(cfg.Network.WiFi.FirmwareDeb)
		if err != nil {
			return nil, fmt.Errorf("builder: %s: network.wifi.firmware_deb: %w", cfg.Network.WiFi.Pos, err)
		}
		psk := sha256.Sum256([]byte(wifiPSK))
		wifiDigest = "psk:" + hex.EncodeToString(psk[:]) + " firmware:" + fw
	}
	tlsID, err := loadTLS(cfg, target)
	if err != nil {
		return nil, err
	}
	vsockKeyPEM, err := vsockKey(cfg, target)
	if err != nil {
		return nil, err
	}
	releaseKeys, err := cfg.ReleaseKeys()
	if err != nil {
		return nil, err
	}
	logsCA, err := loadLogsCA(cfg)
	if err != nil {
		return nil, err
	}
	g := &goTool{cmd: o.goCmd, getenv: o.getenv, cacheDir: o.cacheDir, progress: newProgress(o.progress)}
	src, err := locateIngot(ctx, g, cfg.Dir, o)
	if err != nil {
		return nil, err
	}
	kernel, err := resolveKernel(ctx, cfg, target, src.dir, o)
	if err != nil {
		return nil, err
	}
	efiLoader, efiLoaderErr := resolveEFILoader(ctx, cfg, target, src.dir, o)
	var efiLoaderSum string
	if efiLoader != "" {
		if efiLoaderSum, err = fileSHA256(efiLoader); err != nil {
			return nil, fmt.Errorf("builder: UEFI loader %s: %w", efiLoader, err)
		}
	}

	// Compile every distinct package and hash the kernel, all at once.
	b := &build{cfg: cfg, target: target, tokenHash: tokenHash, metricsTokenHash: metricsTokenHash, vsockKeyPEM: vsockKeyPEM, tls: tlsID, logsCA: logsCA,
		wifiPSK: wifiPSK, wifiDigest: wifiDigest, releaseKeys: releaseKeys}
	b.init, b.stage0, b.programs = planJobs(cfg, target, src)
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(max(1, o.maxParallel))
	jobs := []*job{b.init}
	if b.stage0 != nil {
		jobs = append(jobs, b.stage0)
	}
	for _, j := range append(jobs, b.programs...) {
		eg.Go(func() error { return g.build(ectx, j) })
	}
	eg.Go(func() error {
		var err error
		b.images, err = pullImages(ectx, cfg, target, &o, epoch, g.progress)
		return err
	})
	var kernelSum string
	if kernel.Kind == config.KernelDebian {
		eg.Go(func() error {
			sum, err := fileSHA256(kernel.Path)
			if err != nil {
				return fmt.Errorf("builder: kernel %s: %w", kernel.Path, err)
			}
			kernelSum = sum
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	r := &Result{
		Name: cfg.Name, Target: target, Arch: target.Arch(), ModTime: epoch,
		Kernel: kernel, KernelSHA256: kernelSum, EFILoaderDeb: efiLoader, EFILoaderSHA256: efiLoaderSum, EFILoaderErr: efiLoaderErr,
		BootBytes: cfg.Disk.BootBytes, RootSlotBytes: cfg.Disk.RootSlotBytes, PermBytes: cfg.PermBytes,
	}
	r.Images = imageList(cfg, b.images)
	if err := b.assemble(r); err != nil {
		return nil, err
	}
	return r, nil
}

func targetNames(ts []config.Target) string {
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = string(t)
	}
	return strings.Join(names, ", ")
}

func (o *options) sourceDateEpoch() (int64, error) {
	if o.epoch != nil {
		return *o.epoch, nil
	}
	s := o.getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return DefaultEpoch, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("builder: SOURCE_DATE_EPOCH=%q is not a non-negative number of seconds", s)
	}
	return n, nil
}

// tokenSHA256 hashes the management token, after config.Token has checked
// that it is long enough to leave the unsalted hash unguessable. The image
// holds only the hash; the token itself stays with whoever manages the
// appliance.
// tokenSHA256 returns the SHA-256 (hex) of the management token and of
// the metrics token derived from it (certpin.MetricsToken).
func tokenSHA256(cfg *config.Config) (mgmtHash, metricsHash string, err error) {
	tok, err := cfg.Token()
	if err != nil {
		return "", "", fmt.Errorf("builder: %w", err)
	}
	metricsTok, err := certpin.MetricsToken(tok)
	if err != nil {
		return "", "", fmt.Errorf("builder: %w", err)
	}
	sum, msum := sha256.Sum256([]byte(tok)), sha256.Sum256([]byte(metricsTok))
	return hex.EncodeToString(sum[:]), hex.EncodeToString(msum[:]), nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// progress serialises lines from concurrent compiles.
type progress struct {
	mu sync.Mutex
	w  io.Writer
}

func newProgress(w io.Writer) *progress {
	if w == nil {
		w = io.Discard
	}
	return &progress{w: w}
}

func (p *progress) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format+"\n", args...)
}

func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + "s"
}
