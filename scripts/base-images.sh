#!/usr/bin/env bash
# Local base images for a Docker engine that cannot pull (no registry reachable), made from
# Debian's own packages: `debootstrap --variant=minbase bookworm` imported once as
# cryptocast-local/debian:bookworm (kept by tag), then the stand-ins for python:3.11-slim-bookworm
# and redis:7 built on it from deploy/offline/*.Dockerfile (BuildKit's cache makes a rebuild a
# no-op). Needs root (debootstrap) and a reachable Debian mirror (DEBIAN_MIRROR).
set -euo pipefail
DOCKER=${DOCKER:-docker}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${CRYPTOCAST_DOCKER_STATE:-/var/lib/cryptocast-docker}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_TAG=cryptocast-local/debian:bookworm

if ! "$DOCKER" image inspect "$DEBIAN_TAG" >/dev/null 2>&1; then
  rootfs="$STATE/rootfs-bookworm"
  rm -rf "$rootfs"
  echo "base images: debootstrap --variant=minbase bookworm from $MIRROR (once; log $STATE/debootstrap.log)" >&2
  debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$STATE/debootstrap.log" 2>&1 \
    || { tail -n 20 "$STATE/debootstrap.log" >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" --numeric-owner -c . \
    | "$DOCKER" import -c 'ENV LANG=C.UTF-8' -c 'CMD ["bash"]' - "$DEBIAN_TAG" >/dev/null
  rm -rf "$rootfs"
fi
for name in python:3.11-bookworm redis:7-bookworm; do
  file="$ROOT/deploy/offline/${name%%:*}.Dockerfile"
  DOCKER_BUILDKIT=1 "$DOCKER" build -q --build-arg BASE_IMAGE="$DEBIAN_TAG" \
    -t "cryptocast-local/$name" -f "$file" "$ROOT/deploy/offline" >/dev/null
done
