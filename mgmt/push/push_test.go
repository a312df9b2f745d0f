package push

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/builder/assemble"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/packer/format/image"
)

// TestImageBootFilesRPi: what an update sends a Raspberry Pi for a slot is
// everything in that slot's directory: kernel, command line, device trees
// and overlays, named as the agent takes them, and no initramfs.
func TestImageBootFilesRPi(t *testing.T) {
	cfg, err := config.Load("../../examples/hello/ingot.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "hello-rpi.img")
	if _, err := assemble.Image(t.Context(), cfg, config.TargetRPi, img, assemble.WithCacheDir(filepath.Join(dir, "cache"))); err != nil {
		t.Fatal(err)
	}
	im, err := image.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	files, err := im.BootFiles("b")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"vmlinuz", "cmdline.txt", "bcm2710-rpi-3-b.dtb", "bcm2711-rpi-4-b.dtb", "overlays/README", "overlays/overlay_map.dtb", "overlays/vc4-kms-v3d.dtbo"} {
		if len(files[want]) == 0 {
			t.Errorf("BootFiles(b) lacks %s", want)
		}
	}
	if _, ok := files["initrd.img"]; ok {
		t.Errorf("BootFiles(b) has an initramfs; a Pi boots without one")
	}
	if !strings.Contains(string(files["cmdline.txt"]), "ingot.slot=b") {
		t.Errorf("cmdline.txt for b = %q, want slot b's", files["cmdline.txt"])
	}
	overlays := 0
	for name := range files {
		if strings.HasPrefix(name, "overlays/") && strings.HasSuffix(name, ".dtbo") {
			overlays++
		}
	}
	if overlays < 100 {
		t.Errorf("BootFiles(b) has %d overlays, want every one of the kernel's (hundreds)", overlays)
	}
}
