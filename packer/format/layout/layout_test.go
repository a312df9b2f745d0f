package layout

import (
	"strings"
	"testing"
	"testing/fstest"
)

func TestDeviceTreeFile(t *testing.T) {
	for name, want := range map[string]bool{
		"bcm2711-rpi-4-b.dtb":          true,
		"overlays/vc4-kms-v3d.dtbo":    true,
		"overlays/overlay_map.dtb":     true,
		"overlays/README":              true,
		"overlays/README.txt":          false,
		"vmlinuz":                      false,
		"cmdline.txt":                  false,
		"config.txt":                   false,
		"../x.dtb":                     false,
		"overlays/../x.dtbo":           false,
		"overlays/sub/x.dtbo":          false,
		"slot-a/bcm2711-rpi-4-b.dtb":   false,
		".hidden.dtb":                  false,
		"a+b.dtb":                      false,
		"overlays/x.dtb":               false,
		"overlays/":                    false,
		"":                             false,
		"bcm2711 rpi.dtb":              false,
		"overlays\\x.dtbo":             false,
		"x.dtbo":                       false,
		"overlays/overlay_map.dtb.bak": false,
	} {
		if got := DeviceTreeFile(name); got != want {
			t.Errorf("DeviceTreeFile(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestDeviceTreeFiles(t *testing.T) {
	fsys := fstest.MapFS{
		"slot-a/vmlinuz":                   {Data: []byte("k")},
		"slot-a/bcm2711-rpi-4-b.dtb":       {Data: []byte("t")},
		"slot-a/overlays/README":           {Data: []byte("r")},
		"slot-a/overlays/vc4-kms-v3d.dtbo": {Data: []byte("o")},
		"slot-a/overlays/notes.txt":        {Data: []byte("n")},
		"slot-a/overlays/sub/x.dtbo":       {Data: []byte("x")},
		"slot-a/old.dtb/x":                 {Data: []byte("a directory named like a tree")},
		"slot-b/other.dtb":                 {Data: []byte("b")},
	}
	got, err := DeviceTreeFiles(fsys, "slot-a")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"bcm2711-rpi-4-b.dtb", "overlays/README", "overlays/vc4-kms-v3d.dtbo"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("DeviceTreeFiles(slot-a) = %q, want %q", got, want)
	}
	if got, err := DeviceTreeFiles(fsys, "slot-c"); err != nil || len(got) != 0 {
		t.Errorf("DeviceTreeFiles(missing) = %q, %v; want none", got, err)
	}
}
