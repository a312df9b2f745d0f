package builder

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/builder/oci/ocitest"
	"github.com/ingotdev/ingot/packer/format/spec"
	"github.com/ingotdev/ingot/packer/rootfs"
)

// TestBuildDebugImage: ingot.yaml's debug: is flattened at
// spec.DebugContainerDir (root only, like an image service), described as
// appliance.json's debug (running as spec.DebugID whatever the image
// says), listed in build.json, and not a service.
func TestBuildDebugImage(t *testing.T) {
	reg := ocitest.NewRegistry()
	defer reg.Close()
	ref := reg.Host + "/web:1"
	_, imgs := pushWeb(t, ref)
	cfg := testConfig(t, "  - name: hello\n    go: ./cmd/hello", fmt.Sprintf("debug: {image: %s}", ref))
	r, err := Build(context.Background(), cfg, config.TargetVMAmd64, testOptions(t, t.TempDir())...)
	if err != nil {
		t.Fatalf("Build = %v", err)
	}
	want := &spec.Container{
		Image: ref, Digest: mustDigest(t, imgs["amd64"]), Rootfs: "/oci/.debug/rootfs",
		Argv: []string{"/bin/app", "--serve"}, Env: []string{"PATH=/bin", "A=1"}, WorkingDir: "/srv",
		UID: spec.DebugID, GID: spec.DebugID, Hostname: "debug",
	}
	if diff := cmp.Diff(want, r.Appliance.Debug); diff != "" {
		t.Errorf("appliance.json debug (-want +got):\n%s", diff)
	}
	for _, s := range r.Appliance.Services {
		if s.Container != nil {
			t.Errorf("service %q runs an image; the debug image must not be a service", s.Name)
		}
	}
	if got := string(readEntry(t, r.Root, "/oci/.debug/rootfs/bin/app")); got != "app for linux/amd64" {
		t.Errorf("/oci/.debug/rootfs/bin/app = %q", got)
	}
	for p, kind := range map[string]rootfs.Kind{"/oci/.debug/rootfs/proc": rootfs.KindDir, "/oci/.debug/config.json": rootfs.KindFile} {
		if e, ok := r.Root.Get(p); !ok || e.Kind != kind {
			t.Errorf("%s is %v (%v), want a %v", p, e.Kind, ok, kind)
		}
	}
	if e, ok := r.Root.Get("/oci/.debug"); !ok || e.Mode != 0o700 || e.UID != 0 {
		t.Errorf("/oci/.debug mode %#o uid %d (%v), want 0700 root's", e.Mode, e.UID, ok)
	}
	if len(r.Images) != 1 || r.Images[0].Service != "debug" || r.Images[0].Ref != ref {
		t.Errorf("build images %+v, want the debug image", r.Images)
	}
}
