package kernel

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Limits on what one package member may make us hold in memory, so a
// corrupt or hostile package fails instead of exhausting memory. Debian's
// largest images are ~60 MiB and its largest modules ~20 MiB.
const (
	maxImageBytes       = 512 << 20
	maxConfigBytes      = 16 << 20
	maxControlBytes     = 1 << 20
	maxModuleBytes      = 256 << 20
	maxBuiltinListBytes = 16 << 20
	debianBinaryBytes   = 64
	readBufferBytes     = 1 << 20
	// preallocBytes is the most readEntry allocates before data arrives.
	preallocBytes = 4 << 20
)

const moduleSuffix = ".ko"

// Option configures LoadDeb.
type Option func(*loadOptions)

type loadOptions struct {
	keep    []string
	keepSet bool
}

// WithModules makes LoadDeb keep the data of only the named modules and
// their dependencies (the Closure of names); every module's metadata is kept
// either way. The package is still read once: which modules the closure
// holds is only known after every .modinfo has been seen, so all module
// bytes are held until the end of the pass (about 100 MiB for Debian's cloud
// kernel) and the rest are dropped then. A name LoadDeb cannot find makes it
// fail, which catches a wrong module list before anything is built.
func WithModules(names ...string) Option {
	return func(o *loadOptions) {
		o.keep = append(o.keep, names...)
		o.keepSet = true
	}
}

// LoadDeb reads a Debian kernel package (linux-image-*.deb): the kernel
// image and config from boot/, every module under lib/modules/<version>/
// (or usr/lib/modules), decompressing .ko.xz, .ko.zst and .ko.gz, and
// modules.builtin. The package's data.tar may be xz, zstd or gzip
// compressed or plain; it is streamed once. Without WithModules every
// module's bytes stay in memory.
func LoadDeb(ctx context.Context, path string, opts ...Option) (*Kernel, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	defer f.Close()
	k, err := readDeb(ctx, f, opts)
	if err != nil {
		return nil, fmt.Errorf("kernel: %s: %w", path, err)
	}
	return k, nil
}

// ReadDeb is LoadDeb for a package that is not in a file.
func ReadDeb(ctx context.Context, r io.Reader, opts ...Option) (*Kernel, error) {
	k, err := readDeb(ctx, r, opts)
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	return k, nil
}

// ctxReader fails reads once ctx is done, so a long decompression stops
// soon after cancellation.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// loader accumulates what the package's members yield.
type loader struct {
	k           *Kernel
	controlArch string
	moduleArch  string
	archFrom    string // the module that set moduleArch, for errors
	modVersion  string
	imageName   string
	modulePaths map[string]string // name -> path, for duplicate errors
	zstd        *zstd.Decoder
}

