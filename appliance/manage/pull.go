package manage

import (
	"context"
	"fmt"
	"runtime"

	"github.com/ingotdev/ingot/appliance/pull"
	"github.com/ingotdev/ingot/appliance/stage1"
	"github.com/ingotdev/ingot/appliance/update"
	"github.com/ingotdev/ingot/mgmt/release"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// newPuller returns the release puller of an image with release keys
// (update.keys), nil for one without: then a pushed root still installs.
// trial reports whether this boot is an unconfirmed trial.
func newPuller(sys *stage1.System, sp *spec.Appliance, mgr *update.Manager, trial func() bool, reboot func(context.Context) error) (*pull.Puller, error) {
	if len(sp.ReleaseKeys) == 0 {
		return nil, nil
	}
	keys, err := release.LoadPublicKeys(sp.ReleaseKeys...)
	if err != nil {
		return nil, fmt.Errorf("release keys: %w", err)
	}
	if mgr == nil {
		return nil, fmt.Errorf("release keys are configured, but updates are off: no pulls")
	}
	stateDir := ""
	if sys.Status().Perm.Mounted {
		stateDir = spec.PermPullDir
	} else {
		sys.Printf("manage: pull: no perm partition: an interrupted install starts over, and a failed release is remembered for this boot only")
	}
	return pull.New(pull.Config{
		From:     sp.UpdateFrom,
		Insecure: sp.UpdateInsecure,
		Check:    sp.UpdateCheckInterval(),
		Keys:     keys,
		Name:     sp.Name,
		Target:   sp.Target,
		Arch:     runtime.GOARCH,
		Release:  sp.Release,
		BuildID:  sp.BuildID,
		Trial:    trial,
		StateDir: stateDir,
		Slots:    mgr,
		Reboot:   reboot,
		Logf:     sys.Printf,
	})
}
