#!/usr/bin/env bash
# fetch-deb.sh PACKAGE ARCH: downloads Debian's PACKAGE for ARCH (a foreign
# architecture must have been added with dpkg --add-architecture) into
# .cache/debs/PACKAGE-ARCH.deb unless it is already there. Tests unpack what
# they need from it, e.g. busybox-static for arm64 container images.
set -euo pipefail
pkg=${1:?usage: fetch-deb.sh PACKAGE ARCH}
arch=${2:?usage: fetch-deb.sh PACKAGE ARCH}
cd "$(dirname "$0")/.."
dir=.cache/debs
out=$dir/$pkg-$arch.deb
[ -s "$out" ] && exit 0
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 777 "$tmp"
(cd "$tmp" && apt-get download -q "$pkg:$arch" 2>&1 | grep -v -e unsandboxed -e '^Get:' -e '^Fetched' || true)
deb=$(ls "$tmp"/*.deb 2>/dev/null || true)
[ -n "$deb" ] || { echo "fetch-deb: cannot download $pkg:$arch (apt-get update? dpkg --add-architecture $arch?)" >&2; exit 1; }
mv "$deb" "$out.tmp" && mv "$out.tmp" "$out"
echo "fetch-deb: $out <- $(basename "$deb")"
