#!/usr/bin/env bash
# Make sure redis-server (>= 7) is on PATH: tests, benchmarks, `cryptocast up` and the demo start
# private ones. Installs Debian/Ubuntu's package when missing and we are root (or have sudo).
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
echo "redis-server not found: installing it with apt-get" >&2
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
  echo "error: redis-server is missing and we are not root. Install it yourself, e.g." >&2
  echo "  sudo apt-get install -y redis-server   (Debian/Ubuntu)" >&2
  echo "  brew install redis                     (macOS)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null
# The package starts a system service on 6379; we only need the binary.
command -v redis-server >/dev/null
