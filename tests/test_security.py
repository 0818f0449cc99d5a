"""Security: no pickle anywhere, the Redis password is honoured and never logged."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cryptocast.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["config", "storage", "ingest", "forecaster", "web", "cryptocast", "bench"]
UNSAFE = re.compile(
    r"\bimport (c?pickle|dill|shelve|marshal)\b|\bfrom (c?pickle|dill|shelve) import"
    r"|\bjoblib\.load\b|allow_pickle\s*=\s*True|\bsafe_mode\s*=\s*False|torch\.load\("
)


def test_no_pickle_or_unsafe_deserialisation_in_our_code() -> None:
    offenders = []
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if UNSAFE.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []


def _status(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "CRYPTOCAST_REDIS_URL": url,
        "CRYPTOCAST_LOG_LEVEL": "DEBUG",
        "CRYPTOCAST_SERIES": "binance:BTC/USDT:1m",
        **dict(e.split("=", 1) for e in extra),
    }
    return subprocess.run(
        [sys.executable, "-m", "cryptocast", "status", "--json"],
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_redis_password_is_required_honoured_and_never_shown(tmp_path: Path) -> None:
    secret = "s3cret-Pa55word"
    server = RedisServer(tmp_path / "redis", password=secret, appendonly=False)
    server.start()
    try:
        plain = f"redis://127.0.0.1:{server.port}/0"
        refused = _status(plain)  # no password: Redis refuses, one line, nothing leaked
        assert refused.returncode == 3 and "Authentication required" in refused.stderr
        wrong = _status(f"redis://:wrong-{secret}@127.0.0.1:{server.port}/0")
        assert wrong.returncode == 3 and secret not in wrong.stderr + wrong.stdout
        assert ":***@" in wrong.stderr
        ok_url = _status(f"redis://:{secret}@127.0.0.1:{server.port}/0")
        assert ok_url.returncode in (0, 1), ok_url.stderr  # 1: no candles yet = stale
        ok_setting = _status(plain, f"CRYPTOCAST_REDIS_PASSWORD={secret}")
        assert ok_setting.returncode in (0, 1), ok_setting.stderr
        for r in (refused, wrong, ok_url, ok_setting):
            assert secret not in r.stdout + r.stderr
    finally:
        server.stop()


def test_unreachable_redis_fails_fast_with_one_masked_line() -> None:
    t0 = time.monotonic()
    r = _status("redis://:hunter2@nowhere:1")
    assert time.monotonic() - t0 < 15  # seconds, not a hang (Python start-up included)
    assert r.returncode == 3
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert lines[0].startswith("cryptocast: error: cannot reach Redis at redis://:***@nowhere:1")
    assert "hunter2" not in r.stderr + r.stdout
