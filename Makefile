# cryptocast: every target installs what it needs (a .venv with the project and its dev extras,
# and redis-server through apt-get when missing), so a fresh machine needs no other step.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install redis compose chromium image test lint format docs bench run demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("cryptocast needs Python >= 3.11") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	@touch $@

redis:
	@scripts/ensure-redis.sh

# docker-compose (v1, Debian's package) only to check docker-compose.yml offline in the tests.
compose:
	@scripts/ensure-compose.sh

# Debian's Chromium for the dashboard's browser test (Playwright cannot download browsers here).
chromium:
	@scripts/ensure-chromium.sh

# The cryptocast image from the Dockerfile, as `docker compose build` builds it, through
# scripts/ensure-docker.sh: the Docker engine there is, or (root on Debian, none running) a
# private dockerd with its data in /var/lib/cryptocast-docker (so builds stay cached) that is
# stopped again afterwards, with local base images where no registry is reachable.
image:
	@scripts/ensure-docker.sh scripts/build-image.sh

# pytest runs through scripts/ensure-docker.sh too, for the compose deployment test
# (tests/test_compose_stack.py builds the image, cached, and runs the stack).
test: install redis compose chromium
	scripts/ensure-docker.sh $(PY) -m pytest $(PYTEST_ARGS)

# ruff (style, and asyncio.wait_for banned), mypy, the import contract between the layers
# (pyproject's [tool.importlinter]) and the dependencies being exactly those imported (deptry).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/deptry .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The README's configuration reference is generated from the settings model.
docs: install
	$(PY) -m cryptocast.settings_doc --write README.md

bench: install redis
	$(PY) -m bench

run: install redis
	$(VENV)/bin/cryptocast up

demo: install redis
	$(VENV)/bin/cryptocast demo

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
