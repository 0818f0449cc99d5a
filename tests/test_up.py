"""``cryptocast up``: both services and a private Redis in one command, stopped cleanly.

Real processes against the replay exchange over the bundled candles: ``up`` starts its own
redis-server when no Redis URL is configured, the ingester fills it, both services serve
metrics (ingest on N, forecaster on N+1), SIGTERM stops everything with exit code 0 and leaves
the AOF behind; a dead service takes ``up`` down with exit code 1 and nothing left running.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from config.settings import load_settings
from core.series import SeriesId
from cryptocast.demo import DEMO_MARKETS
from cryptocast.up_cmd import redis_url_configured
from replay import ReplayConfig, ReplayExchange, ReplaySource
from storage.candles import CandleStore
from storage.client import connect
from storage.keys import Keys
from tests.e2e_support import TINY_MODEL, free_port_pair, status_json, wait_for

pytestmark = pytest.mark.slow

SERIES = SeriesId.parse("binance:LINK/USDT:1m")


@pytest.fixture
async def exchange() -> AsyncIterator[ReplayExchange]:
    ex = ReplayExchange(
        ReplayConfig(
            sources=[ReplaySource(DEMO_MARKETS["LINK/USDT"], "LINK/USDT", "1m")],
            speed=60,
            exchange_info_symbols="replayed",
            ping_interval=5.0,
        )
    )
    await ex.start()
    yield ex
    await ex.stop()


def up_env(exchange: ReplayExchange, data_dir: Path, metrics_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOCAST_")}
    env.update(
        {
            "CRYPTOCAST_DATA_DIR": str(data_dir),
            "CRYPTOCAST_SERIES": SERIES.key,
            "CRYPTOCAST_CLOCK": "exchange",
            "CRYPTOCAST_BINANCE_WS_URL": exchange.ws_url.removesuffix("/ws"),
            "CRYPTOCAST_BINANCE_REST_URL": exchange.rest_url,
            "CRYPTOCAST_LOG_FORMAT": "json",
            "CRYPTOCAST_METRICS_PORT": str(metrics_port),
            "TF_CPP_MIN_LOG_LEVEL": "3",
            **TINY_MODEL,
        }
    )
    return env


class Up:
    """``python -m cryptocast up`` with its output in a file we can read while it runs."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cryptocast", "up"],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def events(self) -> list[dict[str, object]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    continue
        return out

    def event(self, name: str) -> list[dict[str, object]]:
        return [e for e in self.events() if e.get("event") == name]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); its state in /proc says it is gone.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def metrics_up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return b"cryptocast_" in r.read()
    except OSError:
        return False


async def test_up_runs_both_services_on_a_private_redis_and_stops_cleanly(
    exchange: ReplayExchange, tmp_path: Path
) -> None:
    port = free_port_pair(1)
    up = Up(up_env(exchange, tmp_path / "var", port), tmp_path / "up.log")
    try:

        async def redis_started() -> list[dict[str, object]]:
            return up.event("up.redis_started")

        started = await wait_for(redis_started, 20, "the private redis-server", on_fail=up_tail(up))
        redis_port = int(started[0]["port"])  # type: ignore[call-overload]
        redis = await connect(load_settings(redis_url=f"redis://127.0.0.1:{redis_port}/0"))
        store = CandleStore(redis, Keys())

        async def candles_and_metrics() -> bool:
            return (
                await store.count(SERIES) >= 1000
                and metrics_up(port)  # ingest
                and metrics_up(port + 1)  # forecaster
            )

        await wait_for(candles_and_metrics, 60, "candles in the private Redis and both metrics")
        await redis.aclose()
        # A second terminal with nothing configured but the data dir: it must query up's Redis
        # (not the default 6379), up's series, and judge freshness on the exchange clock.
        second = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOCAST_")}
        second["CRYPTOCAST_DATA_DIR"] = str(tmp_path / "var")
        r = await status_json(second)
        report = orjson.loads(r.stdout)
        assert report["redis"].startswith(f"redis://127.0.0.1:{redis_port}/0 (cryptocast up, pid")
        assert [e["series"] for e in report["series"]] == [SERIES.key]
        assert report["series"][0]["candles"] >= 1000
        assert not report["series"][0]["stale"], report["series"][0]["stale_reasons"]
        assert r.returncode == 0, r.stderr
        pids = [int(e["pid"]) for e in up.event("service.started")]  # type: ignore[call-overload]
        assert len(pids) == 2
        up.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(up.proc.wait, 40) == 0, up_tail(up)()
    finally:
        if up.proc.poll() is None:
            up.proc.kill()
            up.proc.wait()
    assert not any(alive(p) for p in pids), "a service outlived `up`"
    assert not port_open(redis_port), "the private redis-server outlived `up`"
    assert list((tmp_path / "var" / "redis").glob("appendonlydir/*.aof")), "no AOF written"
    assert not (tmp_path / "var" / "instance.json").exists(), "up left its announcement behind"
    codes = up.event("up.stopped")[0]["exit_codes"]
    assert codes == {"ingest": 0, "forecast": 0}


async def test_up_stops_everything_when_a_service_dies(
    exchange: ReplayExchange, tmp_path: Path
) -> None:
    up = Up(up_env(exchange, tmp_path / "var", free_port_pair(1)), tmp_path / "up.log")
    try:

        async def both_started() -> bool:
            return len(up.event("service.started")) == 2 and bool(up.event("up.redis_started"))

        await wait_for(both_started, 20, "both services", on_fail=up_tail(up))
        pids = {str(e["service"]): int(e["pid"]) for e in up.event("service.started")}  # type: ignore[call-overload]
        redis_port = int(up.event("up.redis_started")[0]["port"])  # type: ignore[call-overload]
        await asyncio.sleep(2)  # let the services get going
        os.kill(pids["ingest"], signal.SIGKILL)
        assert await asyncio.to_thread(up.proc.wait, 40) == 1, up_tail(up)()
    finally:
        if up.proc.poll() is None:
            up.proc.kill()
            up.proc.wait()
    assert not alive(pids["forecast"]), "the forecaster outlived `up`"
    assert not port_open(redis_port)
    assert up.event("up.service_exited")[0]["service"] == "ingest"


def up_tail(up: Up) -> object:
    return lambda: up.log.read_text(errors="replace")[-3000:]


def test_redis_url_configured_looks_at_env_and_file_not_at_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k in list(os.environ):
        if k.startswith("CRYPTOCAST_"):
            monkeypatch.delenv(k)
    assert not redis_url_configured(None)
    toml = tmp_path / "c.toml"
    toml.write_text('series = ["binance:BTC/USDT:1m"]\n')
    assert not redis_url_configured(str(toml))
    monkeypatch.setenv("CRYPTOCAST_CONFIG", str(toml))
    assert not redis_url_configured(None)
    toml.write_text('redis_url = "redis://example:6379/0"\n')
    assert redis_url_configured(None)
    assert redis_url_configured(str(toml))
    monkeypatch.delenv("CRYPTOCAST_CONFIG")
    monkeypatch.setenv("CRYPTOCAST_REDIS_URL", "redis://127.0.0.1:6379/0")
    assert redis_url_configured(None)
