"""Forecaster faults: bad artifacts are never served, the last good model keeps serving, and a
failed training is logged with its cause and retried later."""

from __future__ import annotations

import structlog

from config.settings import Settings
from core.series import SeriesId
from forecaster.serving.scheduler import TrainingScheduler
from forecaster.serving.worker import ModelHolder
from forecaster.training.job import EXIT_FAILED, train_series
from storage.candles import CandleStore
from storage.client import Redis
from storage.registry import ModelRegistry, TrainingLog
from tests.forecaster_support import btc_candles, trained_tiny

S = SeriesId.parse("binance:BTC/USDT:1h")


async def test_bad_artifacts_are_refused_and_the_last_good_model_keeps_serving(
    redis: Redis,
) -> None:
    good = trained_tiny()
    registry = ModelRegistry(redis)
    holder = ModelHolder(registry, S, structlog.get_logger("test"))
    v1 = await registry.put(S, good.artifact, good.meta)
    await registry.promote(S, v1)
    await holder.load_now()
    assert holder.record is not None and holder.record.version == v1.version

    async def promote_and_reload(version: str) -> None:
        await redis.set(registry.keys.model_current(S), version)  # promotion as another host did
        await holder.load_now()

    # 1. truncated .keras bytes (stored with their own sha: only loading can tell)
    v2 = await registry.put(S, good.artifact[: len(good.artifact) // 2], good.meta)
    await promote_and_reload(v2.version)
    assert holder.record.version == v1.version and holder.model is not None
    # 2. bytes rotted in Redis after storing: the sha256 no longer matches
    v3 = await registry.put(S, good.artifact, good.meta)
    await redis.hset(
        registry.keys.model_version(S, v3.version),
        "artifact",
        good.artifact[:-1] + bytes([good.artifact[-1] ^ 1]),
    )
    await promote_and_reload(v3.version)
    assert holder.record.version == v1.version
    # 3. metadata swapped for another version's
    v4 = await registry.put(S, good.artifact, good.meta)
    other = await redis.hget(registry.keys.model_version(S, v1.version), "meta")
    await redis.hset(registry.keys.model_version(S, v4.version), "meta", other)
    await promote_and_reload(v4.version)
    assert holder.record.version == v1.version
    # 4. garbage that is not a .keras zip at all
    v5 = await registry.put(S, b"PK\x03\x04 certainly not a model", good.meta)
    await promote_and_reload(v5.version)
    assert holder.record.version == v1.version
    # refused versions are not retried on every event
    await holder.refresh()
    assert holder._loading is None or holder._loading.done()
    # a good new version is picked up
    v6 = await registry.put(S, good.artifact, good.meta)
    await promote_and_reload(v6.version)
    assert holder.record.version == v6.version
    await holder.close()


async def test_failed_training_is_recorded_with_its_cause_and_retried_later(
    redis: Redis, settings: Settings
) -> None:
    store = CandleStore(redis)
    await store.upsert(S, btc_candles(700))
    # a window longer than the slices can hold makes training fail for a real reason
    bad = settings.model_copy(
        update={
            "model": settings.model.model_copy(
                update={"window": 1000, "units": 4, "epochs": 1, "train_candles": 700}
            )
        }
    )
    bad = bad.model_copy(
        update={
            "schedule": bad.schedule.model_copy(
                update={"min_train_candles": 100, "retrain_every": 50}
            )
        }
    )
    assert await train_series(bad, S) == EXIT_FAILED
    state = await TrainingLog(redis).state(S)
    assert state["outcome"] == "failed" and state["error"]
    assert await ModelRegistry(redis).current(S) is None  # nothing half-made was promoted
    assert await redis.get(store.keys.lease(S, "train")) is None  # the lease was released

    scheduler = TrainingScheduler(bad, store, lambda: [S])
    assert await scheduler.needs_training(S) is None  # not at once: after retrain_every candles
    more = btc_candles(760)[700:]
    await store.upsert(S, more)
    assert await scheduler.needs_training(S) == "no model"


async def test_scheduler_trains_the_most_overdue_series_first(
    redis: Redis, settings: Settings
) -> None:
    """When training cannot keep up, the first configured series must not take every turn:
    no model first, then an expired model, then the series longest since its last attempt."""
    sched = settings.schedule.model_copy(
        update={"min_train_candles": 100, "retrain_every": 50, "max_model_age": 400}
    )
    cfg = settings.model_copy(update={"schedule": sched})
    store, registry, tlog = CandleStore(redis), ModelRegistry(redis), TrainingLog(redis)
    candles = btc_candles(1000)
    tf = S.timeframe
    newest = tf.floor_index(candles[-1].open_time)
    names = ["first", "second", "third", "expired", "new"]
    series = {n: SeriesId.parse(f"binance:{n.upper()}/USDT:1h") for n in names}
    for name, s in series.items():
        await store.upsert(s, candles)
        if name == "new":
            continue  # no model yet
        trained = candles[{"first": 900, "second": 700, "third": 800, "expired": 500}[name]]
        meta = {"training_range": {"last_open_time": trained.open_time}}  # all _need reads
        await registry.promote(s, await registry.put(s, b"weights", meta))
        age = newest - tf.floor_index(trained.open_time)
        await tlog.record(s, index=newest - (60 if name == "expired" else age))
    held = [series[n] for n in names]
    scheduler = TrainingScheduler(cfg, store, lambda: held)
    assert await scheduler.most_urgent() == (series["new"], "no model")
    held.remove(series["new"])
    assert await scheduler.most_urgent() == (series["expired"], "model expired (499 candles old)")
    held.remove(series["expired"])
    assert await scheduler.most_urgent() == (series["second"], "299 candles since last training")
    held.remove(series["second"])
    assert await scheduler.most_urgent() == (series["third"], "199 candles since last training")
