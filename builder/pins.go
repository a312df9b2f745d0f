package builder

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/ingotdev/ingot/builder/debfetch"
	"github.com/ingotdev/ingot/packer/rpiboot"
)

// debPinSnapshot is the snapshot.debian.org time at which the archives
// held every default pin below: the fallback once a newer security update
// has replaced a kernel on the mirror.
const debPinSnapshot = "20261204T000000Z"

// defaultDebPins are the Debian packages a build fetches itself when
// nothing else names them, by lock key ("deb:" and the name
// scripts/fetch-kernel.sh and scripts/fetch-deb.sh give the file). An
// appliance's ingot.lock wins over this table; a build that uses a default
// writes it into the lock, so the appliance keeps its kernel when ingot's
// defaults move on. The versions are what apt resolves today for the
// linux-image-cloud-ARCH metapackage (bookworm-security) and for
// systemd-boot-efi (bookworm).
var defaultDebPins = map[string]debfetch.Pin{
	"deb:linux-image-cloud-amd64": {
		Path:     "debian-security/pool/updates/main/l/linux-signed-amd64/linux-image-6.1.0-57-cloud-amd64_6.1.192-3_amd64.deb",
		Size:     26705532,
		SHA256:   "4fdd0172a8c3f41a97e92465b2ac1867e1c10d82d7aeed3d26ee7a5d14df1754",
		Snapshot: debPinSnapshot,
	},
	"deb:linux-image-cloud-arm64": {
		Path:     "debian-security/pool/updates/main/l/linux-signed-arm64/linux-image-6.1.0-57-cloud-arm64_6.1.192-3_arm64.deb",
		Size:     21351316,
		SHA256:   "51952bf54e96b0bc6263fb51a47b79e206dca0213cd5421162bc55cddbd6e51e",
		Snapshot: debPinSnapshot,
	},
	"deb:systemd-boot-efi-amd64": {
		Path:     "debian/pool/main/s/systemd/systemd-boot-efi_252.39-1~deb12u2_amd64.deb",
		Size:     113136,
		SHA256:   "8f2b81bdcfafc466882a0cae460272dbf10d8d97c6a3c1c6ea33038c155a2f5e",
		Snapshot: debPinSnapshot,
	},
	"deb:systemd-boot-efi-arm64": {
		Path:     "debian/pool/main/s/systemd/systemd-boot-efi_252.39-1~deb12u2_arm64.deb",
		Size:     95472,
		SHA256:   "d75fbbfa90d37d409e7e65f1149afd770bc17daa3f15f49ef651f608fe7e1dbc",
		Snapshot: debPinSnapshot,
	},
}

// DebFetcher returns the fetcher of pinned Debian packages for a build
// with cache directory cacheDir (its debs/ subdirectory) and mirror, the
// root of a Debian mirror without a snapshot.debian.org fallback (empty:
// deb.debian.org, then snapshot.debian.org).
func DebFetcher(cacheDir, mirror string, progress io.Writer) *debfetch.Fetcher {
	return &debfetch.Fetcher{Dir: filepath.Join(cacheDir, "debs"), Mirror: mirror, NoSnapshot: mirror != "", Progress: progress}
}

// KernelLockKey is the lock key of the Debian cloud kernel of arch.
func KernelLockKey(arch string) string { return "deb:linux-image-cloud-" + arch }

// PinnedDeb returns the path of the Debian package key (for example
// "deb:systemd-boot-efi-amd64") in f's cache directory, fetching and
// verifying it first when it is not there. The pin comes from dir's
// ingot.lock, or from ingot's default, which is then written to the lock.
// Errors name the lock file and the key, or the URL and both digests.
func PinnedDeb(ctx context.Context, dir string, f *debfetch.Fetcher, key string) (string, error) {
	lock, err := rpiboot.ReadLock(dir)
	if err != nil {
		return "", fmt.Errorf("builder: %w", err)
	}
	var pin debfetch.Pin
	if v, ok := lock[key]; ok {
		pin, err = debfetch.ParsePin(v)
		if err != nil {
			return "", fmt.Errorf("builder: %s: %s: %w", filepath.Join(dir, rpiboot.LockFile), key, err)
		}
	} else {
		def, ok := defaultDebPins[key]
		if !ok {
			return "", fmt.Errorf("builder: no pin for %s in %s, and ingot has no default", key, filepath.Join(dir, rpiboot.LockFile))
		}
		pin = def
	}
	path, err := f.Fetch(ctx, pin)
	if err != nil {
		return "", fmt.Errorf("builder: %s (pinned in %s): %w", key, filepath.Join(dir, rpiboot.LockFile), err)
	}
	if _, ok := lock[key]; !ok {
		lock[key] = pin.String()
		if err := lock.Write(dir); err != nil {
			return "", fmt.Errorf("builder: %w", err)
		}
	}
	return path, nil
}
