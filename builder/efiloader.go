package builder

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ingotdev/ingot/builder/config"
)

// efiLoaderFileName is the file name scripts/setup.sh (fetch-deb.sh) gives
// Debian's systemd-boot-efi package for arch.
func efiLoaderFileName(arch string) string { return "systemd-boot-efi-" + arch + ".deb" }

// EFILoaderLockKey is the ingot.lock key of the systemd-boot-efi package
// for arch.
func EFILoaderLockKey(arch string) string { return "deb:systemd-boot-efi-" + arch }

// resolveEFILoader finds Debian's systemd-boot-efi package, whose
// systemd-boot becomes the UEFI loader of a VM image (package bls). It is
// the one place that knows where the package comes from; the first of
// these that is set or works wins:
//
//  1. $INGOT_SYSTEMD_BOOT_DEB_<ARCH> (must exist);
//  2. the package pinned in the appliance's ingot.lock (or ingot's
//     default pin, then written there): <cache>/debs/<file>, downloaded
//     from the Debian archive and verified when missing (PinnedDeb);
//  3. only when 2 fails (offline): <ingot source>/.cache/debs/
//     systemd-boot-efi-<arch>.deb, which `make setup`
//     (scripts/fetch-deb.sh) fills.
//
// Raspberry Pi targets boot through their own firmware and need none ("").
func resolveEFILoader(ctx context.Context, cfg *config.Config, target config.Target, ingotDir string, o options) (string, error) {
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
	pinned, fetchErr := PinnedDeb(ctx, cfg.Dir, DebFetcher(o.cacheDir, o.debMirror, o.progress), EFILoaderLockKey(arch))
	if fetchErr == nil {
		return pinned, nil
	}
	var tried []string
	if ingotDir != "" {
		p := filepath.Join(ingotDir, ".cache", "debs", efiLoaderFileName(arch))
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
		tried = append(tried, p)
	}
	return "", fmt.Errorf("builder: no UEFI loader for %s: %w; set $%s, or put Debian's systemd-boot-efi for %s (scripts/fetch-deb.sh systemd-boot-efi %s) at: %s",
		target, fetchErr, v, arch, arch, strings.Join(tried, ", "))
}
