#!/usr/bin/env bash
# fetch-kernel.sh ARCH: downloads Debian's cloud kernel package for ARCH
# (amd64 or arm64) into .cache/kernels/linux-image-cloud-ARCH.deb unless it
# is already there. The metapackage linux-image-cloud-ARCH only depends on
# the versioned package, so the dependency is resolved and downloaded.
set -euo pipefail
arch=${1:?usage: fetch-kernel.sh amd64|arm64}
cd "$(dirname "$0")/.."
dir=.cache/kernels
out=$dir/linux-image-cloud-$arch.deb
[ -s "$out" ] && exit 0
mkdir -p "$dir"
pkg=$(apt-cache depends "linux-image-cloud-$arch:$arch" | awk '/Depends: linux-image-/{print $2; exit}')
pkg=${pkg%%:*}
[ -n "$pkg" ] || { echo "fetch-kernel: cannot resolve linux-image-cloud-$arch (apt-get update? dpkg --add-architecture $arch?)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 777 "$tmp"
(cd "$tmp" && apt-get download -q "$pkg:$arch" 2>&1 | grep -v -e unsandboxed -e '^Get:' -e '^Fetched' || true)
deb=$(ls "$tmp"/*.deb)
mv "$deb" "$out.tmp" && mv "$out.tmp" "$out"
echo "fetch-kernel: $out <- $(basename "$deb")"
