"""Driving the real docker-compose.yml against a Docker engine, for the deployment test.

The engine comes from scripts/ensure-docker.sh (``make test`` runs pytest through it): DOCKER_HOST
points at it and DOCKER names a client with BuildKit. Compose is Debian's docker-compose (v1) or
the ``docker compose`` plugin, whichever exists.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def docker_cli() -> str:
    return os.environ.get("DOCKER", "docker")


def engine_problem() -> str | None:
    """Why no Docker engine can be used here (None when one answers)."""
    if shutil.which(docker_cli()) is None:
        return "no docker client (run through scripts/ensure-docker.sh, as `make test` does)"
    probe = subprocess.run(
        [docker_cli(), "info"], capture_output=True, text=True, timeout=30, check=False
    )
    if probe.returncode != 0:
        detail = probe.stderr.strip()[-300:]
        return f"no Docker engine answers ({detail}); see scripts/ensure-docker.sh"
    return None


def compose_base() -> list[str] | None:
    v1 = shutil.which("docker-compose")
    if v1:
        return [v1]
    probe = subprocess.run([docker_cli(), "compose", "version"], capture_output=True, check=False)
    return [docker_cli(), "compose"] if probe.returncode == 0 else None


def clean_env() -> dict[str, str]:
    """The caller's environment without settings that would override the project's .env."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CRYPTOCAST_", "COMPOSE_", "REPLAY_"))
    }


def wait_until(
    check: Callable[[], T],
    within_s: float,
    what: str,
    interval: float = 1.0,
    on_fail: Callable[[], str] | None = None,
) -> T:
    """Poll ``check`` until it returns something truthy, or fail after ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            detail = on_fail() if on_fail else ""
            raise AssertionError(f"timed out after {within_s}s waiting for {what}\n{detail}")
        time.sleep(interval)


@dataclass
class Stack:
    """One compose project in ``directory`` (docker-compose.yml, the override and .env)."""

    directory: Path
    project: str
    profiles: tuple[str, ...] = ("web",)

    def compose(
        self, *args: str, timeout: float = 300, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        base = compose_base()
        assert base is not None, "no compose tool"
        cmd = [*base, "--project-name", self.project, "--project-directory", str(self.directory)]
        for name in ("docker-compose.yml", "docker-compose.override.yml"):
            cmd += ["-f", str(self.directory / name)]
        for p in self.profiles:
            cmd += ["--profile", p]
        proc = subprocess.run(
            [*cmd, *args],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=self.directory,
            env=clean_env(),
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"compose {' '.join(args)} failed ({proc.returncode}):\n"
                f"{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [docker_cli(), *args], capture_output=True, text=True, timeout=120, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed:\n{proc.stderr}")
        return proc

    def container(self, service: str) -> str:
        """The id of the service's (single) container; '' when it has none."""
        return self.compose("ps", "-q", service).stdout.strip()

    def inspect(self, service: str) -> dict[str, Any]:
        cid = self.container(service)
        assert cid, f"{service} has no container"
        data = json.loads(self.docker("inspect", cid).stdout)
        assert isinstance(data, list) and len(data) == 1
        return dict(data[0])

    def health(self, service: str) -> str:
        cid = self.container(service)
        if not cid:
            return "missing"
        fmt = "{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}"
        out = self.docker("inspect", "-f", fmt, cid, check=False)
        return out.stdout.strip()

    def all_healthy(self, services: tuple[str, ...]) -> bool:
        return all(self.health(s) == "running/healthy" for s in services)

    def process_uids(self, service: str) -> set[int]:
        """Real uids of every process in the service's container, as the host sees them."""
        out = self.docker("top", self.container(service), "-eo", "pid,uid,args").stdout
        return {int(line.split()[1]) for line in out.splitlines()[1:] if line.strip()}

    def probe(self, service: str = "web") -> dict[str, Any]:
        """tests/deploy/probe.py run in ``service``'s container: Redis as the services see it."""
        script = (ROOT / "tests/deploy/probe.py").read_text()
        proc = self.compose("exec", "-T", service, "python", "-", stdin=script, timeout=120)
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert isinstance(result, dict)
        return result

    def logs(self, *services: str, tail: int = 60) -> str:
        """The last ``tail`` lines of each service's log (0: all of them)."""
        args = ["logs", "--no-color"] + (["--tail", str(tail)] if tail else [])
        proc = self.compose(*args, *services, check=False)
        return proc.stdout[-8000:] + proc.stderr[-2000:] if tail else proc.stdout + proc.stderr

    def metrics(self, service: str) -> str:
        """The service's Prometheus metrics, read inside its container ('' when it has none)."""
        code = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9100/metrics').read().decode())"
        proc = self.compose("exec", "-T", service, "python", "-c", code, check=False)
        return proc.stdout if proc.returncode == 0 else ""
