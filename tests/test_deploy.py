"""Deployment files: docker-compose.yml as compose itself reads it, the Dockerfile, .env.example.

``docker-compose config`` (Debian's v1, installed by ``make test`` through
scripts/ensure-compose.sh) or ``docker compose config`` parses and interpolates the file offline;
no Docker engine is needed. The compose checks skip only when neither tool exists.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "test-Secret-123"
APP_SERVICES = ("ingest", "forecaster")


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return [docker, "compose"]
    v1 = shutil.which("docker-compose")
    return [v1] if v1 else None


def run_config(
    tmp_path: Path, dotenv: str | None, *profiles: str
) -> subprocess.CompletedProcess[str]:
    """``compose config`` on a copy of the files in a clean folder (no developer's .env)."""
    cmd = compose_command()
    if cmd is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed (make compose)")
    for name in ("docker-compose.yml", "Dockerfile", ".env.example"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    if dotenv is not None:
        (tmp_path / ".env").write_text(dotenv)
    args = [*cmd, "-f", str(tmp_path / "docker-compose.yml")]
    for p in profiles:
        args += ["--profile", p]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CRYPTOCAST_", "GRAFANA_", "PROMETHEUS_", "COMPOSE_"))
    }
    return subprocess.run(
        [*args, "config"], capture_output=True, text=True, env=env, cwd=tmp_path, check=False
    )


def config(tmp_path: Path, *profiles: str) -> dict[str, Any]:
    proc = run_config(tmp_path, f"CRYPTOCAST_REDIS_PASSWORD={PASSWORD}\n", *profiles)
    assert proc.returncode == 0, proc.stderr
    parsed = yaml.safe_load(proc.stdout)
    assert isinstance(parsed, dict)
    return parsed


def published(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host ip, published port) of each published port, in either compose output style."""
    out = []
    for p in service.get("ports", []):
        if isinstance(p, dict):
            out.append((str(p.get("host_ip", "0.0.0.0")), str(p.get("published"))))
        else:
            parts = str(p).split(":")
            out.append((parts[0] if len(parts) == 3 else "0.0.0.0", parts[-2]))
    return out


def test_compose_parses_and_redis_requires_a_password_and_stays_private(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    services = cfg["services"]
    assert {"redis", *APP_SERVICES} <= set(services)
    for name in ("prometheus", "grafana"):  # only with --profile monitoring
        if name in services:  # compose v1 lists profiled services too, with their profiles
            assert services[name]["profiles"] == ["monitoring"]
    for name in ("redis", *APP_SERVICES):
        assert not services[name].get("profiles"), f"{name} must start by default"
    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    command = " ".join(redis["command"]) if isinstance(redis["command"], list) else redis["command"]
    assert "--requirepass" in command and "--appendonly yes" in command
    assert redis["environment"]["REDIS_PASSWORD"] == PASSWORD
    assert "ports" not in redis, "Redis must not be published on the host by default"
    assert any("/data" in str(v) for v in redis["volumes"])
    # the check authenticates, with the password from the container's environment
    assert "-a" in " ".join(redis["healthcheck"]["test"])
    assert "REDIS_PASSWORD" in " ".join(redis["healthcheck"]["test"])
    for name in APP_SERVICES:
        svc = services[name]
        env = svc["environment"]
        assert env["CRYPTOCAST_REDIS_URL"] == "redis://redis:6379/0"
        assert env["CRYPTOCAST_REDIS_PASSWORD"] == PASSWORD
        assert env["CRYPTOCAST_LOG_FORMAT"] == "json"
        assert svc["restart"] in ("unless-stopped", "always")
        assert svc["healthcheck"]["test"] and svc["healthcheck"].get("start_period")
        assert svc.get("user") in (None, "10001:10001"), "services must not run as root"
        assert "ports" not in svc
    assert services["ingest"]["command"] == ["ingest"]
    assert services["forecaster"]["command"] == ["forecast"]


def test_compose_without_a_password_refuses_to_start(tmp_path: Path) -> None:
    proc = run_config(tmp_path, None)
    assert proc.returncode != 0
    assert "CRYPTOCAST_REDIS_PASSWORD" in proc.stderr


def test_monitoring_profile_scrapes_both_services_and_publishes_on_loopback_only(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path, "monitoring", "web")
    services = cfg["services"]
    assert {"prometheus", "grafana", "web"} <= set(services)
    for name, svc in services.items():
        for host_ip, _port in published(svc):
            assert host_ip == "127.0.0.1", f"{name} is published beyond loopback"
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {
        (n, sd["port"]) for job in prom["scrape_configs"] for sd in job["dns_sd_configs"]
        for n in sd["names"]
    }  # fmt: skip
    assert targets == {("ingest", 9100), ("forecaster", 9100)}
    for name in APP_SERVICES:
        assert services[name]["environment"]["CRYPTOCAST_METRICS_PORT"] == "9100"
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/cryptocast.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in (
        "cryptocast_candles_ingested_total",
        "cryptocast_candles_rejected_total",
        "cryptocast_ingest_lag_seconds",
        "cryptocast_prediction_latency_seconds_bucket",
        "cryptocast_training_seconds",
        "cryptocast_model_age_candles",
        "cryptocast_live_mase",
        "cryptocast_events_pending",
    ):
        assert metric in exprs, metric


def test_dockerfile_runs_as_non_root_with_a_cached_dependency_layer() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert len(stages) >= 2, "a build stage and a clean runtime stage"
    final = stages[-1]
    users = re.findall(r"^USER\s+(\S+)", final, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must not run as root"
    assert "build-essential" not in final and "gcc" not in final
    assert final.startswith("${PYTHON_IMAGE}") and "python:3.11-slim" in text
    build = "".join(stages[:-1])
    # pyproject (dependencies) before the code, so code edits reuse the dependency layer
    assert build.index("COPY pyproject.toml") < build.index("pip install -r")
    assert build.index("pip install -r") < build.index("COPY . .")
    code = re.search(r"^RUN pip (wheel|install) (--[a-z-]+ )*(--wheel-dir \S+ )?\.$", build, re.M)
    assert code, "the code is built as `make install` builds it: pip from the checkout"
    assert build.index("COPY . .") < code.start()
    # the code needs no index: the build backend came with the dependencies
    assert "--no-build-isolation" in code.group(0) and "build-system" in build
    # ...and lands in the runtime image as a layer of its own, after the dependencies' layer
    assert final.index("COPY --from=deps /opt/venv") < final.index("pip install --no-deps")
    # offline builds: the base image and the CA bundle come in from outside, the CA as a secret
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in text
    assert "--mount=type=secret,id=pip_cert" in build
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".env", "var", ".git"} <= set(ignored)


def test_env_example_documents_every_compose_variable() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", compose))
    documented = set(re.findall(r"^([A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), flags=re.M))
    assert used - documented == set(), f"not in .env.example: {sorted(used - documented)}"
    assert "CRYPTOCAST_REDIS_PASSWORD" in used
