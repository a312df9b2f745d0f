package main

import (
	"context"
	"io"

	"github.com/ingotdev/ingot/mgmt"
)

// runSBOM prints the SPDX bill of materials a running appliance was built
// with.
func runSBOM(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	fs := newFlagSet("sbom", mgmtTargetUsage, stderr)
	mf := addMgmtFlags(fs)
	if err := parseArgs(fs, args, 0, "sbom takes no arguments"); err != nil {
		return err
	}
	return mf.call(ctx, func(ctx context.Context, c *mgmt.Client) error {
		b, err := c.SBOM(ctx)
		if err != nil {
			return err
		}
		_, err = stdout.Write(b)
		return err
	})
}
