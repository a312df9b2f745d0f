// Command ingot builds sealed single-purpose Linux appliances, boots them in
// VMs, and manages running appliances over vsock or TCP.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// command is one ingot subcommand. run parses its own flags from args and
// writes human output to stdout; errors are printed by main.
type command struct {
	summary string
	run     func(ctx context.Context, stdout, stderr io.Writer, args []string) error
}

func commands() map[string]command {
	return map[string]command{
		"squashfs":      {"pack a directory into a squashfs image", runSquashfs},
		"run":           {"boot an appliance image in a VM", runRun},
		"build":         {"build an appliance image from ingot.yaml", runBuild},
		"new":           {"scaffold a new appliance (ingot.yaml, a management token and TLS certificate)", runNew},
		"cert":          {"write the management TLS certificate of an appliance and print its pin", runCert},
		"status":        {"show a running appliance's build, slots, perm and services", runStatus},
		"metrics-token": {"print the token Prometheus sends to an appliance's metrics endpoint (read-only, derived from the management token)", runMetricsToken},
		"sbom":          {"print the SPDX bill of materials of a running appliance's image", runSBOM},
		"ui":            {"open a running appliance's web status page through a local port (prints the URL)", runUI},
		"logs":          {"print (and follow) a service's log from a running appliance", runLogs},
		"restart":       {"restart a service of a running appliance", runRestart},
		"stop":          {"stop a service of a running appliance", runStop},
		"start":         {"start a stopped service of a running appliance", runStart},
		"reboot":        {"reboot a running appliance", runReboot},
		"poweroff":      {"power off a running appliance", runPoweroff},
		"update":        {"build and install an update on a running appliance, or have it pull a release (-from) (A/B, trial boot, automatic rollback)", runUpdate},
		"rollback":      {"switch a running appliance back to its other slot", runRollback},
		"flash":         {"write an image to an SD card or USB disk, verify it and grow perm to fill it", runFlash},
		"exec":          {"run a command in a running container service (-it: with a terminal)", runExec},
		"shell":         {"open a shell in the appliance's debug container (ingot.yaml's debug:), which sees its processes", runShell},
		"key":           {"make a release signing key pair (ingot key new; cosign's file format)", runKey},
		"publish":       {"build every target and push them as one (signed) release to an OCI registry", runPublish},
		"verify":        {"check a release in an OCI registry: signature, manifests and blobs", runVerify},
		"registry-login": {
			"store (or -remove) a registry's credentials on a running appliance, for its pulled updates",
			func(ctx context.Context, stdout, stderr io.Writer, args []string) error {
				return runRegistryLogin(ctx, os.Stdin, stdout, stderr, args)
			},
		},
	}
}

// usageError marks errors caused by wrong command-line use (exit code 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runMain(ctx, os.Stdout, os.Stderr, os.Args[1:])
	stop()
	os.Exit(code)
}

func runMain(ctx context.Context, stdout, stderr io.Writer, args []string) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		printUsage(stderr, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "ingot: unknown command %q\n", args[0])
		printUsage(stderr, cmds)
		return 2
	}
	err := cmd.run(ctx, stdout, stderr, args[1:])
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	}
	var es exitStatusError
	if errors.As(err, &es) {
		// The status of the command run in the appliance (exec, shell).
		return es.code
	}
	fmt.Fprintf(stderr, "ingot %s: %v\n", args[0], err)
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

func printUsage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "usage: ingot COMMAND [flags]\n\ncommands:")
	names := make([]string, 0, len(cmds))
	for name := range cmds {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(w, "  %-10s %s\n", name, cmds[name].summary)
	}
	fmt.Fprintln(w, "\nRun 'ingot COMMAND -h' for a command's flags.")
}

// newFlagSet returns a flag set that reports errors instead of exiting and
// prints usage to stderr.
func newFlagSet(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("ingot "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: ingot %s %s\n", name, usage)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and turns flag errors into usage errors.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	return nil
}

// parseArgs parses args like parseFlags and checks that want positional
// arguments remain. wrongCount is the usage error otherwise; when it is
// empty the error quotes the arguments that were not expected.
func parseArgs(fs *flag.FlagSet, args []string, want int, wrongCount string) error {
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == want {
		return nil
	}
	if wrongCount == "" {
		return usageError{fmt.Sprintf("unexpected arguments %q", fs.Args())}
	}
	return usageError{wrongCount}
}

// parseOneArg parses args, in which flags may also follow the one
// positional argument (ingot logs web -f), and returns that argument.
// missing is the usage error without it; extra is parseArgs' wrongCount
// for arguments after it.
func parseOneArg(fs *flag.FlagSet, args []string, missing, extra string) (string, error) {
	if err := parseFlags(fs, args); err != nil {
		return "", err
	}
	if fs.NArg() == 0 {
		return "", usageError{missing}
	}
	arg := fs.Arg(0)
	if err := parseArgs(fs, fs.Args()[1:], 0, extra); err != nil {
		return "", err
	}
	return arg, nil
}
