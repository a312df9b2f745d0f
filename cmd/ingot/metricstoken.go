package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/packer/format/certpin"
)

// runMetricsToken prints the metrics token of an appliance directory: the
// bearer token a Prometheus scraper sends to metrics: {auth: token}. It is
// derived from the management token and opens nothing but the metrics.
func runMetricsToken(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	fset := newFlagSet("metrics-token", "[-C DIR]", stderr)
	dir := fset.String("C", ".", "appliance directory")
	if err := parseArgs(fset, args, 0, "no arguments expected"); err != nil {
		return err
	}
	cfg, err := config.Load(filepath.Join(*dir, config.FileName))
	if err != nil {
		return err
	}
	tok, err := cfg.Token()
	if err != nil {
		return err
	}
	mt, err := certpin.MetricsToken(tok)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, mt)
	return nil
}
