package builder

import (
	"bytes"
	"context"
	"fmt"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/builder/oci"
	"github.com/ingotdev/ingot/builder/oci/flatten"
	"github.com/ingotdev/ingot/builder/sbom"
	"github.com/ingotdev/ingot/packer/format/spec"
	"github.com/ingotdev/ingot/packer/rootfs"
)

// ociStoreDir is the OCI image store inside the artifact cache.
const ociStoreDir = "oci"

// containerMountPoints are directories the container launcher mounts on
// inside an image's read-only root; the builder adds those an image
// lacks.
var containerMountPoints = []string{"/dev", "/proc", "/run", "/sys", "/tmp"}

// ImageService is an image service resolved for one target.
type ImageService struct {
	Service string `json:"service"`
	// Ref is the image as configured; Digest the manifest it resolved to
	// for the target's platform, IndexDigest the multi-platform index it
	// was chosen from (if any).
	Ref         string `json:"ref"`
	Digest      string `json:"digest"`
	IndexDigest string `json:"index_digest,omitempty"`
	Platform    string `json:"platform"`

	container spec.Container
	tree      *rootfs.Tree
	config    []byte
}

// containerDir is where an image service's files live in the root.
func containerDir(service string) string { return spec.ContainerRoot + "/" + service }

// containerDirMode is the mode of containerDir, owned by root: an image's
// files (a 0666 device node, a setuid-root program, anything writable)
// are its container's, which the launcher mounts as root; no service of
// the appliance may reach them through the appliance's root (issue 12,
// attack 5; the root is also mounted nosuid and nodev).
const containerDirMode = 0o700

// pullImages pulls and flattens every image service of cfg for target.
// It runs in the build's errgroup, beside the compiles.
func pullImages(ctx context.Context, cfg *config.Config, target config.Target, o *options, epoch int64, p *progress) (map[string]*ImageService, error) {
	out := map[string]*ImageService{}
	var svcs []*config.Service
	for i := range cfg.Services {
		if cfg.Services[i].Image != "" {
			svcs = append(svcs, &cfg.Services[i])
		}
	}
	if len(svcs) == 0 && cfg.Debug == nil {
		return out, nil
	}
	store, err := oci.OpenStore(filepath.Join(o.cacheDir, ociStoreDir))
	if err != nil {
		return nil, fmt.Errorf("builder: %w", err)
	}
	platform, err := oci.PlatformForArch(target.Arch())
	if err != nil {
		return nil, fmt.Errorf("builder: target %s: %w", target, err)
	}
	for _, s := range svcs {
		img, err := store.Pull(ctx, s.Image, platform, oci.WithProgress(p))
		if err != nil {
			return nil, fmt.Errorf("builder: %s: service %q: %w", s.Pos, s.Name, err)
		}
		tree, err := flatten.Flatten(ctx, img.Layers, flatten.WithSpoolDir(store.SpoolDir()), flatten.WithRootModTime(epoch))
		if err != nil {
			return nil, fmt.Errorf("builder: %s: service %q: image %s: %w", s.Pos, s.Name, s.Image, err)
		}
		is := &ImageService{Service: s.Name, Ref: s.Image, Digest: img.Digest.String(), Platform: img.Platform.String(),
			tree: tree, config: img.RawConfig}
		if img.IndexDigest.Hex != "" {
			is.IndexDigest = img.IndexDigest.String()
		}
		if is.container, err = containerSpec(s, img, tree); err != nil {
			return nil, fmt.Errorf("builder: %s: service %q: image %s: %w", s.Pos, s.Name, s.Image, err)
		}
		for _, dir := range append(append([]string(nil), containerMountPoints...), volumeTargets(is.container.Volumes)...) {
			if err := ensureDir(tree, dir, epoch); err != nil {
				return nil, fmt.Errorf("builder: %s: service %q: image %s: %w", s.Pos, s.Name, s.Image, err)
			}
		}
		out[s.Name] = is
	}
	if cfg.Debug != nil {
		if err := pullDebugImage(ctx, store, cfg.Debug, platform, epoch, p, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// containerSpec merges the image config with ingot.yaml: entrypoint:
// replaces the image's entrypoint and drops its cmd, args: replaces the
// cmd; env: follows the image env (later entries win); user: (else the
// image's user) is resolved in the image's /etc/passwd and /etc/group.
func containerSpec(s *config.Service, img *oci.Image, tree *rootfs.Tree) (spec.Container, error) {
	rc := oci.RunConfigOf(img.Config)
	entrypoint, cmd := rc.Entrypoint, rc.Cmd
	if s.Entrypoint != nil {
		entrypoint, cmd = s.Entrypoint, nil
	}
	if s.Args != nil {
		cmd = s.Args
	}
	c := spec.Container{
		Image:        s.Image,
		Digest:       img.Digest.String(),
		Rootfs:       containerDir(s.Name) + "/rootfs",
		Argv:         append(append([]string(nil), entrypoint...), cmd...),
		Env:          append([]string(nil), rc.Env...),
		Hostname:     s.Name,
		Privileged:   s.Privileged,
		ExposedPorts: rc.ExposedPorts,
	}
	if rc.WorkingDir != "" {
		c.WorkingDir = path.Clean("/" + rc.WorkingDir)
	}
	keys := make([]string, 0, len(s.Env))
	for k := range s.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		c.Env = append(c.Env, k+"="+s.Env[k])
	}
	user := rc.User
	if s.User != "" {
		user = s.User
	}
	u, err := oci.ResolveUser(tree, user)
	if err != nil {
		return c, err
	}
	c.UID, c.GID, c.AdditionalGIDs = u.UID, u.GID, u.AdditionalGIDs
	c.Volumes = s.Volumes
	if err := c.Validate(); err != nil {
		return c, err
	}
	return c, nil
}

func volumeTargets(vs []spec.Volume) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.Target)
	}
	return out
}

