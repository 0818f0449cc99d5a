"""A real ``cryptocast web`` process serves the dashboard's forecast without loading TensorFlow:
it slices the path the forecaster stored and imports nothing of the forecaster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from core.series import SeriesId
from cryptocast.redis_server import RedisServer, free_port
from storage.client import Redis
from storage.keys import Keys
from storage.paths import PathStore
from tests.e2e_support import Service, wait_for
from tests.web_support import forecast_path

SERIES = SeriesId.parse("binance:BTC/USDT:1m")
T0 = 1_700_000_040_000


def tensorflow_mapped(pid: int) -> list[str]:
    """The TensorFlow files (its shared objects) mapped into process ``pid``."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    files = {line.split()[-1] for line in maps.splitlines() if "/" in line}
    return sorted(f for f in files if "/tensorflow/" in f or "libtensorflow" in f)


async def test_web_process_serves_a_forecast_without_tensorflow(
    redis: Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    await PathStore(redis, Keys()).write(forecast_path(SERIES.key, T0, 240))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOCAST_")}
    env.update(
        CRYPTOCAST_REDIS_URL=redis_server.url,
        CRYPTOCAST_SERIES=SERIES.key,
        CRYPTOCAST_WEB__PORT=str(port),
        CRYPTOCAST_LOG_FORMAT="json",
    )
    web = Service("web", env, tmp_path).start()
    assert web.proc is not None
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=10) as http:

            async def up() -> bool:
                try:
                    return (await http.get(base + "/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(up, 60, "cryptocast web to answer", on_fail=web.tail)
            url = f"{base}/api/series/{SERIES.key}/forecast"
            r = await http.get(url, params={"steps": 120})
            assert r.status_code == 200, r.text
            assert len(r.json()["points"]) == 120 and r.json()["as_of"] == T0
            assert (await http.get(base + "/api/status")).status_code == 200
            assert (await http.get(base + "/")).status_code == 200
        assert web.proc.poll() is None, web.tail()
        assert tensorflow_mapped(web.proc.pid) == [], web.tail()
    finally:
        assert web.terminate() == 0, web.tail()


def test_the_check_sees_tensorflow_where_it_is_loaded() -> None:
    """The control: a process that imports Keras maps TensorFlow's shared objects, so an empty
    list above means the web never loaded it (not that the check looks in the wrong place)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import keras; print('ready', flush=True); input()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # EOF (b"") if the import failed
        assert line.strip() == b"ready"
        assert tensorflow_mapped(proc.pid)
    finally:
        proc.kill()
        proc.wait(10)
