#!/usr/bin/env bash
# fetch-wifi-firmware.sh: downloads Debian's firmware-brcm80211 (the
# Raspberry Pi boards' brcmfmac Wi-Fi firmware, non-free-firmware) into
# .cache/debs/firmware-brcm80211-all.deb unless it is already there, and
# checks its SHA-256. ingot.yaml's network.wifi.firmware_deb names it. The
# version is trixie's: bookworm's lacks the Zero 2 W's NVRAM file.
set -euo pipefail
cd "$(dirname "$0")/.."
url=http://deb.debian.org/debian/pool/non-free-firmware/f/firmware-nonfree/firmware-brcm80211_20250410-2_all.deb
sha256=266cc703e2299f5253fd1ff9a1fd625d85a2c8e5a88b1a65fcc190ac384ce3d7
out=.cache/debs/firmware-brcm80211-all.deb
if [ -s "$out" ] && echo "$sha256  $out" | sha256sum -c --quiet - 2>/dev/null; then
  exit 0
fi
mkdir -p "$(dirname "$out")"
curl -fsSL -o "$out.tmp" "$url"
if ! echo "$sha256  $out.tmp" | sha256sum -c --quiet -; then
  rm -f "$out.tmp"
  echo "fetch-wifi-firmware: $url: SHA-256 mismatch" >&2
  exit 1
fi
mv "$out.tmp" "$out"
echo "fetch-wifi-firmware: $out <- $(basename "$url")"
