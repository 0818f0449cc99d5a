#!/usr/bin/env bash
# Build the cryptocast image from the Dockerfile (as `docker compose build` would), passing what an
# offline machine needs: the base image (CRYPTOCAST_PYTHON_IMAGE, default python:3.11-slim-bookworm),
# the package index and the CA bundle this machine's pip is configured with (PIP_INDEX_URL /
# PIP_EXTRA_INDEX_URL, PIP_CERT, or `pip config`'s global.index-url / global.cert). The CA bundle
# goes in as a BuildKit secret, so it is in no layer. Local file:// indexes and find-links are
# not passed: a build cannot see the host's disk.
#   scripts/build-image.sh [extra docker build args]    (run through scripts/ensure-docker.sh)
set -euo pipefail
# A client with BuildKit: `docker` with buildx, else Debian's 20.10 client (BuildKit built in).
if [ -z "${DOCKER:-}" ]; then
  DOCKER=docker
  if ! docker buildx version >/dev/null 2>&1 && [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; fi
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TAG=${CRYPTOCAST_IMAGE:-cryptocast:latest}

pip_setting() {  # env var, else `pip config get global.<key>`
  local env=$1 key=$2
  if [ -n "${!env:-}" ]; then printf '%s' "${!env}"; return; fi
  python3 -m pip config get "global.$key" 2>/dev/null || true
}
remote_only() { tr ' ' '\n' | grep -E '^https?://' | paste -sd ' ' - || true; }

args=(--build-arg "PYTHON_IMAGE=${CRYPTOCAST_PYTHON_IMAGE:-python:3.11-slim-bookworm}")
index=$(pip_setting PIP_INDEX_URL index-url | remote_only)
extra=$(pip_setting PIP_EXTRA_INDEX_URL extra-index-url | remote_only)
cert=$(pip_setting PIP_CERT cert)
[ -n "$index" ] && args+=(--build-arg "PIP_INDEX_URL=$index")
[ -n "$extra" ] && args+=(--build-arg "PIP_EXTRA_INDEX_URL=$extra")
if [ -n "$cert" ] && [ -r "$cert" ]; then args+=(--secret "id=pip_cert,src=$cert"); fi

echo "building $TAG (base ${CRYPTOCAST_PYTHON_IMAGE:-python:3.11-slim-bookworm}${cert:+, CA bundle $cert}${index:+, index $index})" >&2
DOCKER_BUILDKIT=1 "$DOCKER" build --progress=plain "${args[@]}" -t "$TAG" "$@" "$ROOT"
