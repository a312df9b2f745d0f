package spec

import (
	"fmt"
	"path"
	"strings"
)

// Wi-Fi on a Raspberry Pi (network.wifi in ingot.yaml): the builder adds
// the Wi-Fi client as the system service WiFiServiceName, which joins the
// network on WiFiInterface with the passphrase in WiFiPSKPath, and a
// second DHCP client on that interface, WiFiDHCPServiceName. The driver's
// modules are listed in Appliance.Modules, which stage1 loads before the
// network comes up.
const (
	WiFiServiceName     = "wifi"
	WiFiDHCPServiceName = "dhcp-wlan0"
	WiFiInterface       = "wlan0"
	// WiFiPSKPath holds the WPA2 passphrase, mode 0600, owned by root:
	// only the Wi-Fi client (root) reads it.
	WiFiPSKPath = "/etc/ingot/wifi-psk"
)

// Bounds of a WPA2 network's name and passphrase (IEEE 802.11: an SSID is
// up to 32 octets; a passphrase is 8 to 63 printable ASCII characters).
const (
	MaxSSIDBytes         = 32
	MinWiFiPassphraseLen = 8
	MaxWiFiPassphraseLen = 63
)

// ModulesDir is where the root keeps kernel modules, per kernel release
// (uname -r): ModulesDir/<release>/<Appliance.Modules entry>.
const ModulesDir = "/lib/modules"

// CheckSSID says what is wrong with a network name, if anything.
func CheckSSID(ssid string) error {
	if len(ssid) == 0 || len(ssid) > MaxSSIDBytes {
		return fmt.Errorf("%q: want 1 to %d bytes", ssid, MaxSSIDBytes)
	}
	if strings.ContainsRune(ssid, 0) {
		return fmt.Errorf("%q: contains a NUL byte", ssid)
	}
	return nil
}

// CheckWiFiPassphrase says what is wrong with a WPA2 passphrase, if
// anything, without repeating it.
func CheckWiFiPassphrase(psk string) error {
	if len(psk) < MinWiFiPassphraseLen || len(psk) > MaxWiFiPassphraseLen {
		return fmt.Errorf("a WPA2 passphrase is %d to %d characters, this one has %d", MinWiFiPassphraseLen, MaxWiFiPassphraseLen, len(psk))
	}
	for i := 0; i < len(psk); i++ {
		if c := psk[i]; c < 0x20 || c > 0x7e {
			return fmt.Errorf("byte %d is not printable ASCII (a WPA2 passphrase is)", i)
		}
	}
	return nil
}

// checkModule checks an Appliance.Modules entry: a clean relative path of
// a .ko file.
func checkModule(m string) error {
	if m == "" || strings.HasPrefix(m, "/") || path.Clean(m) != m || strings.HasPrefix(m, "../") ||
		!strings.HasSuffix(m, ".ko") || strings.ContainsRune(m, 0) {
		return fmt.Errorf("%q: want a clean relative path of a .ko file", m)
	}
	return nil
}
