#!/usr/bin/env bash
# Make sure Debian's Chromium is at /usr/bin/chromium: the dashboard's browser test drives it
# through Playwright (which cannot download its own browsers offline). Installs the package when
# missing and we are root (or have sudo); otherwise says how, and the test skips itself.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
echo "chromium not found: installing it with apt-get" >&2
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
  echo "warning: chromium is missing and we are not root; the browser test will be skipped." >&2
  echo "  sudo apt-get install -y chromium   (Debian/Ubuntu)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
test -x /usr/bin/chromium
