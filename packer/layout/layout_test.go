package layout

import "testing"

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
