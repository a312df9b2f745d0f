package kernel

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func keepBrcm(rel string) bool {
	return strings.HasPrefix(rel, "brcm/") || strings.HasPrefix(rel, "cypress/")
}

// TestFirmwareDeb reads files and links under usr/lib/firmware (trixie)
// and lib/firmware (bookworm), keeps what keep accepts, sorted.
func TestFirmwareDeb(t *testing.T) {
	deb := buildDeb(t, "all", ".xz",
		tarFile{name: "./usr/lib/firmware/"},
		tarFile{name: "./usr/lib/firmware/cypress/cyfmac43430-sdio.bin", data: []byte("fw")},
		tarFile{name: "./usr/lib/firmware/brcm/brcmfmac43430-sdio.bin", link: "../cypress/cyfmac43430-sdio.bin"},
		tarFile{name: "./lib/firmware/brcm/brcmfmac43430-sdio.txt", data: []byte("nvram")},
		tarFile{name: "./usr/lib/firmware/other/x.bin", data: []byte("other")},
		tarFile{name: "./usr/share/doc/firmware-brcm80211/copyright", data: []byte("c")})
	files, err := readFirmwareDeb(context.Background(), bytes.NewReader(deb), keepBrcm)
	if err != nil {
		t.Fatal(err)
	}
	want := []FirmwareFile{
		{Path: "brcm/brcmfmac43430-sdio.bin", Link: "../cypress/cyfmac43430-sdio.bin"},
		{Path: "brcm/brcmfmac43430-sdio.txt", Data: []byte("nvram")},
		{Path: "cypress/cyfmac43430-sdio.bin", Data: []byte("fw")},
	}
	if !reflect.DeepEqual(files, want) {
		t.Errorf("files = %+v, want %+v", files, want)
	}
}

// TestFirmwareDebRejects: links that leave the firmware directory (the
// attack: a package that makes the image's firmware point at its other
// files), a package with none of the files wanted, and not a package.
func TestFirmwareDebRejects(t *testing.T) {
	for name, c := range map[string]struct {
		files []tarFile
		want  string
	}{
		"link up and out":  {[]tarFile{{name: "./lib/firmware/brcm/x.bin", link: "../../../etc/ingot/wifi-psk"}}, "leaves the firmware directory"},
		"absolute link":    {[]tarFile{{name: "./lib/firmware/brcm/x.bin", link: "/etc/shadow"}}, "leaves the firmware directory"},
		"nothing wanted":   {[]tarFile{{name: "./lib/firmware/iwlwifi/x.ucode", data: []byte("x")}}, "none of the firmware files wanted"},
		"no firmware dirs": {[]tarFile{{name: "./usr/share/x", data: []byte("x")}}, "none of the firmware files wanted"},
	} {
		deb := buildDeb(t, "all", ".xz", c.files...)
		if _, err := readFirmwareDeb(context.Background(), bytes.NewReader(deb), keepBrcm); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", name, err, c.want)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.deb")
	if err := os.WriteFile(bad, []byte("not an ar archive"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFirmwareDeb(context.Background(), bad, keepBrcm); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("LoadFirmwareDeb(garbage) = %v, want an error naming the file", err)
	}
}
