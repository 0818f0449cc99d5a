# cryptocast image: `cryptocast ingest`, `cryptocast forecast`, `cryptocast web`, `cryptocast status`.
# Two stages: dependencies and the project are installed into /opt/venv in `build` (which may
# compile), and only that venv is copied into a clean slim image that runs as a non-root user.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# A compiler, in case a dependency has no wheel for this platform; it stays in this stage.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from pyproject.toml alone: this layer is reused until pyproject changes,
# so editing the code rebuilds in seconds.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install --upgrade pip \
 && pip install -r /tmp/requirements.txt
# Then the code, installed as `make install` installs it (`pip install .`, here without the dev
# extras and not editable); the dependencies above already satisfy it.
COPY . .
RUN pip install . && python -c "import cryptocast.cli, forecaster.model, ingest.service, web.app"

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 cryptocast \
 && useradd --system --uid 10001 --gid cryptocast --create-home --home-dir /home/cryptocast cryptocast
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=3 \
    MPLCONFIGDIR=/tmp/matplotlib \
    CRYPTOCAST_LOG_FORMAT=json \
    CRYPTOCAST_DATA_DIR=/home/cryptocast/var \
    CRYPTOCAST_MODEL_CACHE_DIR=/home/cryptocast/var/models
WORKDIR /home/cryptocast
# Numeric, so orchestrators that check runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 9100
ENTRYPOINT ["cryptocast"]
CMD ["status"]
