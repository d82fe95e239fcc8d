#!/usr/bin/env bash
# Install Debian's Chromium and ChromeDriver for the HTML report test (needs root and apt).
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi
[ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || exit 1
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
