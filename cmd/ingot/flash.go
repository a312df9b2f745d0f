package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/ingotdev/ingot/packer/flash"
)

const flashUsage = "-image FILE [-yes] DEVICE"

// runFlash writes an image to an SD card or USB disk (or a larger regular
// file) and grows perm to fill it.
func runFlash(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	fs := newFlagSet("flash", flashUsage, stderr)
	image := fs.String("image", "", "the image to write, as ingot build wrote it (e.g. NAME-rpi.img)")
	yes := fs.Bool("yes", false, "write without asking for confirmation (for scripts)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *image == "" || fs.NArg() != 1 {
		return usageError{"want -image FILE and one DEVICE"}
	}
	confirm := flash.Ask(os.Stdin, stdout)
	if *yes {
		confirm = func(t flash.Target, _ int64) (bool, error) {
			_, err := fmt.Fprintln(stdout, t)
			return true, err
		}
	}
	p := &progressLine{w: stderr}
	rep, err := flash.Flash(ctx, *image, fs.Arg(0), flash.WithConfirm(confirm), flash.WithProgress(p.update))
	p.end()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: wrote and verified %s (%d bytes, sha256 %s)\n", rep.Target.Path, *image, rep.ImageBytes, rep.SHA256)
	if rep.Perm.SizeBytes > 0 {
		fmt.Fprintf(stdout, "perm (partition %d) grown to %d bytes, ext4 label %q\n", rep.Perm.Partition, rep.Perm.SizeBytes, rep.Perm.Label)
	}
	return nil
}

// progressLine rewrites one status line on a terminal, at most a few
// times a second.
type progressLine struct {
	w     io.Writer
	last  time.Time
	phase flash.Phase
	shown bool
}

func (p *progressLine) update(pr flash.Progress) {
	if pr.Phase != p.phase && p.shown {
		fmt.Fprintln(p.w)
	}
	now := time.Now()
	if pr.Phase == p.phase && pr.Done < pr.Total && now.Sub(p.last) < 250*time.Millisecond {
		return
	}
	p.phase, p.last, p.shown = pr.Phase, now, true
	fmt.Fprintf(p.w, "\r%s\033[K", pr)
}

func (p *progressLine) end() {
	if p.shown {
		fmt.Fprintln(p.w)
	}
}
