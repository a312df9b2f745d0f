package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ingotdev/ingot/mgmt"
)

func runStatus(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	fs := newFlagSet("status", mgmtTargetUsage+" [-json]", stderr)
	mf := addMgmtFlags(fs)
	asJSON := fs.Bool("json", false, "print the agent's status as JSON")
	if err := parseArgs(fs, args, 0, "status takes no arguments"); err != nil {
		return err
	}
	var s mgmt.Status
	err := mf.call(ctx, func(ctx context.Context, c *mgmt.Client) (err error) {
		s, err = c.Status(ctx)
		return err
	})
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	return printStatus(stdout, s, time.Now())
}

func printStatus(w io.Writer, s mgmt.Status, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	release := ""
	if s.Release != 0 {
		release = fmt.Sprintf("release %d, ", s.Release)
	}
	fmt.Fprintf(tw, "appliance\t%s (%sbuild %s, %s)\n", s.Name, release, s.BuildID, s.Arch)
	fmt.Fprintf(tw, "uptime\t%s\n", s.Uptime().Round(time.Second))
	fmt.Fprintf(tw, "slot\t%s\n", describeSlot(s))
	if s.SlotState != nil && s.SlotState.LastFailed != nil {
		fmt.Fprintf(tw, "last failed\tslot %s: %s\n", s.SlotState.LastFailed.Slot, s.SlotState.LastFailed.Reason)
	}
	if s.LastUpdate != nil {
		fmt.Fprintf(tw, "last update\t%s\n", describeLastUpdate(*s.LastUpdate, now))
	}
	fmt.Fprintf(tw, "perm\t%s\n", describePerm(s.Perm))
	if s.Host != nil {
		fmt.Fprintf(tw, "host\t%s\n", describeHost(*s.Host))
	}
	if s.Clock != nil {
		fmt.Fprintf(tw, "clock\t%s\n", describeClock(*s.Clock, now))
	}
	if s.Pull != nil {
		for _, l := range pullLines(*s.Pull, now) {
			fmt.Fprintf(tw, "%s\t%s\n", l[0], l[1])
		}
	}
	if s.ShuttingDown {
		fmt.Fprintf(tw, "state\tshutting down\n")
	}
	for _, warn := range s.Warnings {
		fmt.Fprintf(tw, "warning\t%s\n", warn)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tSTATE\tPID\tRESTARTS\tSINCE\tLAST EXIT")
	for _, sv := range s.Services {
		state := string(sv.State)
		if sv.Reason != "" {
			state += " (" + sv.Reason + ")"
		}
		if h := sv.Health; h != nil {
			state += ", " + h.State
			if h.State != "healthy" && h.LastError != "" {
				state += " (" + h.LastError + ")"
			}
		}
		pid, since, last := "-", "-", "-"
		if sv.PID != 0 {
			pid = fmt.Sprint(sv.PID)
		}
		if !sv.StartedAt.IsZero() {
			since = now.Sub(sv.StartedAt).Round(time.Second).String()
		}
		if sv.LastExit != nil {
			last = fmt.Sprintf("%s after %s", sv.LastExit, sv.LastExit.Ran().Round(time.Millisecond))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", sv.Name, state, pid, sv.Restarts, since, last)
	}
	return tw.Flush()
}

func describeSlot(s mgmt.Status) string {
	var b strings.Builder
	switch {
	case s.Slot == "":
		b.WriteString("unknown (booted without the A/B loader)")
	case s.Trial:
		fmt.Fprintf(&b, "%s, trial boot (not confirmed yet)", s.Slot)
	default:
		b.WriteString(s.Slot)
	}
	switch st := s.SlotState; {
	case st == nil && s.SlotError != "":
		fmt.Fprintf(&b, "; slot.json: %s", s.SlotError)
	case st == nil:
	case st.Trial != "":
		fmt.Fprintf(&b, "; slot.json: active %s, trial %s (%d boot(s) left)", st.Active, st.Trial, st.TriesLeft)
	default:
		fmt.Fprintf(&b, "; slot.json: active %s", st.Active)
	}
	return b.String()
}

// describeLastUpdate says what the last update installed over what, when,
// and how it ended (and why, when it failed or was undone).
func describeLastUpdate(u mgmt.LastUpdate, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s into slot %s, replacing %s on slot %s; committed %s",
		u.Outcome, describeBuild(u.BuildID, u.Release), u.Slot, describeBuild(u.FromBuildID, u.FromRelease), u.FromSlot, describeTime(u.Started, now))
	if !u.Finished.IsZero() {
		fmt.Fprintf(&b, ", %s %s", u.Outcome, describeTime(u.Finished, now))
	}
	if u.Reason != "" {
		fmt.Fprintf(&b, ": %s", u.Reason)
	}
	return b.String()
}

// describeBuild names a build and its release as status prints them.
func describeBuild(id string, release uint64) string {
	if id == "" {
		id = "unknown"
	}
	if release == 0 {
		return "build " + id
	}
	return fmt.Sprintf("build %s (release %d)", id, release)
}

// describeTime prints t in UTC and how long before now it was, by this
// machine's clock.
func describeTime(t, now time.Time) string {
	return fmt.Sprintf("%s (%s ago)", t.UTC().Format(time.RFC3339), now.Sub(t).Round(time.Second))
}

func describePerm(p mgmt.PermStatus) string {
	switch {
	case !p.Mounted && p.Error != "":
		return "not mounted: " + p.Error
	case !p.Mounted:
		return "not mounted"
	case p.TotalBytes > 0:
		return fmt.Sprintf("mounted, %s of %s used", mib(p.UsedBytes), mib(p.TotalBytes))
	}
	return "mounted"
}

func describeHost(h mgmt.HostStatus) string {
	var parts []string
	if h.MemTotalBytes > 0 {
		parts = append(parts, fmt.Sprintf("memory %s of %s used", mib(h.MemTotalBytes-h.MemAvailableBytes), mib(h.MemTotalBytes)))
	}
	parts = append(parts, fmt.Sprintf("load %.2f %.2f %.2f", h.Load[0], h.Load[1], h.Load[2]))
	if h.InitRSSBytes > 0 {
		parts = append(parts, "init resident "+mib(h.InitRSSBytes))
	}
	if h.Error != "" {
		parts = append(parts, h.Error)
	}
	return strings.Join(parts, ", ")
}

// describeClock says whether NTP set the appliance's clock, from where and
// by how much, or why not; and how far its clock is from this machine's.
func describeClock(c mgmt.ClockStatus, now time.Time) string {
	var b strings.Builder
	switch {
	case len(c.Servers) == 0:
		b.WriteString("NTP off")
	case c.Synced:
		fmt.Fprintf(&b, "synced with %s, offset %s at the last sync", c.Server, seconds(c.OffsetSeconds))
		if c.Error != "" {
			fmt.Fprintf(&b, "; last poll failed: %s", c.Error)
		}
	default:
		b.WriteString("not synced")
		if c.Error != "" {
			fmt.Fprintf(&b, ": %s", c.Error)
		}
	}
	if len(c.Servers) > 0 {
		if src := describeClockSource(c.Source); src != "" {
			fmt.Fprintf(&b, "; servers %s (%s)", strings.Join(c.Servers, ", "), src)
			if len(c.Fallback) > 0 {
				fmt.Fprintf(&b, ", then %s (default)", strings.Join(c.Fallback, ", "))
			}
		}
	}
	if !c.Restored.IsZero() {
		fmt.Fprintf(&b, "; moved forward at boot to %s, saved at the last shutdown", c.Restored.UTC().Format(time.RFC3339))
	}
	if !c.Now.IsZero() {
		fmt.Fprintf(&b, "; %s (%s from this machine)", c.Now.UTC().Format(time.RFC3339), seconds(c.Now.Sub(now).Seconds()))
	}
	return b.String()
}

// describeClockSource says where the clock's servers come from; "" for
// an agent that does not say.
func describeClockSource(source string) string {
	switch source {
	case mgmt.ClockSourceConfig:
		return "from ingot.yaml"
	case mgmt.ClockSourceDHCP:
		return "from the DHCP server"
	case mgmt.ClockSourceDefault:
		return "default"
	}
	return source
}

// seconds formats a signed number of seconds as a duration, to the
// millisecond.
func seconds(s float64) string {
	return (time.Duration(s * float64(time.Second))).Round(time.Millisecond).String()
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
