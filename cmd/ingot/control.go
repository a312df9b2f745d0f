package main

import (
	"context"
	"fmt"
	"io"

	"github.com/ingotdev/ingot/mgmt"
)

func runRestart(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	return runServiceAction(ctx, stdout, stderr, args, mgmt.ActionRestart)
}

func runStop(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	return runServiceAction(ctx, stdout, stderr, args, mgmt.ActionStop)
}

func runStart(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	return runServiceAction(ctx, stdout, stderr, args, mgmt.ActionStart)
}

func runServiceAction(ctx context.Context, stdout, stderr io.Writer, args []string, a mgmt.Action) error {
	fs := newFlagSet(string(a), mgmtTargetUsage+" SERVICE", stderr)
	mf := addMgmtFlags(fs)
	if err := parseArgs(fs, args, 1, "want exactly one SERVICE"); err != nil {
		return err
	}
	var st mgmt.ServiceStatus
	err := mf.call(ctx, func(ctx context.Context, c *mgmt.Client) (err error) {
		st, err = c.Service(ctx, fs.Arg(0), a)
		return err
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %s, now %s", st.Name, doneVerb[a], st.State)
	if st.PID != 0 {
		fmt.Fprintf(stdout, " (pid %d)", st.PID)
	}
	fmt.Fprintln(stdout)
	return nil
}

var doneVerb = map[mgmt.Action]string{
	mgmt.ActionStart:   "started",
	mgmt.ActionStop:    "stopped",
	mgmt.ActionRestart: "restarted",
}

func runReboot(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	return runPower(ctx, stdout, stderr, args, true)
}

func runPoweroff(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	return runPower(ctx, stdout, stderr, args, false)
}

func runPower(ctx context.Context, stdout, stderr io.Writer, args []string, reboot bool) error {
	name := "poweroff"
	if reboot {
		name = "reboot"
	}
	fs := newFlagSet(name, mgmtTargetUsage, stderr)
	mf := addMgmtFlags(fs)
	if err := parseArgs(fs, args, 0, name+" takes no arguments"); err != nil {
		return err
	}
	err := mf.call(ctx, func(ctx context.Context, c *mgmt.Client) error {
		if reboot {
			return c.Reboot(ctx)
		}
		return c.Poweroff(ctx)
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s accepted: the appliance stops its services and goes down\n", name)
	return nil
}