func readDeb(ctx context.Context, r io.Reader, opts []Option) (*Kernel, error) {
	var o loadOptions
	for _, opt := range opts {
		opt(&o)
	}
	ar, err := newARReader(bufio.NewReaderSize(ctxReader{ctx, r}, readBufferBytes))
	if err != nil {
		return nil, err
	}
	l := &loader{
		k:           &Kernel{Modules: map[string]*Module{}, Builtin: map[string]bool{}},
		modulePaths: map[string]string{},
	}
	defer func() {
		if l.zstd != nil {
			l.zstd.Close()
		}
	}()
	sawBinary, sawData := false, false
	for {
		m, err := ar.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		switch {
		case m.Name == "debian-binary":
			b, err := readAllLimited(ar, debianBinaryBytes)
			if err != nil {
				return nil, fmt.Errorf("debian-binary: %w", err)
			}
			if !bytes.HasPrefix(b, []byte("2.")) {
				return nil, fmt.Errorf("debian-binary: format %q, want 2.x", bytes.TrimSpace(b))
			}
			sawBinary = true
		case strings.HasPrefix(m.Name, "control.tar"):
			if err := l.readControl(ar, m.Name); err != nil {
				return nil, fmt.Errorf("%s: %w", m.Name, err)
			}
		case strings.HasPrefix(m.Name, "data.tar"):
			if sawData {
				return nil, fmt.Errorf("second data member %q", m.Name)
			}
			sawData = true
			if err := l.readData(ctx, ar, m.Name); err != nil {
				return nil, fmt.Errorf("%s: %w", m.Name, err)
			}
		}
	}
	if !sawBinary || !sawData {
		return nil, fmt.Errorf("not a Debian package: debian-binary or data.tar.* missing")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return l.finish(o)
}

func (l *loader) finish(o loadOptions) (*Kernel, error) {
	k := l.k
	if k.Image == nil {
		return nil, fmt.Errorf("no boot/vmlinuz-* in data.tar: not a kernel image package")
	}
	if l.modVersion != "" && l.modVersion != k.Version {
		return nil, fmt.Errorf("modules are for %q but the image %s is %q", l.modVersion, l.imageName, k.Version)
	}
	switch {
	case l.controlArch != "" && l.controlArch != "all":
		if l.moduleArch != "" && l.moduleArch != l.controlArch {
			return nil, fmt.Errorf("control says Architecture %s but module %s is built for %s", l.controlArch, l.archFrom, l.moduleArch)
		}
		k.Arch = l.controlArch
	default:
		k.Arch = l.moduleArch
	}
	if o.keepSet {
		mods, err := k.Closure(o.keep...)
		if err != nil {
			return nil, err
		}
		keep := map[*Module]bool{}
		for _, m := range mods {
			keep[m] = true
		}
		for _, m := range k.Modules {
			if !keep[m] {
				m.Data = nil
			}
		}
	}
	return k, nil
}

// decompressor returns a reader for a member or file whose name ends in a
// compression suffix, and a function releasing it.
func decompressor(name string, r io.Reader) (io.Reader, func(), error) {
	switch path.Ext(name) {
	case ".xz":
		xr, err := xz.NewReader(r)
		if err != nil {
			return nil, nil, fmt.Errorf("xz: %w", err)
		}
		return xr, func() {}, nil
	case ".zst":
		zr, err := zstd.NewReader(r)
		if err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
		return zr, zr.Close, nil
	case ".gz":
		gr, err := gzip.NewReader(r)
		if err != nil {
			return nil, nil, fmt.Errorf("gzip: %w", err)
		}
		return gr, func() { gr.Close() }, nil
	case ".tar":
		return r, func() {}, nil
	}
	return nil, nil, fmt.Errorf("unsupported compression %q", path.Ext(name))
}

// readAllLimited reads r to the end, failing past limit bytes.
func readAllLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("more than %d bytes", limit)
	}
	return b, nil
}

// readEntry reads a tar entry whose size the header announces.
func readEntry(tr *tar.Reader, hdr *tar.Header, limit int64) ([]byte, error) {
	if hdr.Size > limit {
		return nil, fmt.Errorf("%d bytes exceed the limit of %d", hdr.Size, limit)
	}
	if hdr.Size <= preallocBytes {
		b := make([]byte, hdr.Size)
		if _, err := io.ReadFull(tr, b); err != nil {
			return nil, noEOF(err)
		}
		return b, nil
	}
	// A header's size is only a claim until the bytes arrive; grow with
	// them instead of trusting it with hundreds of MiB up front.
	var buf bytes.Buffer
	buf.Grow(preallocBytes)
	if n, err := io.CopyN(&buf, tr, hdr.Size); err != nil {
		return nil, fmt.Errorf("%d of %d bytes: %w", n, hdr.Size, noEOF(err))
	}
	return buf.Bytes(), nil
}

