// Command ingot-wifi joins a WPA2-PSK network on a Raspberry Pi's brcmfmac
// Wi-Fi and stays on it. The builder adds it to Pi images with
// network.wifi as the system service "wifi" (spec.WiFiServiceName), run
// as root; a DHCP client on the same interface gets the address.
//
// It uses nl80211 through github.com/mdlayher/wifi and lets the chip's
// firmware do the WPA2 4-way handshake (NL80211_EXT_FEATURE_4WAY_HANDSHAKE_STA_PSK,
// which brcmfmac offers), so no supplicant runs. Without a Wi-Fi device
// (no driver, no firmware, a board without Wi-Fi, QEMU) it says so once,
// naming what it found, and keeps waiting for one.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/mdlayher/wifi"
	"golang.org/x/sys/unix"

	"github.com/ingotdev/ingot/packer/format/spec"
)

const (
	// deviceWait is how often the interface is looked for.
	deviceWait = time.Second
	// checkInterval is how often the association is checked.
	checkInterval = 5 * time.Second
	// retryMax bounds the wait between failed connects.
	retryMax = time.Minute
)

func main() {
	log.SetFlags(0)
	ifname := flag.String("interface", spec.WiFiInterface, "the Wi-Fi interface")
	ssid := flag.String("ssid", "", "the network's name")
	pskFile := flag.String("psk-file", spec.WiFiPSKPath, "the file holding the WPA2 passphrase")
	flag.Parse()
	if err := run(*ifname, *ssid, *pskFile); err != nil {
		log.Fatalf("wifi: %v", err)
	}
}

func run(ifname, ssid, pskFile string) error {
	if err := spec.CheckSSID(ssid); err != nil {
		return fmt.Errorf("-ssid: %w", err)
	}
	b, err := os.ReadFile(pskFile)
	if err != nil {
		return err
	}
	psk := strings.TrimSuffix(string(b), "\n")
	if err := spec.CheckWiFiPassphrase(psk); err != nil {
		return fmt.Errorf("%s: %w", pskFile, err)
	}
	waitForDevice(ifname)
	if err := linkUp(ifname); err != nil {
		return err
	}
	c, err := wifi.New()
	if err != nil {
		return fmt.Errorf("nl80211: %w", err)
	}
	defer c.Close()
	ifi, err := wifiInterface(c, ifname)
	if err != nil {
		return err
	}
	retry := checkInterval
	connected := false
	for {
		bss, err := c.BSS(ifi)
		switch {
		case err == nil && bss.Status == wifi.BSSStatusAssociated && string(bss.SSID) == ssid:
			if !connected {
				log.Printf("connected to %q (BSSID %s, %d MHz)", ssid, bss.BSSID, bss.Frequency)
				connected, retry = true, checkInterval
			}
			time.Sleep(checkInterval)
			continue
		case connected:
			log.Printf("lost %q (%v); reconnecting", ssid, errOr(err, "not associated"))
			connected = false
		}
		if err := c.ConnectWPAPSK(ifi, ssid, psk); err != nil {
			if errors.Is(err, wifi.ErrNotSupported) {
				return fmt.Errorf("%s: the driver cannot do the WPA2 handshake in firmware, which this client needs", ifname)
			}
			log.Printf("connect to %q: %v; again in %s", ssid, err, retry)
		}
		time.Sleep(retry)
		retry = min(2*retry, retryMax)
	}
}

func errOr(err error, s string) string {
	if err != nil {
		return err.Error()
	}
	return s
}

// waitForDevice returns once ifname exists. When it does not, it says so
// once, with the interfaces that do exist and which are wireless.
func waitForDevice(ifname string) {
	if _, err := net.InterfaceByName(ifname); err == nil {
		return
	}
	log.Printf("no Wi-Fi device: there is no %s (%s); waiting for one", ifname, describeInterfaces())
	for {
		time.Sleep(deviceWait)
		if _, err := net.InterfaceByName(ifname); err == nil {
			log.Printf("%s appeared", ifname)
			return
		}
	}
}

// describeInterfaces names the network interfaces and says which are
// wireless (they have /sys/class/net/NAME/wireless).
func describeInterfaces() string {
	entries, err := os.ReadDir("/sys/class/net")
	if err != nil {
		return fmt.Sprintf("interfaces unknown: %v", err)
	}
	var all, wireless []string
	for _, e := range entries {
		all = append(all, e.Name())
		if _, err := os.Stat(filepath.Join("/sys/class/net", e.Name(), "wireless")); err == nil {
			wireless = append(wireless, e.Name())
		}
	}
	sort.Strings(all)
	w := "none is wireless"
	if len(wireless) > 0 {
		w = "wireless: " + strings.Join(wireless, ", ")
	}
	return fmt.Sprintf("interfaces: %s; %s", strings.Join(all, ", "), w)
}

// wifiInterface finds ifname among nl80211's interfaces.
func wifiInterface(c *wifi.Client, ifname string) (*wifi.Interface, error) {
	ifis, err := c.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("nl80211 interfaces: %w", err)
	}
	for _, ifi := range ifis {
		if ifi.Name == ifname {
			return ifi, nil
		}
	}
	return nil, fmt.Errorf("%s exists but is not a Wi-Fi interface (nl80211 does not know it)", ifname)
}

// linkUp sets ifname up: the firmware scans and associates only then.
func linkUp(ifname string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%s up: %w", ifname, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(ifname)
	if err != nil {
		return fmt.Errorf("%s up: %w", ifname, err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("%s up: %w", ifname, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("%s up: %w", ifname, err)
	}
	return nil
}
