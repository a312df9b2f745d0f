// Command squashfs benchmarks ingot's squashfs writer against mksquashfs:
// it packs a copy of GOROOT with both, at zstd level 3 and gzip level 6,
// all cores, the same block size, and prints sizes, times and a final
// line
//
//	RESULT squashfs zstd_time_ratio=… zstd_size_ratio=… gzip_time_ratio=… gzip_size_ratio=…
//
// where each ratio is ours / mksquashfs. Our time includes loading the
// tree from disk, as mksquashfs's includes its directory scan.
//
// Runs of the two tools alternate and the fastest of each counts, which
// keeps other load on the machine from favouring either. Outputs go to
// $TMPDIR; TMPDIR=/dev/shm takes the disk out of the measurement.
//
// Usage: go run ./bench/squashfs [-src DIR] [-runs N] [-cpuprofile FILE]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/ingotdev/ingot/packer/rootfs"
	"github.com/ingotdev/ingot/packer/squashfs"
)

type config struct {
	name  string
	comp  squashfs.Compression
	level int
}

var configs = []config{
	{"zstd", squashfs.Zstd, 3},
	{"gzip", squashfs.Gzip, 6},
}

func main() {
	src := flag.String("src", "", "tree to pack (default: a fresh copy of GOROOT)")
	runs := flag.Int("runs", 5, "runs per tool and compressor; the fastest counts")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of our zstd runs to this file")
	flag.Parse()
	if err := run(*src, *runs, *cpuProfile); err != nil {
		fmt.Fprintln(os.Stderr, "bench/squashfs:", err)
		os.Exit(1)
	}
}

func run(src string, runs int, cpuProfile string) error {
	work, err := os.MkdirTemp("", "bench-squashfs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if src == "" {
		goroot, err := exec.Command("go", "env", "GOROOT").Output()
		if err != nil {
			return fmt.Errorf("go env GOROOT: %w", err)
		}
		src = filepath.Join(work, "goroot")
		// A copy on the same filesystem as the outputs, warm in the page
		// cache for both tools alike.
		if out, err := exec.Command("cp", "-a", strings.TrimSpace(string(goroot)), src).CombinedOutput(); err != nil {
			return fmt.Errorf("copy GOROOT: %v: %s", err, out)
		}
	}
	fmt.Printf("tree %s, %d cores, block size %d\n", src, runtime.NumCPU(), squashfs.DefaultBlockBytes)
	var result []string
	for _, c := range configs {
		oursOut := filepath.Join(work, "ours-"+c.name+".sqfs")
		theirsOut := filepath.Join(work, "mksquashfs-"+c.name+".sqfs")
		var oursTime, theirsTime time.Duration
		for i := range runs {
			profile := ""
			if i == 0 && c.comp == squashfs.Zstd {
				profile = cpuProfile
			}
			d, err := timeOurs(src, oursOut, c, profile)
			if err != nil {
				return err
			}
			if i == 0 || d < oursTime {
				oursTime = d
			}
			d2, err := timeMksquashfs(src, theirsOut, c)
			if err != nil {
				return err
			}
			if i == 0 || d2 < theirsTime {
				theirsTime = d2
			}
			fmt.Printf("  %s run %d: ours %v, mksquashfs %v\n", c.name, i+1, d.Round(time.Millisecond), d2.Round(time.Millisecond))
		}
		oursSize, err := fileSize(oursOut)
		if err != nil {
			return err
		}
		theirsSize, err := fileSize(theirsOut)
		if err != nil {
			return err
		}
		fmt.Printf("%s level %d: ours %d bytes in %v, mksquashfs %d bytes in %v\n",
			c.name, c.level, oursSize, oursTime.Round(time.Millisecond), theirsSize, theirsTime.Round(time.Millisecond))
		result = append(result,
			fmt.Sprintf("%s_time_ratio=%.3f", c.name, oursTime.Seconds()/theirsTime.Seconds()),
			fmt.Sprintf("%s_size_ratio=%.3f", c.name, float64(oursSize)/float64(theirsSize)))
	}
	fmt.Println("RESULT squashfs " + strings.Join(result, " "))
	return nil
}

func timeOurs(src, out string, c config, cpuProfile string) (time.Duration, error) {
	if cpuProfile != "" {
		pf, err := os.Create(cpuProfile)
		if err != nil {
			return 0, err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return 0, err
		}
		defer pprof.StopCPUProfile()
	}
	start := time.Now()
	tree, err := rootfs.FromDir(src)
	if err != nil {
		return 0, err
	}
	f, err := os.Create(out)
	if err != nil {
		return 0, err
	}
	err = squashfs.Write(context.Background(), f, tree,
		squashfs.WithCompression(c.comp), squashfs.WithLevel(c.level),
		squashfs.WithBlockSize(squashfs.DefaultBlockBytes), squashfs.WithWorkers(runtime.NumCPU()))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("ours, %s: %w", c.name, err)
	}
	return time.Since(start), nil
}

func timeMksquashfs(src, out string, c config) (time.Duration, error) {
	start := time.Now()
	cmd := exec.Command("mksquashfs", src, out, "-noappend", "-quiet", "-no-progress",
		"-comp", c.name, "-Xcompression-level", strconv.Itoa(c.level),
		"-b", strconv.Itoa(squashfs.DefaultBlockBytes))
	if b, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("mksquashfs, %s: %v: %s", c.name, err, b)
	}
	return time.Since(start), nil
}

func fileSize(path string) (int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}
