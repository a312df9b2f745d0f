package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/ingotdev/ingot/mgmt"
)

// logTimeLayout is the local time printed before each line.
const logTimeLayout = "2006-01-02 15:04:05.000"

func runLogs(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	fs := newFlagSet("logs", mgmtTargetUsage+" [-f] [-n N] SERVICE", stderr)
	mf := addMgmtFlags(fs)
	follow := fs.Bool("f", false, "keep printing new lines until interrupted")
	n := fs.Int("n", -1, "print the last N lines (-1: all the appliance holds)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	// Flags may also follow the service name: ingot logs web -f.
	if fs.NArg() > 1 {
		service := fs.Arg(0)
		if err := parseFlags(fs, fs.Args()[1:]); err != nil {
			return err
		}
		if fs.NArg() != 0 {
			return usageError{"want exactly one SERVICE (\"init\" is ingot-init's own log)"}
		}
		return streamLogs(ctx, stdout, mf, service, *n, *follow)
	}
	if fs.NArg() != 1 {
		return usageError{"want exactly one SERVICE (\"init\" is ingot-init's own log)"}
	}
	return streamLogs(ctx, stdout, mf, fs.Arg(0), *n, *follow)
}

func streamLogs(ctx context.Context, stdout io.Writer, mf *mgmtFlags, service string, n int, follow bool) error {
	c, err := mf.client()
	if err != nil {
		return err
	}
	defer c.Close()
	if !follow {
		var cancel context.CancelFunc
		ctx, cancel = mf.withTimeout(ctx)
		defer cancel()
	}
	s, err := c.Logs(ctx, service, n, follow)
	if err != nil {
		return err
	}
	defer s.Close()
	for {
		l, err := s.Next()
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil && follow && ctx.Err() != nil:
			return nil // interrupted: the normal end of a follow
		case err != nil:
			return err
		}
		if _, err := fmt.Fprintln(stdout, formatLogLine(l)); err != nil {
			return err
		}
	}
}

func formatLogLine(l mgmt.LogLine) string {
	ts := l.Time.Local().Format(logTimeLayout)
	if l.Stream == mgmt.StreamStdout {
		return ts + " " + l.Text
	}
	return ts + " [" + l.Stream + "] " + l.Text
}
