#!/usr/bin/env bash
# Real MRI for the tests, from Debian's mricron-data (Colin27: ch2.nii.gz, a real 1 mm T1 head
# with its face, and ch2bet.nii.gz, its brain extraction), unpacked without installing it.
# Usage: scripts/fetch_real_mri.sh [DEST]   (default .cache/real-mri)
# Never fails the caller: where apt-get cannot fetch it, the tests that need it skip and say why.
set -uo pipefail
dest="${1:-.cache/real-mri}"
if [[ -f "$dest/ch2.nii.gz" && -f "$dest/ch2bet.nii.gz" ]]; then exit 0; fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    echo "warning: no apt-get/dpkg-deb here: Colin27 not fetched; its tests will skip" >&2
    exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 0
if ! apt-get download mricron-data >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1
    apt-get download mricron-data >/dev/null 2>&1 || {
        echo "warning: apt-get download mricron-data failed: Colin27 tests will skip" >&2
        exit 0
    }
fi
dpkg-deb -x mricron-data_*.deb unpacked
cd - >/dev/null || exit 0
mkdir -p "$dest"
cp "$work"/unpacked/usr/share/mricron/templates/ch2.nii.gz \
   "$work"/unpacked/usr/share/mricron/templates/ch2bet.nii.gz "$dest"/
echo "Colin27 (mricron-data) unpacked into $dest"
