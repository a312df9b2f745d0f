// Command oci benchmarks ingot's image path against the usual tools: it
// builds a multi-layer image of about 200 MB (compressible text,
// incompressible random data, hard links, whiteouts and an opaque
// directory over five layers), serves it from an in-process registry, and
// times
//
//	ours:   builder/oci pull into an empty store + flatten + packer/squashfs (zstd)
//	anchor: crane export REF - | tar2sqfs -c zstd out.sqfs
//
// from the same registry in the same run, at the same zstd level, block
// size and number of workers. crane is built from the go-containerregistry
// module this repository requires; tar2sqfs is Debian's squashfs-tools-ng.
// Runs alternate and the fastest of each counts. It ends with
//
//	RESULT oci ours_s=… anchor_s=… ratio=…
//
// where ratio is ours / anchor.
//
// Usage: go run ./bench/oci [-mb N] [-runs N] [-level N] [-cpuprofile FILE]
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/ingotdev/ingot/builder/oci"
	"github.com/ingotdev/ingot/builder/oci/flatten"
	"github.com/ingotdev/ingot/builder/oci/ocitest"
	"github.com/ingotdev/ingot/packer/squashfs"
	"github.com/klauspost/compress/gzip"
)

func main() {
	mb := flag.Int("mb", 200, "approximate uncompressed image size in MB")
	runs := flag.Int("runs", 3, "runs per side; the fastest counts")
	level := flag.Int("level", 3, "zstd level for both sides")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of ours in run N to FILE.N")
	flag.Parse()
	if err := run(*mb, *runs, *level, *cpuprofile); err != nil {
		fmt.Fprintln(os.Stderr, "bench/oci:", err)
		os.Exit(1)
	}
}

func run(mb, runs, level int, cpuprofile string) error {
	work, err := os.MkdirTemp("", "bench-oci-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	crane := filepath.Join(work, "crane")
	if out, err := exec.Command("go", "build", "-o", crane, "github.com/google/go-containerregistry/cmd/crane").CombinedOutput(); err != nil {
		return fmt.Errorf("build crane: %v: %s", err, out)
	}
	if _, err := exec.LookPath("tar2sqfs"); err != nil {
		return fmt.Errorf("tar2sqfs (Debian package squashfs-tools-ng): %w", err)
	}

	start := time.Now()
	img, size, err := makeImage(int64(mb) << 20)
	if err != nil {
		return err
	}
	reg := ocitest.NewRegistry()
	defer reg.Close()
	ref := reg.Host + "/bench:1"
	if err := ocitest.Push(ref, img); err != nil {
		return err
	}
	layers, _ := img.Layers()
	var compressed int64
	for _, l := range layers {
		n, _ := l.Size()
		compressed += n
	}
	workers := runtime.NumCPU()
	fmt.Printf("image: %d layers, %.1f MB uncompressed, %.1f MB compressed, made and pushed in %v; %d cores, zstd level %d\n",
		len(layers), float64(size)/1e6, float64(compressed)/1e6, time.Since(start).Round(time.Millisecond), workers, level)

	var ours, anchor time.Duration
	var oursOut, anchorOut string
	var prof *os.File
	for i := range runs {
		oursOut = filepath.Join(work, "ours.sqfs")
		if cpuprofile != "" {
			if prof, err = os.Create(fmt.Sprintf("%s.%d", cpuprofile, i+1)); err == nil {
				err = pprof.StartCPUProfile(prof)
			}
			if err != nil {
				return fmt.Errorf("cpu profile: %w", err)
			}
		}
		cpu0 := cpuTime()
		d, phases, err := timeOurs(ref, filepath.Join(work, fmt.Sprintf("store%d", i)), oursOut, level, workers)
		cpu := cpuTime() - cpu0
		if cpuprofile != "" {
			pprof.StopCPUProfile()
			if cerr := prof.Close(); cerr != nil {
				return fmt.Errorf("cpu profile: %w", cerr)
			}
		}
		if err != nil {
			return fmt.Errorf("ours: %w", err)
		}
		anchorOut = filepath.Join(work, "anchor.sqfs")
		d2, cpu2, err := timeAnchor(crane, ref, anchorOut, level, workers)
		if err != nil {
			return fmt.Errorf("anchor: %w", err)
		}
		if i == 0 || d < ours {
			ours = d
		}
		if i == 0 || d2 < anchor {
			anchor = d2
		}
		fmt.Printf("  run %d: ours %v cpu %v (%s), anchor %v cpu %v\n", i+1, d.Round(time.Millisecond),
			cpu.Round(time.Millisecond), phases, d2.Round(time.Millisecond), cpu2.Round(time.Millisecond))
		os.RemoveAll(filepath.Join(work, fmt.Sprintf("store%d", i)))
	}
	oursSize, err1 := fileSize(oursOut)
	anchorSize, err2 := fileSize(anchorOut)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("output sizes: %v %v", err1, err2)
	}
	fmt.Printf("squashfs: ours %.1f MB, anchor %.1f MB\n", float64(oursSize)/1e6, float64(anchorSize)/1e6)
	fmt.Printf("RESULT oci ours_s=%.3f anchor_s=%.3f ratio=%.3f\n", ours.Seconds(), anchor.Seconds(), ours.Seconds()/anchor.Seconds())
	return nil
}

