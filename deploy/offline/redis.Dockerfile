# Stand-in for redis:7 where no registry is reachable: Debian bookworm's redis-server (7.0) on a
# debootstrap'ed minbase. Like the official image it works in /data (where the AOF goes) and
# runs as the unprivileged `redis` user. Built by scripts/base-images.sh.
ARG BASE_IMAGE=cryptocast-local/debian:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
ENV LANG=C.UTF-8
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server"]
