package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/ingotdev/ingot/builder"
	"github.com/ingotdev/ingot/builder/assemble"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/packer/vdisk"
)

func runBuild(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	fs := newFlagSet("build", "[-C DIR] [-target TARGET] [-o FILE] [flags]", stderr)
	dir := fs.String("C", ".", "appliance directory holding "+config.FileName)
	targetFlag := fs.String("target", "", "target to build, or all for every target of "+config.FileName+" (default: the first in it)")
	out := fs.String("o", "", "image file to write (default: DIR/NAME-TARGET.img; not with -target all)")
	kernelDeb := fs.String("kernel", "", "Debian kernel .deb to use instead of the configured/default one")
	cacheDir := fs.String("cache", "", "cache for compiled binaries and unpacked kernels (default: the user cache dir)")
	quiet := fs.Bool("q", false, "print only the image path")
	release := addReleaseFlag(fs)
	var formats formatList
	fs.Var(&formats, "format", "disk format to write besides the raw image, beside it as NAME-TARGET.EXT; repeat for several: "+
		strings.Join(vdisk.Names(), ", ")+" (gce: disk.raw in a .tar.gz)")
	if err := parseArgs(fs, args, 0, ""); err != nil {
		return err
	}
	cfg, err := config.Load(filepath.Join(*dir, config.FileName))
	if err != nil {
		return err
	}
	release.apply(cfg)
	if *targetFlag == "all" && *out != "" {
		return usageError{"-o names one image; -target all writes DIR/NAME-TARGET.img for each target"}
	}
	targets, err := selectTargets(cfg, *targetFlag)
	if err != nil {
		return err
	}
	var opts []assemble.Option
	var bopts []builder.Option
	if *kernelDeb != "" {
		bopts = append(bopts, builder.WithKernelDeb(*kernelDeb))
	}
	if !*quiet {
		bopts = append(bopts, builder.WithProgress(stderr))
		opts = append(opts, assemble.WithProgress(stderr))
	}
	if *cacheDir != "" {
		opts = append(opts, assemble.WithCacheDir(*cacheDir))
	}
	opts = append(opts, assemble.WithFormats(formats...))
	opts = append(opts, assemble.WithBuilderOptions(bopts...))
	// Targets build one after the other: they share the build cache, so
	// targets of one architecture compile each package once, and each OCI
	// image is pulled once per platform into the shared store.
	for _, target := range targets {
		path := *out
		if path == "" {
			path = filepath.Join(*dir, cfg.Name+"-"+string(target)+".img")
		}
		rep, err := assemble.Image(ctx, cfg, target, path, opts...)
		if err != nil {
			if len(targets) > 1 {
				return fmt.Errorf("target %s: %w", target, err)
			}
			return err
		}
		if *quiet {
			fmt.Fprintln(stdout, rep.Image)
			for _, d := range rep.Disks {
				fmt.Fprintln(stdout, d)
			}
			continue
		}
		fmt.Fprintf(stdout, "%s: %s build %s, image %s (root %s)\n", rep.Image, rep.Target, rep.BuildID,
			config.FormatSize(rep.ImageBytes), config.FormatSize(rep.RootBytes))
		for _, d := range rep.Disks {
			fmt.Fprintf(stdout, "%s: the same disk, converted\n", d)
		}
	}
	return nil
}

// formatList collects repeated -format flags.
type formatList []vdisk.Format

func (l *formatList) String() string {
	n := make([]string, len(*l))
	for i, f := range *l {
		n[i] = string(f)
	}
	return strings.Join(n, ",")
}

func (l *formatList) Set(s string) error {
	f, err := vdisk.ParseFormat(s)
	if err != nil {
		return err
	}
	*l = append(*l, f)
	return nil
}

// selectTargets returns the targets of cfg that -target names: "" the
// first, "all" every one, else the one named, which cfg must list.
func selectTargets(cfg *config.Config, flag string) ([]config.Target, error) {
	switch flag {
	case "":
		return cfg.Targets[:1], nil
	case "all":
		return cfg.Targets, nil
	}
	target, err := config.ParseTarget(flag)
	if err != nil {
		return nil, usageError{err.Error()}
	}
	if !cfg.HasTarget(target) {
		return nil, fmt.Errorf("%s does not list target %s", cfg.File, target)
	}
	return []config.Target{target}, nil
}