// timeOurs pulls into an empty store, flattens and packs; phases says
// how long each step took and how much CPU time it used.
func timeOurs(ref, storeDir, out string, level, workers int) (d time.Duration, phases string, err error) {
	ctx := context.Background()
	start, cpu0 := time.Now(), cpuTime()
	store, err := oci.OpenStore(storeDir)
	if err != nil {
		return 0, "", err
	}
	platform, _ := oci.PlatformForArch("amd64")
	img, err := store.Pull(ctx, ref, platform)
	if err != nil {
		return 0, "", err
	}
	pulled, cpu1 := time.Now(), cpuTime()
	tree, err := flatten.Flatten(ctx, img.Layers, flatten.WithSpoolDir(store.SpoolDir()))
	if err != nil {
		return 0, "", err
	}
	flattened, cpu2 := time.Now(), cpuTime()
	f, err := os.Create(out)
	if err != nil {
		return 0, "", err
	}
	err = squashfs.Write(ctx, f, tree, squashfs.WithCompression(squashfs.Zstd), squashfs.WithLevel(level),
		squashfs.WithBlockSize(squashfs.DefaultBlockBytes), squashfs.WithWorkers(workers))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, "", err
	}
	end, cpu3 := time.Now(), cpuTime()
	ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	phases = fmt.Sprintf("pull %v cpu %v, flatten %v cpu %v, pack %v cpu %v",
		ms(pulled.Sub(start)), ms(cpu1-cpu0), ms(flattened.Sub(pulled)), ms(cpu2-cpu1), ms(end.Sub(flattened)), ms(cpu3-cpu2))
	return end.Sub(start), phases, nil
}

// timeAnchor runs the anchor's pipeline and returns its wall time and the
// CPU time of its processes (crane and tar2sqfs, not the registry).
func timeAnchor(crane, ref, out string, level, workers int) (time.Duration, time.Duration, error) {
	script := fmt.Sprintf("set -o pipefail; %q export --platform linux/amd64 %q - | tar2sqfs -q -f -c zstd -X level=%d -j %d -b %d %q",
		crane, ref, level, workers, squashfs.DefaultBlockBytes, out)
	start := time.Now()
	cmd := exec.Command("bash", "-c", script)
	if b, err := cmd.CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("%v: %s", err, b)
	}
	return time.Since(start), cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
}

// cpuTime is the CPU time this process has used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func fileSize(p string) (int64, error) {
	st, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// words make compressible text, as in configuration, scripts and docs.
var words = []string{"the", "appliance", "service", "config", "kernel", "module", "restart", "volume", "network",
	"lib", "usr", "share", "locale", "error", "return", "value", "function", "package", "import", "static"}

