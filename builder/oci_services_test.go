package builder

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"path"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/builder/oci"
	"github.com/ingotdev/ingot/builder/oci/ocitest"
	"github.com/ingotdev/ingot/builder/sbom"
	"github.com/ingotdev/ingot/packer/format/spec"
	"github.com/ingotdev/ingot/packer/rootfs"
)

// webImage is a two-layer image for p: a base with accounts, a program,
// a world-writable block device node and a setuid-root program (which
// must stay out of the appliance's reach) and a file the second layer
// whites out, then an upgrade that replaces the program, which a hard
// link still names.
func webImage(t *testing.T, p v1.Platform) v1.Image {
	t.Helper()
	base, err := ocitest.LayerOf(
		ocitest.File("etc/passwd", "root:x:0:0::/root:/bin/sh\nwww:x:33:33::/srv:/bin/false\n"),
		ocitest.File("etc/group", "root:x:0:\nwww:x:33:\nlog:x:4:www\n"),
		ocitest.File("bin/app", "old app"),
		ocitest.Hardlink("bin/app-old", "bin/app"),
		ocitest.File("srv/obsolete", "x"),
		ocitest.Entry{Name: "dev/vda", Type: tar.TypeBlock, Mode: 0o666},
		ocitest.Entry{Name: "bin/su", Body: []byte("setuid root"), Mode: 0o4755},
	)
	if err != nil {
		t.Fatal(err)
	}
	upgrade, err := ocitest.LayerOf(
		ocitest.File("bin/app", "app for "+p.String()),
		ocitest.Whiteout("srv", "obsolete"),
		ocitest.Symlink("run", "var/run"),
	)
	if err != nil {
		t.Fatal(err)
	}
	img, err := ocitest.Image(p, v1.Config{
		Entrypoint:   []string{"/bin/app"},
		Cmd:          []string{"--serve"},
		Env:          []string{"PATH=/bin", "A=1"},
		WorkingDir:   "/srv",
		User:         "www",
		ExposedPorts: map[string]struct{}{"8080/tcp": {}},
	}, base, upgrade)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// pushWeb serves webImage for every platform ingot builds as one index
// and returns the index and the image per GOARCH.
func pushWeb(t *testing.T, ref string) (v1.ImageIndex, map[string]v1.Image) {
	t.Helper()
	imgs := map[string]v1.Image{}
	var list []v1.Image
	for _, arch := range []string{"amd64", "arm64", "arm"} {
		p, err := oci.PlatformForArch(arch)
		if err != nil {
			t.Fatal(err)
		}
		imgs[arch] = webImage(t, p)
		list = append(list, imgs[arch])
	}
	idx, err := ocitest.Index(list...)
	if err != nil {
		t.Fatal(err)
	}
	if err := ocitest.Push(ref, idx); err != nil {
		t.Fatal(err)
	}
	return idx, imgs
}

func mustDigest(t *testing.T, x interface{ Digest() (v1.Hash, error) }) string {
	t.Helper()
	h, err := x.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

func TestBuildImageService(t *testing.T) {
	reg := ocitest.NewRegistry()
	defer reg.Close()
	ref := reg.Host + "/web:1"
	idx, imgs := pushWeb(t, ref)
	cfg := testConfig(t, fmt.Sprintf(`  - name: hello
    go: ./cmd/hello
    resources: {pids: 10}
  - name: web
    image: %s
    env: {A: "2", B: x}
    volumes: ["/perm/web:/data"]
    resources: {memory: 64Mi, cpu: "0.5", pids: 100}
    after: [hello]`, ref))
	cache := t.TempDir()
	for _, target := range []config.Target{config.TargetVMAmd64, config.TargetVMArm64, config.TargetRPiArmv7} {
		t.Run(string(target), func(t *testing.T) {
			r, err := Build(context.Background(), cfg, target, testOptions(t, cache)...)
			if err != nil {
				t.Fatalf("Build = %v", err)
			}
			platform, _ := oci.PlatformForArch(target.Arch())
			wantDigest := mustDigest(t, imgs[target.Arch()])
			for p, want := range map[string]string{
				"/oci/web/rootfs/bin/app":     "app for " + platform.String(),
				"/oci/web/rootfs/bin/app-old": "old app",
			} {
				if got := string(readEntry(t, r.Root, p)); got != want {
					t.Errorf("Build(%s): %s = %q, want %q", target, p, got, want)
				}
			}
			for p, kind := range map[string]rootfs.Kind{
				"/oci/web/rootfs/proc": rootfs.KindDir, "/oci/web/rootfs/tmp": rootfs.KindDir,
				"/oci/web/rootfs/data": rootfs.KindDir, "/oci/web/rootfs/run": rootfs.KindSymlink,
				"/oci/web/config.json": rootfs.KindFile,
			} {
				if e, ok := r.Root.Get(p); !ok || e.Kind != kind {
					t.Errorf("Build(%s): %s is %v (%v), want a %v", target, p, e.Kind, ok, kind)
				}
			}
			checkImageFilesRootOnly(t, r.Root)
			if _, ok := r.Root.Get("/oci/web/rootfs/srv/obsolete"); ok {
				t.Errorf("Build(%s): whited-out file present", target)
			}
			var cf v1.ConfigFile
			if err := json.Unmarshal(readEntry(t, r.Root, "/oci/web/config.json"), &cf); err != nil || cf.Config.User != "www" {
				t.Errorf("Build(%s): config.json = %+v, %v", target, cf.Config, err)
			}

			web := r.Appliance.Services[1]
			wantWeb := spec.Service{
				Name: "web", Path: "/init", Args: []string{spec.ContainerSubcommand, "web"}, Restart: spec.RestartAlways,
				After: []string{"hello"}, User: "root", NeedsPerm: true, LogBufferBytes: spec.DefaultLogBufferBytes,
				GraceSeconds: 10, Resources: spec.Resources{MemoryBytes: 64 << 20, CPUMillis: 500, Pids: 100},
				Container: &spec.Container{
					Image: ref, Digest: wantDigest, Rootfs: "/oci/web/rootfs",
					Argv: []string{"/bin/app", "--serve"}, Env: []string{"PATH=/bin", "A=1", "A=2", "B=x"},
					WorkingDir: "/srv", UID: 33, GID: 33, AdditionalGIDs: []uint32{4}, Hostname: "web",
					Volumes: []spec.Volume{{Source: "/perm/web", Target: "/data"}}, ExposedPorts: []string{"8080/tcp"},
				},
			}
			if diff := cmp.Diff(wantWeb, web); diff != "" {
				t.Errorf("Build(%s): web service (-want +got):\n%s", target, diff)
			}
			if got := r.Appliance.Services[0].Resources; got != (spec.Resources{Pids: 10}) {
				t.Errorf("Build(%s): hello resources = %+v, want pids 10", target, got)
			}
			var info BuildInfo
			if err := json.Unmarshal(readEntry(t, r.Root, BuildInfoPath), &info); err != nil {
				t.Fatal(err)
			}
			wantImages := []ImageService{{Service: "web", Ref: ref, Digest: wantDigest, IndexDigest: mustDigest(t, idx), Platform: platformString(t, imgs[target.Arch()])}}
			if diff := cmp.Diff(wantImages, info.Images, cmp.AllowUnexported(ImageService{}), cmp.FilterPath(func(p cmp.Path) bool {
				return strings.Contains(p.String(), "container") || strings.Contains(p.String(), "tree") || strings.Contains(p.String(), "config")
			}, cmp.Ignore())); diff != "" {
				t.Errorf("Build(%s): build.json images (-want +got):\n%s", target, diff)
			}
			var doc sbom.Document
			if err := json.Unmarshal(readEntry(t, r.Root, spec.SBOMPath), &doc); err != nil {
				t.Fatalf("Build(%s): sbom: %v", target, err)
			}
			var purls []string
			for _, p := range doc.Packages {
				for _, e := range p.ExternalRefs {
					purls = append(purls, e.Locator)
				}
			}
			if all := strings.Join(purls, "\n"); !strings.Contains(all, "pkg:oci/web@"+wantDigest) || doc.CreationInfo.Created != "2020-01-01T00:00:00Z" {
				t.Errorf("Build(%s): sbom purls %v created %s, want the image digest and the epoch", target, purls, doc.CreationInfo.Created)
			}
		})
	}
}

// checkImageFilesRootOnly performs issue 12's attack 5 on a built root:
// it looks for a device node or setuid/setgid file that a non-root
// service could reach, that is one with no root-owned directory of mode
// 0700 (or stricter) above it. The image must have given it both, and
// /oci/<service> itself must be that directory.
func checkImageFilesRootOnly(t *testing.T, root *rootfs.Tree) {
	t.Helper()
	if e, ok := root.Get("/oci/web"); !ok || e.Kind != rootfs.KindDir || e.Mode != 0o700 || e.UID != 0 || e.GID != 0 {
		t.Errorf("/oci/web = %s mode %#o owned by %d:%d (present: %v), want a directory of mode 0700 owned by 0:0", e.Kind, e.Mode, e.UID, e.GID, ok)
	}
	var risky []string
	err := root.Walk(func(p string, e *rootfs.Entry) error {
		if e.Kind != rootfs.KindCharDevice && e.Kind != rootfs.KindBlockDevice && e.Mode&0o6000 == 0 {
			return nil
		}
		risky = append(risky, p)
		for dir := path.Dir(p); dir != "/"; dir = path.Dir(dir) {
			if d, ok := root.Get(dir); ok && d.UID == 0 && d.Mode&0o077 == 0 {
				return nil
			}
		}
		t.Errorf("%s (%s, mode %#o) is reachable by every user: no directory above it is root's alone", p, e.Kind, e.Mode)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(risky) < 2 {
		t.Errorf("the root has device nodes and setuid files %q; want the image's /dev/vda and /bin/su at least", risky)
	}
}

func platformString(t *testing.T, img v1.Image) string {
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return cf.Platform().String()
}

func TestBuildImagePinnedOffline(t *testing.T) {
	reg := ocitest.NewRegistry()
	idx, _ := pushWeb(t, reg.Host+"/web:1")
	pinned := reg.Host + "/web@" + mustDigest(t, idx)
	cfg := testConfig(t, "  - {name: web, image: \""+pinned+"\"}")
	cache := t.TempDir()
	first, err := Build(context.Background(), cfg, config.TargetVMArm64, testOptions(t, cache)...)
	if err != nil {
		t.Fatalf("Build = %v", err)
	}
	reg.Close()
	again, err := Build(context.Background(), cfg, config.TargetVMArm64, testOptions(t, cache)...)
	if err != nil {
		t.Fatalf("Build with the registry down = %v", err)
	}
	if first.BuildID != again.BuildID || treeHash(t, first.Root) != treeHash(t, again.Root) {
		t.Errorf("offline rebuild differs: build id %s vs %s", first.BuildID, again.BuildID)
	}
	// Another target's platform is not in the store: that needs the registry.
	if _, err := Build(context.Background(), cfg, config.TargetVMAmd64, testOptions(t, cache)...); err == nil || !strings.Contains(err.Error(), `service "web"`) {
		t.Errorf("Build(amd64, registry down) = %v, want an error naming the service", err)
	}
}

func TestBuildImageErrors(t *testing.T) {
	reg := ocitest.NewRegistry()
	defer reg.Close()
	only, err := ocitest.Index(webImage(t, v1.Platform{OS: "linux", Architecture: "amd64"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := ocitest.Push(reg.Host+"/amd64only:1", only); err != nil {
		t.Fatal(err)
	}
	evil, _ := ocitest.LayerOf(ocitest.Symlink("etc", "/host-etc"), ocitest.File("etc/passwd", "x"))
	evilImg, _ := ocitest.Image(v1.Platform{OS: "linux", Architecture: "amd64"}, v1.Config{Cmd: []string{"/x"}}, evil)
	if err := ocitest.Push(reg.Host+"/evil:1", evilImg); err != nil {
		t.Fatal(err)
	}
	evilDigest := mustDigest(t, evil)
	for _, tt := range []struct {
		svc    string
		target config.Target
		want   []string
	}{
		{"{name: web, image: " + reg.Host + "/amd64only:1}", config.TargetVMArm64,
			[]string{`service "web"`, "amd64only:1", "no image for platform linux/arm64", "the image has linux/amd64"}},
		{"{name: web, image: " + reg.Host + "/evil:1}", config.TargetVMAmd64,
			[]string{`service "web"`, "layer " + evilDigest, `"etc/passwd"`, "symlink"}},
		{"{name: web, image: " + reg.Host + "/amd64only:1, user: nosuch}", config.TargetVMAmd64,
			[]string{`service "web"`, `user "nosuch": not in the image's /etc/passwd`}},
	} {
		cfg := testConfig(t, "  - "+tt.svc)
		_, err := Build(context.Background(), cfg, tt.target, testOptions(t, t.TempDir())...)
		for _, w := range tt.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("Build(%s, %s) = %v, want it to say %q", tt.svc, tt.target, err, w)
			}
		}
	}
}

func TestContainerSpecOverrides(t *testing.T) {
	tree := rootfs.New(0)
	img := &oci.Image{Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("a", 64)}, Config: &v1.ConfigFile{Config: v1.Config{
		Entrypoint: []string{"/ep"}, Cmd: []string{"c1", "c2"}, WorkingDir: "work/dir", User: "7:8"}}}
	for _, tt := range []struct {
		name       string
		entrypoint []string
		args       []string
		user       string // as config gives it for an image service
		wantArgv   []string
		wantIDs    [2]uint32
	}{
		{"image as is", nil, nil, "", []string{"/ep", "c1", "c2"}, [2]uint32{7, 8}},
		{"args replace cmd", nil, []string{"a"}, "", []string{"/ep", "a"}, [2]uint32{7, 8}},
		{"entrypoint drops cmd", []string{"/other"}, nil, "0:0", []string{"/other"}, [2]uint32{0, 0}},
		{"entrypoint and args", []string{"/other", "-v"}, []string{"x"}, "1000:100", []string{"/other", "-v", "x"}, [2]uint32{1000, 100}},
	} {
		s := &config.Service{Service: spec.Service{Name: "svc", Args: tt.args, User: tt.user}, Image: "x:1", Entrypoint: tt.entrypoint}
		c, err := containerSpec(s, img, tree)
		if err != nil {
			t.Errorf("%s: containerSpec = %v", tt.name, err)
			continue
		}
		if !cmp.Equal(c.Argv, tt.wantArgv) || c.UID != tt.wantIDs[0] || c.GID != tt.wantIDs[1] || c.WorkingDir != "/work/dir" {
			t.Errorf("%s: containerSpec = argv %q uid %d gid %d wd %q, want %q %v /work/dir", tt.name, c.Argv, c.UID, c.GID, c.WorkingDir, tt.wantArgv, tt.wantIDs)
		}
	}
	empty := &oci.Image{Digest: img.Digest, Config: &v1.ConfigFile{}}
	if _, err := containerSpec(&config.Service{Service: spec.Service{Name: "svc"}, Image: "x:1"}, empty, tree); err == nil || !strings.Contains(err.Error(), "argv: empty") {
		t.Errorf("containerSpec(no entrypoint or cmd) = %v, want refused", err)
	}
}
