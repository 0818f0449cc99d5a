"""examples/bot.py, the README's bot: catches up from the stream by id, then follows the channel."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
from pathlib import Path

from core.schemas import Prediction
from core.series import SeriesId
from cryptocast.redis_server import RedisServer
from storage.client import Redis
from storage.keys import Keys
from storage.predictions import PredictionBus
from tests.e2e_support import reaped, wait_for
from tests.factories import make_prediction

BOT = Path(__file__).resolve().parents[1] / "examples" / "bot.py"
S = SeriesId.parse("binance:BTC/USDT:1m")
MIN = 60_000


def prediction(as_of: int) -> Prediction:
    return make_prediction(
        S,
        as_of,
        predicted_close=100.1,
        predicted_return=math.log(1.001),
        version="v3-0badc0de",
        skill=0.02,
    )


def start_bot(url: str, since: str, state: Path, out: Path) -> subprocess.Popen[bytes]:
    args = ["--redis", url, "--series", S.key, "--since", since, "--count", "2"]
    return subprocess.Popen(
        [sys.executable, str(BOT), *args, "--state", str(state)],
        stdout=out.open("wb"),
        stderr=subprocess.STDOUT,
    )


async def test_bot_resumes_from_its_id_then_follows_live(
    redis: Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    bus = PredictionBus(redis, Keys())
    first, missed, live = prediction(MIN), prediction(2 * MIN), prediction(3 * MIN)
    await bus.publish(first)
    await bus.publish(missed)  # published while the bot was away
    state = tmp_path / "state.json"
    out = tmp_path / "bot.out"
    with reaped(start_bot(redis_server.url, first.id, state, out)) as proc:

        async def subscribed() -> bool:
            counts = await redis.pubsub_numsub(Keys().predictions(S))
            return bool(counts and counts[0][1] >= 1)

        await wait_for(subscribed, 20, "the bot to subscribe", on_fail=out.read_text)
        await bus.publish(live)
        assert await asyncio.to_thread(proc.wait, 20) == 0, out.read_text()
    lines = out.read_text().splitlines()
    assert [ln.split()[1] for ln in lines] == [f"id={missed.id}", f"id={live.id}"], lines
    assert state.read_text() == f'{{"{S.key}": "{live.id}"}}'
