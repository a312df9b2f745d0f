package vmtest

import (
	"fmt"
	"os"
	"testing"
)

// Kernel returns the Debian cloud kernel package (.deb) for arch, amd64 or
// arm64, that the environment names: INGOT_KERNEL_DEB for amd64,
// INGOT_KERNEL_DEB_ARM64 for arm64. `make setup` downloads them and
// `make test` sets both. A test without its kernel fails: it never skips.
func Kernel(t testing.TB, arch string) string {
	t.Helper()
	p, err := KernelDeb(arch)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// KernelDeb is Kernel for programs that are not tests (the benches): the
// package, or an error saying which variable to set.
func KernelDeb(arch string) (string, error) {
	switch arch {
	case "amd64":
		return debPath("INGOT_KERNEL_DEB", ".cache/kernels/linux-image-cloud-amd64.deb")
	case "arm64":
		return debPath("INGOT_KERNEL_DEB_ARM64", ".cache/kernels/linux-image-cloud-arm64.deb")
	}
	return "", fmt.Errorf("vmtest: no kernel for arch %q: want amd64 or arm64", arch)
}

// BusyboxARM64 returns Debian's busybox-static package for arm64, which
// INGOT_BUSYBOX_DEB_ARM64 names.
func BusyboxARM64(t testing.TB) string {
	t.Helper()
	return debFromEnv(t, "INGOT_BUSYBOX_DEB_ARM64", ".cache/debs/busybox-static-arm64.deb")
}

// WiFiFirmware returns Debian's firmware-brcm80211 package (the Pi
// boards' Wi-Fi firmware), which INGOT_WIFI_FIRMWARE_DEB names
// (scripts/fetch-wifi-firmware.sh downloads it).
func WiFiFirmware(t testing.TB) string {
	t.Helper()
	return debFromEnv(t, "INGOT_WIFI_FIRMWARE_DEB", ".cache/debs/firmware-brcm80211-all.deb")
}

// debFromEnv returns the package that env names; cached is where
// `make setup` puts it.
func debFromEnv(t testing.TB, env, cached string) string {
	t.Helper()
	p, err := debPath(env, cached)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func debPath(env, cached string) (string, error) {
	p := os.Getenv(env)
	if p == "" {
		return "", fmt.Errorf("vmtest: %s is not set: run `make setup` and set it to %s (make test does)", env, cached)
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("vmtest: %s names a missing package: %v: run `make setup` (make test sets it to %s)", env, err, cached)
	}
	return p, nil
}
