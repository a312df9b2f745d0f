package builder

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ingotdev/ingot/builder/config"
)

// efiLoaderFileName is the file name scripts/setup.sh (fetch-deb.sh) gives
// Debian's systemd-boot-efi package for arch.
func efiLoaderFileName(arch string) string { return "systemd-boot-efi-" + arch + ".deb" }

// resolveEFILoader finds Debian's systemd-boot-efi package, whose
// systemd-boot becomes the UEFI loader of a VM image (package bls). It is
// the one place that knows where the package comes from; the first of
// these that is set or exists wins:
//
//  1. $INGOT_SYSTEMD_BOOT_DEB_<ARCH> (must exist);
//  2. <cache>/debs/systemd-boot-efi-<arch>.deb (the artifact cache);
//  3. <ingot source>/.cache/debs/systemd-boot-efi-<arch>.deb, which
//     `make setup` (scripts/fetch-deb.sh) fills.
//
// Raspberry Pi targets boot through their own firmware and need none ("").
func resolveEFILoader(target config.Target, ingotDir string, o options) (string, error) {
	if !target.IsVM() {
		return "", nil
	}
	arch := target.Arch()
	v := "INGOT_SYSTEMD_BOOT_DEB_" + strings.ToUpper(arch)
	if p := o.getenv(v); p != "" {
		abs, err := filepath.Abs(p)
		if err == nil {
			_, err = os.Stat(abs)
		}
		if err != nil {
			return "", fmt.Errorf("builder: UEFI loader for %s ($%s): %w", target, v, err)
		}
		return abs, nil
	}
	tried := []string{filepath.Join(o.cacheDir, "debs", efiLoaderFileName(arch))}
	if ingotDir != "" {
		tried = append(tried, filepath.Join(ingotDir, ".cache", "debs", efiLoaderFileName(arch)))
	}
	for _, p := range tried {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("builder: no UEFI loader for %s: set $%s, or put Debian's systemd-boot-efi for %s (scripts/fetch-deb.sh systemd-boot-efi %s) at one of: %s",
		target, v, arch, arch, strings.Join(tried, ", "))
}
