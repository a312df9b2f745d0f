package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/ingotdev/ingot/builder"
	"github.com/ingotdev/ingot/builder/assemble"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/mgmt/push"
)

func runUpdate(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	fs := newFlagSet("update", mgmtTargetUsage+" [-no-reboot] [-release N] [-allow-downgrade] [-kernel DEB] [-cache DIR] | -from REF [-allow-downgrade] [-retry]", stderr)
	mf := addMgmtFlags(fs)
	var pf pullFlags
	fs.StringVar(&pf.from, "from", "", "install the published release REGISTRY/REPO:TAG (or @sha256:…): the appliance pulls and verifies it, nothing is built here")
	fs.BoolVar(&pf.retry, "retry", false, "with -from: install a release whose trial failed on this appliance before")
	fs.DurationVar(&pf.timeout, "pull-timeout", 30*time.Minute, "with -from: how long the appliance may take to download and install the release")
	noReboot := fs.Bool("no-reboot", false, "stage the update as the trial slot without rebooting")
	allowDowngrade := fs.Bool("allow-downgrade", false, "install a release lower than the running one (refused otherwise)")
	release := addReleaseFlag(fs)
	kernelDeb := fs.String("kernel", "", "Debian kernel .deb to use instead of the configured/default one")
	cacheDir := fs.String("cache", "", "cache for compiled binaries and unpacked kernels (default: the user cache dir)")
	wait := fs.Duration("wait", 5*time.Minute, "how long to wait for the updated appliance to confirm its trial")
	if err := parseArgs(fs, args, 0, ""); err != nil {
		return err
	}
	if pf.from != "" {
		return runUpdatePull(ctx, stdout, stderr, fs, mf, pf, *allowDowngrade, *wait)
	}
	if pf.retry {
		return usageError{"-retry goes with -from"}
	}
	cfg, err := config.Load(filepath.Join(mf.dir, config.FileName))
	if err != nil {
		return err
	}
	release.apply(cfg)
	c, err := mf.client()
	if err != nil {
		return err
	}
	defer c.Close()
	var aopts []assemble.Option
	if *kernelDeb != "" {
		aopts = append(aopts, assemble.WithBuilderOptions(builder.WithKernelDeb(*kernelDeb)))
	}
	if *cacheDir != "" {
		aopts = append(aopts, assemble.WithCacheDir(*cacheDir))
	}
	opts := []push.Option{push.WithAssembleOptions(aopts...), push.WithLog(stderr), push.WithWaitTimeout(*wait)}
	if *noReboot {
		opts = append(opts, push.WithNoReboot())
	}
	if *allowDowngrade {
		opts = append(opts, push.WithAllowDowngrade())
	}
	start := time.Now()
	rep, err := push.New(c, opts...).Update(ctx, cfg)
	if err != nil {
		return err
	}
	if *noReboot {
		fmt.Fprintf(stdout, "build %s staged on slot %s (%s pushed at %.1f MB/s); reboot to try it\n",
			rep.BuildID, rep.Slot, config.FormatSize(rep.RootBytes), rep.PushMBps())
		return nil
	}
	fmt.Fprintf(stdout, "build %s runs on slot %s, trial confirmed, in %.1fs\n", rep.BuildID, rep.Slot, time.Since(start).Seconds())
	return nil
}

func runRollback(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	fs := newFlagSet("rollback", mgmtTargetUsage+" [-no-reboot]", stderr)
	mf := addMgmtFlags(fs)
	noReboot := fs.Bool("no-reboot", false, "change slot.json only; the other slot boots at the next reboot")
	wait := fs.Duration("wait", 5*time.Minute, "how long to wait for the other slot to come up confirmed")
	if err := parseArgs(fs, args, 0, ""); err != nil {
		return err
	}
	c, err := mf.client()
	if err != nil {
		return err
	}
	defer c.Close()
	opts := []push.Option{push.WithLog(stderr), push.WithWaitTimeout(*wait)}
	if *noReboot {
		opts = append(opts, push.WithNoReboot())
	}
	st, err := push.New(c, opts...).Rollback(ctx)
	if err != nil {
		return err
	}
	if *noReboot {
		fmt.Fprintln(stdout, "rollback staged; it takes effect at the next reboot")
		return nil
	}
	fmt.Fprintf(stdout, "build %s runs on slot %s\n", st.BuildID, st.Slot)
	return nil
}
