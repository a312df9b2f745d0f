package push

import (
	"context"
	"fmt"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/slot"
)

// PullReport describes a release the appliance pulled on request.
type PullReport struct {
	// Result is the agent's answer: the release, its slot and where its
	// bytes came from.
	Result mgmt.PullResult
	Steps  []Step
	// Status is the agent's status once the release runs confirmed.
	Status mgmt.Status
}

// Pull asks the appliance to pull, verify and install the release req
// names (nothing is built here), then waits as Update does until the
// release answers from its slot with the trial confirmed. The appliance
// reboots into it by itself, so WithNoReboot does not apply.
func (u *Updater) Pull(ctx context.Context, req mgmt.PullRequest) (*PullReport, error) {
	u.begin()
	before, err := u.status(ctx)
	if err != nil {
		return nil, err
	}
	if !before.HasFeature(mgmt.FeatureUpdatePull) {
		return nil, fmt.Errorf("push: the agent at %s does not pull releases (its image has no update.keys, or it is older)", u.c.Target())
	}
	u.end("status", fmt.Sprintf("%s build %s on slot %s (%s)", before.Name, describeRelease(before.BuildID, before.Release), before.Slot, before.Arch))

	u.begin()
	res, err := u.c.Pull(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("push: pull %s: %w", req.Ref, err)
	}
	u.end("pull", fmt.Sprintf("release %d (%s) to slot %s: %s fetched, %s reused, %s resumed of %s",
		res.Release.Release, res.Release.Digest, res.Slot, config.FormatSize(res.BytesFetched), config.FormatSize(res.BytesReused),
		config.FormatSize(res.BytesResumed), config.FormatSize(res.BytesRoot)))
	rep := &PullReport{Result: res}
	n := slot.Name(res.Slot)
	if !n.Valid() {
		return rep, fmt.Errorf("push: pull %s: the agent committed slot %q, want a or b", req.Ref, res.Slot)
	}
	u.begin()
	if rep.Status, err = u.WaitConfirmed(ctx, before, n, res.Release.BuildID); err != nil {
		return rep, err
	}
	u.end("reboot", fmt.Sprintf("build %s answers on slot %s, trial confirmed", rep.Status.BuildID, rep.Status.Slot))
	rep.Steps = u.steps
	return rep, nil
}

// describeRelease names a build and, when set, its release.
func describeRelease(buildID string, release uint64) string {
	if release == 0 {
		return buildID
	}
	return fmt.Sprintf("%s (release %d)", buildID, release)
}
