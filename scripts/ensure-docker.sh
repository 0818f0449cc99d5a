#!/usr/bin/env bash
# A Docker engine for `make image` and the compose deployment test.
#
#   scripts/ensure-docker.sh CMD [ARGS...]   run CMD with a reachable engine (DOCKER_HOST exported),
#                                            then stop the engine again if this script started it
#   scripts/ensure-docker.sh                 make sure one runs (and leave it running); prints
#                                            the DOCKER_HOST to export
#
# An engine that already answers (`docker info`, DOCKER_HOST honoured) is used as it is. Otherwise,
# as root on Debian/Ubuntu, Debian's docker.io (dockerd, containerd, runc) and docker-compose (v1)
# are installed with apt-get and a private dockerd is started on its own socket, exec root and
# data root, so it never touches a system Docker. The data root is persistent
# (/var/lib/cryptocast-docker by default), which is what keeps image builds cached between runs.
# The private engine cannot pull from a registry here, so CRYPTOCAST_PYTHON_IMAGE and
# CRYPTOCAST_REDIS_IMAGE are pointed at local base images built from Debian's packages
# (scripts/base-images.sh). Without root and without an engine, CMD runs without Docker (the
# deployment test then skips and says why).
set -euo pipefail
STATE=${CRYPTOCAST_DOCKER_STATE:-/var/lib/cryptocast-docker}
RUNDIR=${CRYPTOCAST_DOCKER_RUN:-/run/cryptocast-docker}
SOCK="unix://$RUNDIR/docker.sock"
HERE=$(cd "$(dirname "$0")" && pwd)

run_or_note() {  # CMD without an engine (or nothing)
  echo "note: $1" >&2
  if [ $# -gt 1 ]; then shift; exec "$@"; fi
  exit 0
}

engine_answers() { timeout 20 "${DOCKER:-docker}" info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && engine_answers; then
  [ $# -gt 0 ] && exec "$@"
  exit 0
fi

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  run_or_note "no Docker engine reachable and not root on Debian: the compose deployment test will skip" "$@"
fi

if ! [ -x /usr/sbin/dockerd ] || ! [ -x /usr/bin/docker ] || ! command -v docker-compose >/dev/null 2>&1 \
  || ! command -v debootstrap >/dev/null 2>&1; then
  echo "no Docker engine: installing Debian's docker.io, docker-compose and debootstrap with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  pkgs=(docker.io docker-compose debootstrap iptables)
  if ! { apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null; }; }; then
    run_or_note "could not install docker.io with apt-get: the compose deployment test will skip" "$@"
  fi
fi
# Debian's client (20.10) has BuildKit built in; a newer `docker` earlier on PATH may lack buildx.
export DOCKER=/usr/bin/docker
export DOCKER_HOST=$SOCK

started=""
if ! engine_answers; then
  mkdir -p "$STATE/data" "$RUNDIR/exec"
  echo "starting a private dockerd (socket $RUNDIR/docker.sock, data $STATE/data, log $STATE/dockerd.log)" >&2
  # setsid: its own session, so a Ctrl-C of make does not hit it before we stop it ourselves.
  setsid /usr/sbin/dockerd --host "$SOCK" --data-root "$STATE/data" --exec-root "$RUNDIR/exec" \
    --pidfile "$RUNDIR/dockerd.pid" >>"$STATE/dockerd.log" 2>&1 </dev/null &
  started=$!
  for _ in $(seq 1 120); do
    engine_answers && break
    if ! kill -0 "$started" 2>/dev/null; then
      tail -n 20 "$STATE/dockerd.log" >&2
      run_or_note "dockerd did not start (log above, $STATE/dockerd.log): the deployment test will skip" "$@"
    fi
    sleep 0.5
  done
  engine_answers || { kill "$started"; run_or_note "dockerd did not answer within 60 s" "$@"; }
fi

# Every user of the private engine holds a shared lock while it runs; the one that started the
# engine waits for the others (another checkout's `make test`) before stopping it.
mkdir -p "$RUNDIR"
exec 9>"$RUNDIR/users.lock"
flock -s 9

stop_engine() {
  [ -n "$started" ] || return 0
  flock -u 9
  flock -x -w 3600 9 || true
  echo "stopping the private dockerd (pid $started)" >&2
  kill -TERM "$started" 2>/dev/null || true
  for _ in $(seq 1 120); do kill -0 "$started" 2>/dev/null || return 0; sleep 0.5; done
  kill -KILL "$started" 2>/dev/null || true
}
trap stop_engine EXIT

# No registry here: local stand-ins for python:3.11-slim-bookworm and redis:7 (cached by tag).
# If they cannot be made, the image build fails and says why (the test reports it).
"$HERE/base-images.sh" || echo "warning: scripts/base-images.sh failed (above)" >&2
export CRYPTOCAST_PYTHON_IMAGE=${CRYPTOCAST_PYTHON_IMAGE:-cryptocast-local/python:3.11-bookworm}
export CRYPTOCAST_REDIS_IMAGE=${CRYPTOCAST_REDIS_IMAGE:-cryptocast-local/redis:7-bookworm}

if [ $# -eq 0 ]; then
  started=""  # asked to leave it running
  flock -u 9
  echo "export DOCKER_HOST=$SOCK DOCKER=$DOCKER CRYPTOCAST_PYTHON_IMAGE=$CRYPTOCAST_PYTHON_IMAGE CRYPTOCAST_REDIS_IMAGE=$CRYPTOCAST_REDIS_IMAGE"
  exit 0
fi
rc=0
"$@" || rc=$?
# Images a rebuild left untagged (this private engine only; the build cache stays).
"$DOCKER" image prune -f >/dev/null 2>&1 || true
exit "$rc"
