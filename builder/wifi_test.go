package builder

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/packer/format/spec"
	"github.com/ingotdev/ingot/packer/rpiboot"
)

// wifiNetwork writes a passphrase file and returns network.wifi for it.
func wifiNetwork(t *testing.T, psk string) string {
	t.Helper()
	dir := t.TempDir()
	p, fw := filepath.Join(dir, "psk"), filepath.Join(dir, "firmware.deb")
	if err := os.WriteFile(p, []byte(psk), 0o600); err != nil {
		t.Fatal(err)
	}
	// The builder only hashes it (for the build ID); assemble reads it.
	if err := os.WriteFile(fw, []byte("firmware package"), 0o644); err != nil {
		t.Fatal(err)
	}
	return `network: {wifi: {ssid: "home net", psk_file: ` + p + `, firmware_deb: ` + fw + `}}`
}

// TestBuildWiFi: a Pi image with network.wifi gets the Wi-Fi client and a
// DHCP client on wlan0 as root services, the driver's modules in
// appliance.json and the passphrase in a file only root reads; a VM image
// of the same config gets none of it.
func TestBuildWiFi(t *testing.T) {
	cfg := testConfig(t, "  - {name: hello, go: ./cmd/hello}", wifiNetwork(t, "correct horse battery\n"))
	r, err := Build(context.Background(), cfg, config.TargetRPiArmv7, testOptions(t, t.TempDir())...)
	if err != nil {
		t.Fatalf("Build = %v", err)
	}
	services := map[string]spec.Service{}
	for _, s := range r.Appliance.Services {
		services[s.Name] = s
	}
	w, d := services[spec.WiFiServiceName], services[spec.WiFiDHCPServiceName]
	if w.Path != WiFiPath || w.User != "root" || !slices.Equal(w.Args, []string{"-interface", "wlan0", "-ssid", "home net", "-psk-file", spec.WiFiPSKPath}) {
		t.Errorf("wifi service = %+v", w)
	}
	if d.Path != DHCPPath || d.User != "root" || !slices.Equal(d.Args, []string{"-interface", "wlan0"}) {
		t.Errorf("dhcp-wlan0 service = %+v", d)
	}
	if _, ok := services[spec.DHCPServiceName]; !ok {
		t.Errorf("no DHCP client on eth0 beside the Wi-Fi")
	}
	if !slices.Equal(r.Appliance.Modules, rpiboot.WiFiModules) {
		t.Errorf("modules = %q, want %q", r.Appliance.Modules, rpiboot.WiFiModules)
	}
	if e, ok := r.Root.Get(WiFiPath); !ok || e.Mode != 0o755 {
		t.Errorf("%s = %+v, want the client, mode 0755", WiFiPath, e)
	}
	if e, ok := r.Root.Get(spec.WiFiPSKPath); !ok || e.Mode != 0o600 || e.UID != 0 || string(readEntry(t, r.Root, spec.WiFiPSKPath)) != "correct horse battery\n" {
		t.Errorf("%s = %+v, want the passphrase, mode 0600, owned by root", spec.WiFiPSKPath, e)
	}
	if app := string(readEntry(t, r.Root, spec.AppliancePath)); strings.Contains(app, "correct horse") {
		t.Errorf("appliance.json holds the passphrase")
	}

	// Another passphrase is another build.
	if err := os.WriteFile(cfg.Network.WiFi.PSKFile, []byte("another passphrase"), 0o600); err != nil {
		t.Fatal(err)
	}
	r2, err := Build(context.Background(), cfg, config.TargetRPiArmv7, testOptions(t, t.TempDir())...)
	if err != nil {
		t.Fatalf("Build = %v", err)
	}
	if r2.BuildID == r.BuildID {
		t.Errorf("build ID %s did not change with the passphrase", r.BuildID)
	}

	vm, err := Build(context.Background(), cfg, config.TargetVMAmd64, testOptions(t, t.TempDir())...)
	if err != nil {
		t.Fatalf("Build(vm-amd64) = %v", err)
	}
	for _, s := range vm.Appliance.Services {
		if s.Name == spec.WiFiServiceName || s.Name == spec.WiFiDHCPServiceName {
			t.Errorf("the VM image has the service %s", s.Name)
		}
	}
	_, client := vm.Root.Get(WiFiPath)
	_, psk := vm.Root.Get(spec.WiFiPSKPath)
	if client || psk || len(vm.Appliance.Modules) != 0 {
		t.Errorf("the VM image has Wi-Fi: client %v, passphrase %v, modules %q", client, psk, vm.Appliance.Modules)
	}
}

func TestBuildWiFiRefuses(t *testing.T) {
	cfg := testConfig(t, "  - {name: wifi, go: ./cmd/hello}", wifiNetwork(t, "correct horse battery"))
	_, err := Build(context.Background(), cfg, config.TargetRPiArmv7, testOptions(t, t.TempDir())...)
	if err == nil || !strings.Contains(err.Error(), `service "wifi": the name is taken by the Wi-Fi of network.wifi`) {
		t.Errorf("Build(service named wifi) = %v, want the name conflict", err)
	}
	cfg = testConfig(t, "  - {name: hello, go: ./cmd/hello}", wifiNetwork(t, "short"))
	_, err = Build(context.Background(), cfg, config.TargetRPiArmv7, testOptions(t, t.TempDir())...)
	if err == nil || !strings.Contains(err.Error(), cfg.Network.WiFi.PSKFile) || !strings.Contains(err.Error(), "8 to 63 characters") {
		t.Errorf("Build(a 5-character passphrase) = %v, want an error naming the file", err)
	}
	cfg = testConfig(t, "  - {name: hello, go: ./cmd/hello}", wifiNetwork(t, "correct horse battery"))
	cfg.Network.WiFi.FirmwareDeb = filepath.Join(t.TempDir(), "missing.deb")
	_, err = Build(context.Background(), cfg, config.TargetRPiArmv7, testOptions(t, t.TempDir())...)
	if err == nil || !strings.Contains(err.Error(), "network.wifi.firmware_deb") || !strings.Contains(err.Error(), "missing.deb") {
		t.Errorf("Build(a missing firmware package) = %v, want an error naming it", err)
	}
	// Without Wi-Fi the name is the user's, and nothing of the Wi-Fi's
	// takes its binary.
	cfg = testConfig(t, "  - {name: wifi, go: ./cmd/hello}")
	r, err := Build(context.Background(), cfg, config.TargetRPiArmv7, testOptions(t, t.TempDir())...)
	if err != nil {
		t.Fatalf("Build(service named wifi, no network.wifi) = %v", err)
	}
	if _, ok := r.Root.Get(WiFiPath); ok {
		t.Errorf("the user's service wifi landed at %s", WiFiPath)
	}
	if _, ok := r.Root.Get(servicePath("wifi")); !ok {
		t.Errorf("the user's service wifi is not at %s", servicePath("wifi"))
	}
}
