#!/usr/bin/env bash
# Installs everything ingot's demo and tests need on a Debian or Ubuntu
# machine: QEMU, the filesystem tools used as independent judges of the
# packer's output, and the Debian cloud kernels the VM images boot.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(qemu-system-x86 qemu-system-arm qemu-utils squashfs-tools squashfs-tools-ng
  dosfstools fdisk attr mtools e2fsprogs busybox-static xz-utils zstd cpio curl
  chromium prometheus rsyslog rsyslog-gnutls ovmf qemu-efi-aarch64) # chromium: headless, for TestVMWebUI (driven with chromedp)
# tmux: TestVMExec and TestVMShell drive `ingot exec -it` and `ingot shell`
# in a real terminal.
packages+=(tmux)
# docker-registry (distribution 2.8) and skopeo: the release tests run
# against a real registry and read it with a second client.
packages+=(docker-registry skopeo)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  $sudo dpkg --add-architecture arm64
  missing+=(apt-update)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  real=()
  for p in "${missing[@]}"; do [ "$p" = apt-update ] || real+=("$p"); done
  [ ${#real[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${real[@]}" >/dev/null
fi
scripts/fetch-kernel.sh amd64
scripts/fetch-kernel.sh arm64
scripts/fetch-deb.sh busybox-static arm64
scripts/fetch-wifi-firmware.sh
# systemd-boot, the UEFI loader of VM images (builder/efiloader.go finds it).
scripts/fetch-deb.sh systemd-boot-efi amd64
scripts/fetch-deb.sh systemd-boot-efi arm64
# cosign (go.mod's tool) for the signature interop tests in mgmt/publish:
# build it once into Go's build cache now (minutes on a small machine),
# so the tests find it there (go tool -n cosign) in seconds.
"${GO:-go}" tool -n cosign >/dev/null
