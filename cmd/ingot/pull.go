package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/mgmt/push"
)

// Pulled updates from the CLI's side: `ingot update -from REF` (the
// appliance pulls, nothing is built here), `ingot registry-login`, and the
// pull state in `ingot status`.

// pullFlags are the flags of `ingot update -from`.
type pullFlags struct {
	from    string
	retry   bool
	timeout time.Duration
}

// runUpdatePull asks the appliance to pull pf.from now and waits for its
// confirmed trial.
func runUpdatePull(ctx context.Context, stdout, stderr io.Writer, fs *flag.FlagSet, mf *mgmtFlags, pf pullFlags, allowDowngrade bool, wait time.Duration) error {
	// `ingot update`'s flags that build or push, which -from does not do.
	var conflict []string
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "no-reboot", "release", "kernel", "cache":
			conflict = append(conflict, "-"+f.Name)
		}
	})
	if len(conflict) > 0 {
		return usageError{fmt.Sprintf("-from installs a published release; %s build or push one and do not go with it", strings.Join(conflict, ", "))}
	}
	req := mgmt.PullRequest{Ref: pf.from, AllowDowngrade: allowDowngrade, Retry: pf.retry}
	if err := req.Validate(); err != nil {
		return usageError{fmt.Sprintf("-from %q: %v", pf.from, err)}
	}
	c, err := mf.client()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, pf.timeout+wait)
	defer cancel()
	start := time.Now()
	rep, err := push.New(c, push.WithLog(stderr), push.WithWaitTimeout(wait)).Pull(ctx, req)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s runs on slot %s, trial confirmed, in %.1fs (%s)\n",
		describeReleaseInfo(rep.Result.Release), rep.Status.Slot, time.Since(start).Seconds(), describeBytes(rep.Result))
	return nil
}

// describeBytes says where a pulled root's bytes came from.
func describeBytes(r mgmt.PullResult) string {
	return fmt.Sprintf("root %s: %s fetched, %s reused from the running slot, %s resumed",
		mib(r.BytesRoot), mib(r.BytesFetched), mib(r.BytesReused), mib(r.BytesResumed))
}

// maxPasswordBytes bounds what registry-login reads from stdin.
const maxPasswordBytes = mgmt.MaxPullBodyBytes / 2

func runRegistryLogin(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer, args []string) error {
	fs := newFlagSet("registry-login", mgmtTargetUsage+" (-u USER -password-stdin | -remove) REGISTRY", stderr)
	mf := addMgmtFlags(fs)
	user := fs.String("u", "", "user name at the registry")
	passwordStdin := fs.Bool("password-stdin", false, "read the password (or access token) from standard input")
	remove := fs.Bool("remove", false, "remove the registry's credentials from the appliance")
	registry, err := parseOneArg(fs, args, "registry-login needs the registry, HOST or HOST:PORT", "")
	if err != nil {
		return err
	}
	auth := mgmt.RegistryAuth{Registry: registry}
	switch {
	case *remove && (*user != "" || *passwordStdin):
		return usageError{"-remove takes neither -u nor -password-stdin"}
	case *remove:
	case *user == "" || !*passwordStdin:
		return usageError{"give -u USER and the password on standard input with -password-stdin (never as an argument), or -remove"}
	default:
		b, err := io.ReadAll(io.LimitReader(stdin, maxPasswordBytes+1))
		if err != nil {
			return fmt.Errorf("reading the password from standard input: %w", err)
		}
		if len(b) > maxPasswordBytes {
			return fmt.Errorf("the password on standard input is over %d bytes", maxPasswordBytes)
		}
		pw := string(bytes.TrimRight(b, "\r\n"))
		if pw == "" {
			return fmt.Errorf("no password on standard input")
		}
		auth.Username, auth.Password = *user, pw
	}
	if err := auth.Validate(); err != nil {
		return usageError{err.Error()}
	}
	err = mf.call(ctx, func(ctx context.Context, c *mgmt.Client) error { return c.SetRegistryAuth(ctx, auth) })
	if err != nil {
		return err
	}
	if auth.Remove() {
		fmt.Fprintf(stdout, "%s: credentials removed\n", auth.Registry)
	} else {
		fmt.Fprintf(stdout, "%s: credentials of %s stored on the appliance\n", auth.Registry, auth.Username)
	}
	return nil
}

// describeReleaseInfo names a release: its number, build and digest.
func describeReleaseInfo(r mgmt.ReleaseInfo) string {
	s := fmt.Sprintf("release %d", r.Release)
	if r.BuildID != "" {
		s += " (build " + r.BuildID + ")"
	}
	if r.Digest != "" {
		s += " " + r.Digest
	}
	return s
}

// describeWhen prints t in UTC and how far from now it is, by this
// machine's clock, in the past or the future.
func describeWhen(t, now time.Time) string {
	if t.After(now) {
		return fmt.Sprintf("%s (in %s)", t.UTC().Format(time.RFC3339), t.Sub(now).Round(time.Second))
	}
	return describeTime(t, now)
}

// pullLines are the rows of `ingot status` about the release puller.
func pullLines(p mgmt.PullStatus, now time.Time) [][2]string {
	var out [][2]string
	var sched string
	if p.From == "" {
		sched = "only when asked (ingot update -from REF); no update.from"
	} else {
		sched = fmt.Sprintf("from %s every %s", p.From, time.Duration(p.CheckSeconds*float64(time.Second)).Round(time.Second))
		if !p.LastCheck.IsZero() {
			sched += "; last check " + describeWhen(p.LastCheck, now)
		} else {
			sched += "; not checked yet"
		}
		if p.LastCheckError != "" {
			sched += ": " + p.LastCheckError
		}
		if !p.NextCheck.IsZero() {
			sched += "; next check " + describeWhen(p.NextCheck, now)
		}
	}
	out = append(out, [2]string{"pull", sched})
	if p.Available != nil {
		out = append(out, [2]string{"available", describeReleaseInfo(*p.Available) + " at " + p.Available.Ref})
	}
	if p.Running != nil {
		out = append(out, [2]string{"pulled", describeReleaseInfo(*p.Running) + " runs, from " + p.Running.Ref})
	}
	if g := p.Progress; g != nil {
		s := fmt.Sprintf("%s: %s", describeReleaseInfo(g.Release), g.Phase)
		if g.BytesRoot > 0 {
			s += fmt.Sprintf(", %s of %s (%.0f%%; %s fetched, %s reused, %s resumed)",
				mib(g.BytesDone), mib(g.BytesRoot), 100*float64(g.BytesDone)/float64(g.BytesRoot),
				mib(g.BytesFetched), mib(g.BytesReused), mib(g.BytesResumed))
		}
		if !g.Started.IsZero() {
			s += ", started " + describeWhen(g.Started, now)
		}
		out = append(out, [2]string{"installing", s})
	}
	if f := p.LastFailure; f != nil {
		what := f.Ref
		if f.Release != 0 {
			what = fmt.Sprintf("release %d %s", f.Release, f.Digest)
		} else if f.Digest != "" {
			what = strings.TrimSpace(f.Ref + " " + f.Digest)
		}
		out = append(out, [2]string{"pull failed", fmt.Sprintf("%s, %s: %s", what, describeWhen(f.At, now), f.Reason)})
	}
	if len(p.FailedDigests) > 0 {
		out = append(out, [2]string{"not retried", strings.Join(p.FailedDigests, ", ") + " (their trials failed here; ingot update -from REF -retry)"})
	}
	return out
}
