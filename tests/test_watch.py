"""``cryptocast watch``: follows the prediction channels live, exits cleanly on Ctrl-C."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
from pathlib import Path

from core.schemas import Prediction
from core.series import SeriesId
from cryptocast.redis_server import RedisServer
from storage.client import Redis
from storage.keys import Keys
from storage.predictions import PredictionBus
from tests.e2e_support import interrupt, reaped, wait_for
from tests.factories import make_prediction

BTC = SeriesId.parse("binance:BTC/USDT:1m")
ETH = SeriesId.parse("binance:ETH/USDT:1m")
MIN = 60_000


def prediction(series: SeriesId, as_of: int, close: float) -> Prediction:
    return make_prediction(
        series,
        as_of,
        last_close=close,
        predicted_close=close * 1.002,
        predicted_return=math.log(1.002),
        version="v7-abcdef12",
        skill=0.04,
        latency_ms=2.5,
    )


def watch(redis_server: RedisServer, out: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOCAST_")}
    env.update(
        CRYPTOCAST_REDIS_URL=redis_server.url,
        CRYPTOCAST_SERIES=f"{BTC.key},{ETH.key}",
        CRYPTOCAST_LOG_FORMAT="json",
        COLUMNS="200",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "cryptocast", "watch", *args],
        env=env,
        stdout=out.open("wb"),
        stderr=subprocess.STDOUT,
    )


async def subscribed(redis: Redis, series: SeriesId) -> bool:
    counts = await redis.pubsub_numsub(Keys().predictions(series))
    return bool(counts and counts[0][1] >= 1)


async def test_watch_json_prints_each_published_prediction(
    redis: Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    bus = PredictionBus(redis, Keys())
    out = tmp_path / "watch.out"
    with reaped(watch(redis_server, out, "--json", "--count", "3", "--series", BTC.key)) as proc:
        await wait_for(lambda: subscribed(redis, BTC), 20, "watch to subscribe")
        sent = [prediction(BTC, i * MIN, 100.0 + i) for i in range(1, 4)]
        await bus.publish(prediction(ETH, MIN, 5.0))  # not followed: --series BTC only
        for p in sent:
            assert await bus.publish(p)
        assert await asyncio.to_thread(proc.wait, 20) == 0, out.read_text()
    lines = [ln for ln in out.read_text().splitlines() if ln.startswith('{"schema"')]
    assert [Prediction.from_json(ln) for ln in lines] == sent


async def test_watch_table_shows_latest_and_live_and_exits_on_ctrl_c(
    redis: Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    bus = PredictionBus(redis, Keys())
    await bus.publish(prediction(BTC, 5 * MIN, 43210.5))  # there before watch starts
    out = tmp_path / "watch.out"
    with reaped(watch(redis_server, out)) as proc:
        await wait_for(lambda: subscribed(redis, ETH), 20, "watch to subscribe")
        await bus.publish(prediction(ETH, 7 * MIN, 2345.25))
        await asyncio.sleep(1.0)  # at least one refresh of the live table
        code = await interrupt(proc, 15)
    text = out.read_text()
    assert code == 0, text
    assert "Traceback" not in text
    assert BTC.key in text and "43210.5" in text  # the latest, shown at start
    assert ETH.key in text and "2345.25" in text  # the live one
    assert "v7-abcdef12" in text and "1 received" in text
