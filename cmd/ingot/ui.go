package main

import (
	"context"
	"fmt"
	"io"
	"net"

	"github.com/ingotdev/ingot/mgmt/uiproxy"
)

func runUI(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	fs := newFlagSet("ui", mgmtTargetUsage+" [-listen 127.0.0.1:0]", stderr)
	mf := addMgmtFlags(fs)
	listen := fs.String("listen", "127.0.0.1:0", "loopback address for the browser (port 0: any free port)")
	if err := parseArgs(fs, args, 0, "ui takes no arguments"); err != nil {
		return err
	}
	if err := uiproxy.CheckLoopback(*listen); err != nil {
		return usageError{"-listen: " + err.Error()}
	}
	c, err := mf.client()
	if err != nil {
		return err
	}
	defer c.Close()
	// Check the way to the agent once, so a wrong target or token shows
	// here and not as a broken page.
	dctx, cancel := mf.withTimeout(ctx)
	conn, err := c.Dial(dctx)
	cancel()
	if err != nil {
		return err
	}
	conn.Close()
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	fmt.Fprintf(stdout, "http://%s/\n", l.Addr())
	fmt.Fprintf(stderr, "ingot ui: forwarding to %s; log in on the page with the management token. Ctrl-C stops.\n", c.Target())
	return uiproxy.Serve(ctx, l, c.Dial, func(format string, args ...any) {
		fmt.Fprintf(stderr, "ingot ui: "+format+"\n", args...)
	})
}
