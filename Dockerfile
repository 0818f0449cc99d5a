# cryptocast image: `cryptocast ingest`, `cryptocast forecast`, `cryptocast web`, `cryptocast status`.
# Three stages: the dependencies are installed into /opt/venv in `deps` (which may compile), the
# project is built into a wheel in `build`, and a clean slim image gets the venv and the wheel, in
# separate layers (a code change rebuilds and ships only the small one), and runs as non-root.
# Offline/air-gapped builds (scripts/build-image.sh does this): a local base with
# `--build-arg PYTHON_IMAGE=...`, a package index with `--build-arg PIP_INDEX_URL=...`, and the CA
# bundle that index needs as a BuildKit secret, `--secret id=pip_cert,src=/path/ca.pem` (a secret
# is mounted for one RUN and never stored in a layer; no credentials go into build args).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# A compiler, in case a dependency has no wheel for this platform; it stays in this stage.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from pyproject.toml alone: this layer is reused until pyproject changes.
# The build backend (pyproject's build-system.requires) goes in with them, so the project's wheel
# below is built without any index.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
COPY pyproject.toml ./
RUN --mount=type=secret,id=pip_cert \
    if [ -f /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); print('\n'.join(p['build-system']['requires'] + p['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install --upgrade pip \
 && pip install -r /tmp/requirements.txt

# Then the code, as `make install` installs it (`pip install .`, here as a wheel, without the dev
# extras and not editable).
FROM deps AS build
COPY . .
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
# The model cache exists in the image, owned by the user: a named volume mounted there (compose's
# model-cache) takes its ownership from it; otherwise Docker makes the volume root's, unwritable.
RUN groupadd --system --gid 10001 cryptocast \
 && useradd --system --uid 10001 --gid cryptocast --create-home --home-dir /home/cryptocast cryptocast \
 && install -d -o 10001 -g 10001 /home/cryptocast/var /home/cryptocast/var/models
COPY --from=deps /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=3 \
    MPLCONFIGDIR=/tmp/matplotlib \
    CRYPTOCAST_LOG_FORMAT=json \
    CRYPTOCAST_DATA_DIR=/home/cryptocast/var \
    CRYPTOCAST_MODEL_CACHE_DIR=/home/cryptocast/var/models
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-deps --no-index /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels \
 && python -c "import cryptocast.cli, forecaster.training.model, ingest.service, web.app"
WORKDIR /home/cryptocast
# Numeric, so orchestrators that check runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 9100
ENTRYPOINT ["cryptocast"]
CMD ["status"]
