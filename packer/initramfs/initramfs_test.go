package initramfs

import (
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/packer/format/spec"
	"github.com/ingotdev/ingot/packer/kernel"
	"github.com/ingotdev/ingot/packer/rootfs"
)

func testKernel() (*kernel.Kernel, []*kernel.Module) {
	ring := &kernel.Module{Name: "virtio_ring", Path: "kernel/drivers/virtio/virtio_ring.ko", Data: []byte("ring")}
	blk := &kernel.Module{Name: "virtio_blk", Path: "kernel/drivers/block/virtio_blk.ko", Depends: []string{"virtio_ring"}, Data: []byte("blk")}
	k := &kernel.Kernel{Version: "6.1.0-9-cloud-amd64", Modules: map[string]*kernel.Module{"virtio_ring": ring, "virtio_blk": blk}}
	return k, []*kernel.Module{ring, blk}
}

func readContent(t *testing.T, e rootfs.Entry) string {
	t.Helper()
	rc, err := e.Content.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestTree(t *testing.T) {
	k, mods := testKernel()
	const modTime = 1700000000
	tree, err := Tree(k, mods, map[string][]string{"virtio_blk": {"virtio:d00000002v*"}}, rootfs.Bytes("#!init"), 6, modTime)
	if err != nil {
		t.Fatalf("Tree = %v", err)
	}
	var got []string
	tree.Walk(func(p string, e *rootfs.Entry) error {
		got = append(got, fmt.Sprintf("%s %s %#o %d:%d %d", p, e.Kind, e.Mode, e.UID, e.GID, e.ModTime-modTime))
		return nil
	})
	want := []string{
		"/ dir 0755 0:0 0",
		"/dev dir 0755 0:0 0",
		"/dev/console char device 0600 0:0 0",
		"/etc dir 0755 0:0 0",
		"/etc/ingot dir 0755 0:0 0",
		"/etc/ingot/stage0.json file 0644 0:0 0",
		"/init file 0755 0:0 0",
		"/lib dir 0755 0:0 0",
		"/lib/modules dir 0755 0:0 0",
		"/lib/modules/6.1.0-9-cloud-amd64 dir 0755 0:0 0",
		"/lib/modules/6.1.0-9-cloud-amd64/kernel dir 0755 0:0 0",
		"/lib/modules/6.1.0-9-cloud-amd64/kernel/drivers dir 0755 0:0 0",
		"/lib/modules/6.1.0-9-cloud-amd64/kernel/drivers/block dir 0755 0:0 0",
		"/lib/modules/6.1.0-9-cloud-amd64/kernel/drivers/block/virtio_blk.ko file 0644 0:0 0",
		"/lib/modules/6.1.0-9-cloud-amd64/kernel/drivers/virtio dir 0755 0:0 0",
		"/lib/modules/6.1.0-9-cloud-amd64/kernel/drivers/virtio/virtio_ring.ko file 0644 0:0 0",
		"/newroot dir 0755 0:0 0",
		"/proc dir 0755 0:0 0",
		"/sys dir 0755 0:0 0",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Tree walk =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	cfgEntry, _ := tree.Get(ConfigPath)
	var cfg spec.Stage0
	if err := json.Unmarshal([]byte(readContent(t, cfgEntry)), &cfg); err != nil {
		t.Fatalf("%s: %v", ConfigPath, err)
	}
	wantMods := []string{
		"/lib/modules/6.1.0-9-cloud-amd64/kernel/drivers/virtio/virtio_ring.ko",
		"/lib/modules/6.1.0-9-cloud-amd64/kernel/drivers/block/virtio_blk.ko",
	}
	if !reflect.DeepEqual(cfg.Modules, wantMods) {
		t.Errorf("%s modules = %q, want %q (load order)", ConfigPath, cfg.Modules, wantMods)
	}
	if want := map[string][]string{wantMods[1]: {"virtio:d00000002v*"}}; !reflect.DeepEqual(cfg.OnDemand, want) {
		t.Errorf("%s on_demand = %q, want %q (by path)", ConfigPath, cfg.OnDemand, want)
	}
	if e, _ := tree.Get(wantMods[1]); readContent(t, e) != "blk" || e.Size != 3 {
		t.Errorf("module file %s = %q (%d bytes), want the module's data", wantMods[1], readContent(t, e), e.Size)
	}
	if e, _ := tree.Get(InitPath); readContent(t, e) != "#!init" {
		t.Errorf("%s = %q, want the init content", InitPath, readContent(t, e))
	}
	if e, _ := tree.Get("/dev/console"); e.DevMajor != 5 || e.DevMinor != 1 {
		t.Errorf("/dev/console = %d:%d, want 5:1", e.DevMajor, e.DevMinor)
	}

	empty, err := Tree(k, nil, nil, rootfs.Bytes("#!init"), 6, modTime)
	if err != nil {
		t.Fatalf("Tree(no modules) = %v", err)
	}
	if e, _ := empty.Get(ConfigPath); readContent(t, e) != "{\n  \"modules\": []\n}\n" {
		t.Errorf("Tree(no modules) config = %q, want an empty list", readContent(t, e))
	}
}

func TestTreeErrors(t *testing.T) {
	k, mods := testKernel()
	noData := &kernel.Module{Name: "x", Path: "kernel/x.ko"}
	escape := &kernel.Module{Name: "y", Path: "../../y.ko", Data: []byte("y")}
	for _, tc := range []struct {
		name     string
		version  string
		mods     []*kernel.Module
		onDemand map[string][]string
		want     string
	}{
		{"no data", k.Version, []*kernel.Module{mods[0], noData}, nil, `initramfs: module 1 "x" (kernel/x.ko): no data`},
		{"escaping path", k.Version, []*kernel.Module{escape}, nil, `initramfs: module 0 "y": rootfs: path "/lib/modules/6.1.0-9-cloud-amd64/../../y.ko": component 4: name ".." is reserved`},
		{"twice", k.Version, []*kernel.Module{mods[0], mods[0]}, nil, `initramfs: rootfs: add "/lib/modules/6.1.0-9-cloud-amd64/kernel/drivers/virtio/virtio_ring.ko": already exists`},
		{"no version", "", mods, nil, `initramfs: kernel version "": empty name`},
		{"unknown on-demand module", k.Version, mods, map[string][]string{"vmxnet3": nil}, `initramfs: on-demand module "vmxnet3" is not among the modules`},
	} {
		kk := *k
		kk.Version = tc.version
		_, err := Tree(&kk, tc.mods, tc.onDemand, rootfs.Bytes("x"), 1, 0)
		if err == nil || err.Error() != tc.want {
			t.Errorf("Tree(%s) = %v, want %q", tc.name, err, tc.want)
		}
	}
}
