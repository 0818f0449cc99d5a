"""A series that stops updating is reported stale: by `status` (the healthcheck fails) and by
the metrics, whose lag keeps growing instead of freezing at its last healthy value."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import orjson
import pytest

from cryptocast.redis_server import RedisServer, free_port
from tests.e2e_support import Service, service_env, start_replay, wait_for

pytestmark = pytest.mark.slow

SERIES = "binance:LINK/USDT:1m"


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def gauge(text: str, name: str) -> float | None:
    m = re.search(rf'^{name}\{{series="{re.escape(SERIES)}"\}} (\S+)$', text, re.M)
    return None if m is None else float(m.group(1))


async def test_silent_series_is_stale_in_status_and_metrics(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # 1,000 candles of history and 100 live ones, one every 0.1 s: then the exchange goes quiet
    exchange = await start_replay(["LINK/USDT"], 1100, tmp_path, speed=600)
    port = free_port()
    env = service_env(
        redis_server.url, exchange, [SERIES], CRYPTOCAST_METRICS_PORT=str(port), stale_after=3
    )
    ingest = Service("ingest", env, tmp_path).start()
    status_cmd = [sys.executable, "-m", "cryptocast", "status", "--json"]
    try:

        async def fresh() -> bool:
            try:
                return gauge(await asyncio.to_thread(scrape, port), "cryptocast_series_stale") == 0
            except OSError:
                return False

        await wait_for(fresh, 30, "a fresh series while candles flow", on_fail=ingest.tail)

        async def stale() -> bool:
            text = await asyncio.to_thread(scrape, port)
            return gauge(text, "cryptocast_series_stale") == 1

        await wait_for(
            stale, 40, "the metrics to call the silent series stale", on_fail=ingest.tail
        )
        lag1 = gauge(await asyncio.to_thread(scrape, port), "cryptocast_ingest_lag_seconds")

        async def lag_grows() -> bool:
            lag2 = gauge(await asyncio.to_thread(scrape, port), "cryptocast_ingest_lag_seconds")
            return lag1 is not None and lag2 is not None and lag2 > lag1

        await wait_for(lag_grows, 20, "the lag to keep growing")
        status = await asyncio.to_thread(
            subprocess.run, status_cmd, env=env, capture_output=True, timeout=60
        )
        assert status.returncode == 1, status.stderr.decode()[-2000:]
        report = orjson.loads(status.stdout)["series"][0]
        assert report["series"] == SERIES and report["stale"] is True
        assert any("last candle closed" in r for r in report["stale_reasons"])
        assert report["candles"] >= 1000
    finally:
        assert ingest.terminate() == 0, ingest.tail()
        await exchange.stop()
