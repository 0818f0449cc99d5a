"""``cryptocast backfill`` shows a progress bar on a terminal, and only there."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

import orjson

from cryptocast.redis_server import RedisServer
from tests.market_data import ARCHIVE

SERIES = "binance:PROGRESS/USDT:1h"  # its own series: other tests leave theirs
BTC_1H_GZ = ARCHIVE / "btcusdt_binance_1h.csv.gz"  # the shipped file as it is, gzip
ARGS = ["backfill", "--source", "csv", "--file", str(BTC_1H_GZ), "--series", SERIES]


def _env(redis_server: RedisServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOCAST_")}
    env.update(CRYPTOCAST_REDIS_URL=redis_server.url, COLUMNS="100", TERM="xterm")
    return env


def _on_a_terminal(args: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal; its exit code and output."""
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cryptocast", *args], stdout=child, stderr=child, env=env
    )
    os.close(child)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(main)
    return proc.wait(timeout=30), out.decode(errors="replace")


def test_progress_on_a_terminal_only(redis_server: RedisServer) -> None:
    env = _env(redis_server)
    code, out = _on_a_terminal(ARGS, env)
    assert code == 0, out
    assert f"csv → {SERIES}" in out  # the bar's label
    assert "27083" in out.replace(",", "")  # the report after it

    # --json on a terminal: the JSON report alone
    code, out = _on_a_terminal([*ARGS, "--json"], env)
    assert code == 0, out
    assert "csv →" not in out
    report = orjson.loads(out[out.index("{") :])
    assert report["skipped"] == 27083 and report["holes"] == [
        {"first": 1679662800000, "last": 1679662800000, "count": 1}
    ]

    # output piped: no bar either, on stdout or stderr
    piped = subprocess.run(
        [sys.executable, "-m", "cryptocast", *ARGS],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    assert "csv →" not in piped.stdout + piped.stderr
    assert "27083" in piped.stdout.replace(",", "")