func textBytes(r *rand.Rand, n int) []byte {
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
		if r.IntN(12) == 0 {
			b.WriteByte('\n')
		} else {
			b.WriteByte(' ')
		}
	}
	return b.Bytes()[:n]
}

func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// makeImage builds the benchmark image, about total bytes uncompressed:
//
//	1 base: many small text files (40%)
//	2 blobs: large incompressible files (25%), with hard links
//	3 data: medium files, half text, half random (20%)
//	4 update: whiteouts of a tenth of the base, an opaque directory,
//	  replacements of linked files (10%)
//	5 app: a few large text files (5%)
func makeImage(total int64) (v1.Image, int64, error) {
	r := rand.New(rand.NewPCG(1, 2))
	var layers [][]ocitest.Entry
	var size int64
	add := func(entries []ocitest.Entry) {
		for _, e := range entries {
			size += int64(len(e.Body))
		}
		layers = append(layers, entries)
	}

	var base []ocitest.Entry
	for i := 0; int64(i)*16<<10 < total*40/100; i++ {
		base = append(base, ocitest.Entry{Name: fmt.Sprintf("usr/share/doc/pkg%03d/file%04d.txt", i%200, i),
			Body: textBytes(r, 4<<10+r.IntN(24<<10)), Mode: 0o644})
	}
	add(base)

	var blobs []ocitest.Entry
	for i := 0; int64(i)*(2<<20) < total*25/100; i++ {
		name := fmt.Sprintf("usr/lib/blob%02d.bin", i)
		blobs = append(blobs, ocitest.Entry{Name: name, Body: randomBytes(r, 2<<20), Mode: 0o755})
		if i%4 == 0 {
			blobs = append(blobs, ocitest.Hardlink(name+".link", name))
		}
	}
	add(blobs)

	var data []ocitest.Entry
	for i := 0; int64(i)*(256<<10) < total*20/100; i++ {
		body := textBytes(r, 256<<10)
		if i%2 == 1 {
			body = randomBytes(r, 256<<10)
		}
		data = append(data, ocitest.Entry{Name: "var/lib/data/" + strconv.Itoa(i), Body: body, Mode: 0o600, UID: 1000, GID: 1000})
	}
	add(data)

	var update []ocitest.Entry
	for i := 0; i < len(base)/10; i++ {
		update = append(update, ocitest.Whiteout(fmt.Sprintf("usr/share/doc/pkg%03d", (i*10)%200), fmt.Sprintf("file%04d.txt", i*10)))
	}
	update = append(update, ocitest.Opaque("var/lib/data"))
	for i := 0; int64(i)*(512<<10) < total*10/100; i++ {
		update = append(update, ocitest.Entry{Name: fmt.Sprintf("var/lib/data/new%d", i), Body: textBytes(r, 512<<10), Mode: 0o600})
	}
	update = append(update, ocitest.Entry{Name: "usr/lib/blob00.bin", Body: []byte("replaced; the hard link keeps the old bytes\n"), Mode: 0o755})
	add(update)

	var app []ocitest.Entry
	for i := 0; int64(i)*(4<<20) < total*5/100; i++ {
		app = append(app, ocitest.Entry{Name: fmt.Sprintf("opt/app/asset%d.js", i), Body: textBytes(r, 4<<20), Mode: 0o644})
	}
	add(app)

	var vls []v1.Layer
	for _, entries := range layers {
		tarBytes, err := ocitest.Tar(entries...)
		if err != nil {
			return nil, 0, err
		}
		l, err := ocitest.NewLayer(tarBytes, gzip.DefaultCompression)
		if err != nil {
			return nil, 0, err
		}
		vls = append(vls, l)
	}
	img, err := ocitest.Image(v1.Platform{OS: "linux", Architecture: "amd64"}, v1.Config{Cmd: []string{"/opt/app/run"}}, vls...)
	return img, size, err
}
