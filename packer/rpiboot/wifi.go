package rpiboot

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// WiFiModules are the modules of the Pi boards' brcmfmac Wi-Fi in
// kernel.rpi, in load order, relative to lib/modules/<release>/
// (kernel.rpi builds cfg80211 in). brcmfmac asks for its vendor part
// (brcmfmac-cyw for the Pi's Cypress chips) through modprobe, which an
// appliance has not, so all three vendor parts are loaded after it.
var WiFiModules = []string{
	"kernel/drivers/net/wireless/broadcom/brcm80211/brcmutil/brcmutil.ko",
	"kernel/drivers/net/wireless/broadcom/brcm80211/brcmfmac/brcmfmac.ko",
	"kernel/drivers/net/wireless/broadcom/brcm80211/brcmfmac/cyw/brcmfmac-cyw.ko",
	"kernel/drivers/net/wireless/broadcom/brcm80211/brcmfmac/bca/brcmfmac-bca.ko",
	"kernel/drivers/net/wireless/broadcom/brcm80211/brcmfmac/wcc/brcmfmac-wcc.ko",
}

// wifiChips are the Wi-Fi chips of the Pi boards: 43430 (Pi 3B, Zero W,
// Zero 2 W) and 43455 (Pi 3B+, 3A+, 4, 400, 5, CM4, CM5).
var wifiChips = []string{"43430", "43455"}

// IsWiFiFirmware reports whether a file of a firmware package (its path
// under lib/firmware) belongs to the Pi boards' Wi-Fi: brcm/brcmfmac<chip>-sdio.*
// (firmware, CLM blob, per-board NVRAM) and the cypress/cyfmac<chip>-sdio.*
// files they link to.
func IsWiFiFirmware(rel string) bool {
	dir, name := path.Split(rel)
	for _, chip := range wifiChips {
		switch {
		case dir == "brcm/" && strings.HasPrefix(name, "brcmfmac"+chip+"-sdio."):
			return true
		case dir == "cypress/" && strings.HasPrefix(name, "cyfmac"+chip+"-sdio."):
			return true
		}
	}
	return false
}

// KernelRelease returns the one lib/modules/<release> directory of a
// kernel.rpi module, and the release.
func KernelRelease(kernel Module) (string, error) {
	entries, err := os.ReadDir(filepath.Join(kernel.Dir, "lib", "modules"))
	if err != nil {
		return "", fmt.Errorf("rpiboot: %s@%s: %w", kernel.Path, kernel.Version, err)
	}
	var releases []string
	for _, e := range entries {
		if e.IsDir() {
			releases = append(releases, e.Name())
		}
	}
	if len(releases) != 1 {
		return "", fmt.Errorf("rpiboot: %s@%s: want one kernel release in lib/modules, found %q", kernel.Path, kernel.Version, releases)
	}
	return releases[0], nil
}