// ensureDir creates dir in an image tree when missing. A component that
// exists as something else (a symlink, say /run -> /var/run) is left for
// the launcher, which resolves it inside the container.
func ensureDir(t *rootfs.Tree, dir string, epoch int64) error {
	parts, err := rootfs.SplitPath(dir)
	if err != nil {
		return err
	}
	cur := "/"
	for _, name := range parts {
		cur = rootfs.Join(cur, name)
		e, ok := t.Get(cur)
		if !ok {
			return t.MkdirAll(dir, 0o755, epoch)
		}
		if e.Kind != rootfs.KindDir {
			return nil
		}
	}
	return nil
}

// addImages puts each image service's flattened tree and config into the
// root at ContainerRoot/<service>.
func addImages(t *rootfs.Tree, cfg *config.Config, imgs map[string]*ImageService, modTime int64) error {
	names := make([]string, 0, len(cfg.Services)+1)
	for _, s := range cfg.Services {
		names = append(names, s.Name)
	}
	// The debug image (ingot.yaml's debug:), at spec.DebugContainerDir.
	names = append(names, debugImageKey)
	for _, name := range names {
		is, ok := imgs[name]
		if !ok {
			continue
		}
		dir := containerDir(name)
		if err := t.MkdirAll(spec.ContainerRoot, 0o755, modTime); err != nil {
			return err
		}
		if err := t.Add(dir, rootfs.Entry{Kind: rootfs.KindDir, Mode: containerDirMode, ModTime: modTime}); err != nil {
			return err
		}
		if err := t.Add(dir+"/config.json", rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o644, ModTime: modTime,
			Size: int64(len(is.config)), Content: rootfs.Bytes(is.config)}); err != nil {
			return err
		}
		if err := graft(t, is.container.Rootfs, is.tree); err != nil {
			return fmt.Errorf("service %q: %w", name, err)
		}
	}
	return nil
}

// graft copies src into dst below the new directory at.
func graft(dst *rootfs.Tree, at string, src *rootfs.Tree) error {
	return src.Walk(func(p string, e *rootfs.Entry) error {
		if p == "/" {
			if err := dst.MkdirAll(at, e.Mode, e.ModTime); err != nil {
				return err
			}
			return dst.Replace(at, *e)
		}
		c := *e
		if c.Kind == rootfs.KindHardlink {
			c.Target = at + c.Target
		}
		return dst.Add(at+p, c)
	})
}

// sbomJSON lists the Go programs (from their embedded build information)
// and the images of the build.
func sbomJSON(r *Result, bins map[string][]byte, imgs []ImageService) ([]byte, error) {
	var gbs []sbom.GoBinary
	for _, b := range r.Binaries {
		name := b.Service
		if name == "" {
			name = path.Base(b.Package) // ingot-init, ingot-stage0
		}
		data := bins[b.Path]
		gb, err := sbom.GoBinaryFrom(name, b.Path, bytes.NewReader(data))
		if err != nil {
			// Not a Go binary (a stand-in in tests): list it by digest.
			gb = sbom.GoBinary{Name: name, Path: b.Path, SHA256: b.SHA256}
		}
		gbs = append(gbs, gb)
	}
	var ims []sbom.Image
	for _, is := range imgs {
		ims = append(ims, sbom.Image{Name: is.Service, Ref: is.Ref, Digest: is.Digest, Platform: is.Platform})
	}
	b, err := sbom.New(r.Name, r.ModTime, gbs, ims).Marshal()
	if err != nil {
		return nil, fmt.Errorf("builder: %w", err)
	}
	return b, nil
}

// imageList orders the image services as the config does.
func imageList(cfg *config.Config, imgs map[string]*ImageService) []ImageService {
	var out []ImageService
	for _, s := range cfg.Services {
		if is, ok := imgs[s.Name]; ok {
			out = append(out, *is)
		}
	}
	if is, ok := imgs[debugImageKey]; ok {
		out = append(out, *is)
	}
	return out
}

// String names the image for progress lines.
func (is ImageService) String() string {
	return strings.Join([]string{is.Service, is.Ref, is.Digest, is.Platform}, " ")
}

// Write lets the image puller print through the build's progress, one
// line per call.
func (p *progress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.w.Write(b)
}