// cleanName turns a tar name ("./boot/x", "/boot/x") into "boot/x".
func cleanName(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

func (l *loader) readControl(r io.Reader, member string) error {
	dr, release, err := decompressor(member, r)
	if err != nil {
		return err
	}
	defer release()
	tr := tar.NewReader(dr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if cleanName(hdr.Name) != "control" || hdr.Typeflag != tar.TypeReg {
			continue
		}
		b, err := readEntry(tr, hdr, maxControlBytes)
		if err != nil {
			return fmt.Errorf("control: %w", err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if ok && strings.EqualFold(k, "Architecture") {
				l.controlArch = strings.TrimSpace(v)
			}
		}
	}
}

// modulesDir splits a path below lib/modules or usr/lib/modules (merged-/usr
// packages) into the kernel version and the rest.
func modulesDir(name string) (version, rest string, ok bool) {
	for _, prefix := range []string{"lib/modules/", "usr/lib/modules/"} {
		if after, found := strings.CutPrefix(name, prefix); found {
			version, rest, ok = strings.Cut(after, "/")
			return version, rest, ok && version != "" && rest != ""
		}
	}
	return "", "", false
}

func (l *loader) readData(ctx context.Context, r io.Reader, member string) error {
	dr, release, err := decompressor(member, r)
	if err != nil {
		return err
	}
	defer release()
	tr := tar.NewReader(dr)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		name := cleanName(hdr.Name)
		if err := l.dataEntry(tr, hdr, name); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
}

func (l *loader) dataEntry(tr *tar.Reader, hdr *tar.Header, name string) error {
	k := l.k
	if dir, base := path.Split(name); dir == "boot/" {
		switch {
		case strings.HasPrefix(base, "vmlinuz-") || strings.HasPrefix(base, "vmlinux-"):
			if k.Image != nil {
				return fmt.Errorf("second kernel image; %s came first", l.imageName)
			}
			b, err := readEntry(tr, hdr, maxImageBytes)
			if err != nil {
				return err
			}
			k.Image, k.Version, l.imageName = b, base[len("vmlinuz-"):], name
		case strings.HasPrefix(base, "config-"):
			b, err := readEntry(tr, hdr, maxConfigBytes)
			if err != nil {
				return err
			}
			k.Config = b
		}
		return nil
	}
	version, rest, ok := modulesDir(name)
	if !ok {
		return nil
	}
	isModule := false
	for _, s := range []string{"", ".xz", ".zst", ".gz"} {
		isModule = isModule || strings.HasSuffix(rest, moduleSuffix+s)
	}
	if rest != "modules.builtin" && !isModule {
		return nil
	}
	if l.modVersion == "" {
		l.modVersion = version
	} else if version != l.modVersion {
		return fmt.Errorf("modules for two kernel versions, %q and %q", l.modVersion, version)
	}
	if rest == "modules.builtin" {
		b, err := readEntry(tr, hdr, maxBuiltinListBytes)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				k.Builtin[nameFromPath(line)] = true
			}
		}
		return nil
	}
	b, err := readEntry(tr, hdr, maxModuleBytes)
	if err != nil {
		return err
	}
	return l.addModule(rest, b)
}

// addModule decompresses a module if its name says so and records it.
func (l *loader) addModule(rel string, b []byte) error {
	if ext := path.Ext(rel); ext != moduleSuffix {
		var err error
		if b, err = l.decompressModule(ext, b); err != nil {
			return err
		}
		rel = strings.TrimSuffix(rel, ext)
	}
	mi, err := readModinfo(b)
	if err != nil {
		return err
	}
	name := normalizeName(mi.name)
	if name == "" {
		name = nameFromPath(rel)
	}
	if prev, dup := l.modulePaths[name]; dup {
		return fmt.Errorf("module %q also at %s", name, prev)
	}
	l.modulePaths[name] = rel
	arch := debianArch(mi.machine, mi.class)
	if arch == "" {
		arch = mi.machine.String()
	}
	if l.moduleArch == "" {
		l.moduleArch, l.archFrom = arch, rel
	} else if arch != l.moduleArch {
		return fmt.Errorf("module built for %s, but %s is built for %s", arch, l.archFrom, l.moduleArch)
	}
	l.k.Modules[name] = &Module{
		Name:        name,
		Path:        rel,
		Depends:     mi.depends,
		Aliases:     mi.aliases,
		SoftDepends: mi.softdeps,
		Data:        b,
	}
	return nil
}

func (l *loader) decompressModule(ext string, b []byte) ([]byte, error) {
	if ext == ".zst" {
		// One decoder for all modules: creating one per module costs more
		// than decoding a small module.
		if l.zstd == nil {
			d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxModuleBytes))
			if err != nil {
				return nil, fmt.Errorf("zstd: %w", err)
			}
			l.zstd = d
		}
		out, err := l.zstd.DecodeAll(b, nil)
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return out, nil
	}
	dr, release, err := decompressor(ext, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	defer release()
	out, err := readAllLimited(dr, maxModuleBytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", strings.TrimPrefix(ext, "."), err)
	}
	return out, nil
}
