package kernel

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDebFileSystemdBoot reads systemd-boot out of Debian's
// systemd-boot-efi package (scripts/setup.sh downloads it) and a missing
// file's error names the package and the file.
func TestDebFileSystemdBoot(t *testing.T) {
	deb := filepath.Join("..", "..", ".cache", "debs", "systemd-boot-efi-amd64.deb")
	if p := os.Getenv("INGOT_SYSTEMD_BOOT_DEB_AMD64"); p != "" {
		deb = p
	}
	b, version, err := DebFile(context.Background(), deb, "usr/lib/systemd/boot/efi/systemd-bootx64.efi")
	if err != nil {
		t.Fatalf("%v (run scripts/setup.sh)", err)
	}
	if len(b) < 2 || string(b[:2]) != "MZ" {
		t.Errorf("systemd-bootx64.efi does not start with MZ: % x", b[:min(len(b), 8)])
	}
	if !strings.HasPrefix(version, "25") {
		t.Errorf("version %q", version)
	}
	_, _, err = DebFile(context.Background(), deb, "usr/lib/nothing")
	if err == nil || !strings.Contains(err.Error(), "usr/lib/nothing") || !strings.Contains(err.Error(), deb) {
		t.Errorf("missing file: %v", err)
	}
}
