# Stand-in for python:3.11-slim-bookworm where no registry is reachable: Debian bookworm's own
# Python 3.11 (with venv/ensurepip) on a debootstrap'ed minbase imported as BASE_IMAGE.
# Built by scripts/base-images.sh; users with Docker Hub never need it.
ARG BASE_IMAGE=cryptocast-local/debian:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv python-is-python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ENV LANG=C.UTF-8
CMD ["python3"]
