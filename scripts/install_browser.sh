#!/usr/bin/env bash
# A real browser for the QC browser's tests: Debian's chromium and chromium-driver, which
# selenium drives (it never downloads a browser build). Installing needs root and apt-get.
# Never fails the caller: where they cannot be installed, the browser tests skip and say why.
set -uo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi
if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
    echo "warning: chromium not installed (needs root and apt-get): the browser tests will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
packages=(chromium chromium-driver)
if ! apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null 2>&1 || {
        echo "warning: apt-get install chromium chromium-driver failed: the browser tests will skip" >&2
        exit 0
    }
fi
echo "chromium $(chromium --version 2>/dev/null | awk '{print $2}') and its driver installed"
