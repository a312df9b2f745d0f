package builder

import (
	"context"
	"fmt"
	"path"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/builder/oci"
	"github.com/ingotdev/ingot/builder/oci/flatten"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// debugImageKey is the debug image's key among the build's images: no
// service can be named so (names start with a letter).
const debugImageKey = ".debug"

// debugShell is the debug container's command when its image has none.
var debugShell = []string{"/bin/sh"}

// pullDebugImage pulls and flattens ingot.yaml's debug: image into
// imgs[debugImageKey]: stored at spec.DebugContainerDir like an image
// service, described by appliance.json's debug, never started as a
// service. It runs as spec.DebugID whatever the image's user is.
func pullDebugImage(ctx context.Context, store *oci.Store, dbg *config.Debug, platform v1.Platform, epoch int64, p *progress, imgs map[string]*ImageService) error {
	img, err := store.Pull(ctx, dbg.Image, platform, oci.WithProgress(p))
	if err != nil {
		return fmt.Errorf("builder: %s: debug: %w", dbg.Pos, err)
	}
	tree, err := flatten.Flatten(ctx, img.Layers, flatten.WithSpoolDir(store.SpoolDir()), flatten.WithRootModTime(epoch))
	if err != nil {
		return fmt.Errorf("builder: %s: debug: image %s: %w", dbg.Pos, dbg.Image, err)
	}
	rc := oci.RunConfigOf(img.Config)
	c := spec.Container{
		Image:    dbg.Image,
		Digest:   img.Digest.String(),
		Rootfs:   spec.DebugContainerDir + "/rootfs",
		Argv:     append(append([]string(nil), rc.Entrypoint...), rc.Cmd...),
		Env:      append([]string(nil), rc.Env...),
		UID:      spec.DebugID,
		GID:      spec.DebugID,
		Hostname: spec.DebugHostname,
	}
	if len(c.Argv) == 0 {
		c.Argv = debugShell
	}
	if rc.WorkingDir != "" {
		c.WorkingDir = path.Clean("/" + rc.WorkingDir)
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("builder: %s: debug: image %s: %w", dbg.Pos, dbg.Image, err)
	}
	for _, dir := range containerMountPoints {
		if err := ensureDir(tree, dir, epoch); err != nil {
			return fmt.Errorf("builder: %s: debug: image %s: %w", dbg.Pos, dbg.Image, err)
		}
	}
	is := &ImageService{Service: "debug", Ref: dbg.Image, Digest: img.Digest.String(), Platform: img.Platform.String(),
		tree: tree, config: img.RawConfig, container: c}
	if img.IndexDigest.Hex != "" {
		is.IndexDigest = img.IndexDigest.String()
	}
	imgs[debugImageKey] = is
	return nil
}

// debugContainer is appliance.json's debug: nil without a debug image.
func (b *build) debugContainer() *spec.Container {
	is, ok := b.images[debugImageKey]
	if !ok {
		return nil
	}
	c := is.container
	return &c
}
