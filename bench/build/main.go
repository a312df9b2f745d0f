// Command build measures `ingot build` of the hello example: a cold build
// (empty Go build cache and empty ingot cache) and a warm rebuild of the
// same inputs, and reports the image and root filesystem sizes. Run it
// from the repository root: go run ./bench/build
//
// Its last line is: RESULT build cold_s=… warm_s=… image_bytes=… root_bytes=…
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ingotdev/ingot/builder/assemble"
	"github.com/ingotdev/ingot/builder/config"
)

func main() {
	dir := flag.String("C", "examples/hello", "appliance directory")
	flag.Parse()
	if err := run(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "bench/build:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	ctx := context.Background()
	cfg, err := config.Load(filepath.Join(dir, config.FileName))
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "ingot-bench-build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// A private Go build cache makes the first build really cold; the go
	// commands the builder starts inherit it.
	if err := os.Setenv("GOCACHE", filepath.Join(tmp, "gocache")); err != nil {
		return err
	}
	cache := filepath.Join(tmp, "cache")
	var times [2]time.Duration
	var rep *assemble.Report
	for i, name := range []string{"cold", "warm"} {
		out := filepath.Join(tmp, name+".img")
		start := time.Now()
		rep, err = assemble.Image(ctx, cfg, cfg.Targets[0], out, assemble.WithCacheDir(cache), assemble.WithProgress(os.Stderr))
		if err != nil {
			return err
		}
		times[i] = time.Since(start)
		fmt.Printf("%s build: %.2fs\n", name, times[i].Seconds())
	}
	fmt.Printf("RESULT build cold_s=%.2f warm_s=%.2f image_bytes=%d root_bytes=%d\n",
		times[0].Seconds(), times[1].Seconds(), rep.ImageBytes, rep.RootBytes)
	return nil
}
