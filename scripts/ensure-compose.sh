#!/usr/bin/env bash
# Make sure a compose tool is available for the deployment test (`docker-compose config` works
# offline, without a Docker engine): `docker compose` (v2 plugin) or `docker-compose` (v1).
# Installs Debian/Ubuntu's docker-compose package when neither exists and we are root (or have
# sudo). Best effort: without it, only tests/test_deploy.py's compose checks are skipped.
set -uo pipefail
if docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
  echo "note: no docker compose / docker-compose and not root: the compose file checks will be skipped" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "note: no apt-get to install docker-compose: the compose file checks will be skipped" >&2
  exit 0
fi
echo "docker-compose not found: installing it with apt-get (for the compose file checks)" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get install -y -qq --no-install-recommends docker-compose >/dev/null 2>&1 \
  || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; }; }; then
  echo "note: could not install docker-compose: the compose file checks will be skipped" >&2
fi
exit 0
