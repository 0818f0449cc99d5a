"""A training that must end (its lease lost, or SIGTERM) stops within a batch and stores nothing.

Each run is set up to fit for minutes (at least 100 epochs of batches of 4): only the stop
flag can end it within the deadlines below.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from config.settings import Settings
from core.lifecycle import with_timeout
from core.series import SeriesId
from cryptocast.redis_server import RedisServer
from forecaster.training.job import EXIT_FAILED, train_series
from forecaster.training.train import TrainingStopped, train
from storage.candles import CandleStore
from storage.client import Redis
from storage.keys import Keys
from storage.leases import Leases
from storage.registry import ModelRegistry, TrainingLog
from tests.e2e_support import reaped, wait_for
from tests.forecaster_support import btc_arrays, btc_candles, tiny_settings

S = SeriesId.parse("binance:BTC/USDT:1h")
ENDLESS = {"units": 4, "window": 16, "epochs": 500, "patience": 100, "batch_size": 4}


def _endless(settings: Settings) -> Settings:
    model = settings.model.model_copy(update={**ENDLESS, "train_candles": 1500})
    schedule = settings.schedule.model_copy(update={"min_train_candles": 100})
    return settings.model_copy(update={"model": model, "schedule": schedule})


def _start_job(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "forecaster.training.job", "--series", S.key]
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


async def _running(redis: Redis) -> bool:
    return (await TrainingLog(redis, Keys()).state(S)).get("outcome") == "running"


def test_a_set_stop_flag_ends_the_fit_at_the_first_batch() -> None:
    stop = threading.Event()
    stop.set()
    t0 = time.monotonic()
    with pytest.raises(TrainingStopped):
        train(btc_arrays(1500), tiny_settings(**ENDLESS), stop=stop)
    assert time.monotonic() - t0 < 30


async def test_a_lease_taken_by_another_owner_stops_the_training_without_a_version(
    redis: Redis, settings: Settings
) -> None:
    store = CandleStore(redis, Keys())
    await store.upsert(S, btc_candles(1500))
    lease = store.keys.lease(S, "train")
    stop = threading.Event()
    # Renewed every 0.2 s, so the loss is noticed at once.
    run = asyncio.create_task(train_series(_endless(settings), S, stop=stop, lease_ttl_ms=600))
    try:
        await wait_for(lambda: _running(redis), 60, "the training to start")
        holder = await Leases(redis, Keys()).holder(S, "train")
        assert holder is not None and holder != "thief"
        # As after a pause longer than the TTL: the lease expired and another job took it.
        await redis.set(lease, "thief", px=60_000)
        t0 = time.monotonic()
        code = await with_timeout(asyncio.shield(run), 30)
        took = time.monotonic() - t0
    finally:
        stop.set()
        await asyncio.gather(run, return_exceptions=True)
    assert code == EXIT_FAILED and stop.is_set()
    assert took < 20, took
    assert await ModelRegistry(redis, Keys()).versions(S) == []  # nothing stored
    assert await Leases(redis, Keys()).holder(S, "train") == "thief"  # and its lease left alone
    assert (await TrainingLog(redis, Keys()).state(S))[
        "outcome"
    ] == "running"  # the thief's to write


async def test_sigterm_ends_a_training_process_promptly(
    redis: Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    await CandleStore(redis, Keys()).upsert(S, btc_candles(1500))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOCAST_")}
    env |= {f"CRYPTOCAST_MODEL__{k.upper()}": str(v) for k, v in ENDLESS.items()}
    env |= {
        "CRYPTOCAST_REDIS_URL": redis_server.url,
        "CRYPTOCAST_MODEL__TRAIN_CANDLES": "1500",
        "CRYPTOCAST_SCHEDULE__MIN_TRAIN_CANDLES": "100",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    log = tmp_path / "job.log"
    with reaped(_start_job(env, log)) as proc:
        await wait_for(lambda: _running(redis), 90, "the training to start", on_fail=log.read_text)
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        code = await asyncio.to_thread(proc.wait, 30)
        took = time.monotonic() - t0
    assert code == EXIT_FAILED, log.read_text()[-2000:]
    assert took < 20, took
    assert await ModelRegistry(redis, Keys()).versions(S) == []
    assert await Leases(redis, Keys()).holder(S, "train") is None  # released on the way out
