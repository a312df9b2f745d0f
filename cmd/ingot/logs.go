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
	fs := newFlagSet("logs", mgmtTargetUsage+" [-f | -disk] [-n N] SERVICE", stderr)
	mf := addMgmtFlags(fs)
	follow := fs.Bool("f", false, "keep printing new lines until interrupted")
	disk := fs.Bool("disk", false, "print the log kept on the perm partition across boots (earlier boots too, such as a failed trial's) instead of this boot's")
	n := fs.Int("n", -1, "print the last N lines (-1: all the appliance holds)")
	const wantService = "want exactly one SERVICE (\"init\" is ingot-init's own log)"
	service, err := parseOneArg(fs, args, wantService, wantService)
	if err != nil {
		return err
	}
	return streamLogs(ctx, stdout, mf, service, *n, *follow, *disk)
}

func streamLogs(ctx context.Context, stdout io.Writer, mf *mgmtFlags, service string, n int, follow, disk bool) error {
	if follow && disk {
		return usageError{"-f and -disk do not go together: the log on disk is read once; follow this boot's"}
	}
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
	var s *mgmt.LogStream
	if disk {
		s, err = c.DiskLogs(ctx, service, n)
	} else {
		s, err = c.Logs(ctx, service, n, follow)
	}
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
