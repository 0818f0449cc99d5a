"""Forecaster faults: bad artifacts are never served, the last good model keeps serving, and a
failed training is logged with its cause and retried later."""

from __future__ import annotations

import io

import numpy as np
import structlog

from config.settings import Settings
from core.series import SeriesId
from forecaster.serving.models import ModelCache, ModelHolder
from forecaster.serving.scheduler import TrainingScheduler
from forecaster.training.job import EXIT_FAILED, train_series
from storage.client import Redis
from storage.facade import Storage
from storage.keys import Keys
from storage.registry import ModelRegistry
from tests.forecaster_support import btc_candles, trained_tiny

S = SeriesId.parse("binance:BTC/USDT:1h")


async def test_bad_artifacts_are_refused_and_the_last_good_model_keeps_serving(
    redis: Redis,
) -> None:
    good = trained_tiny()
    registry = ModelRegistry(redis, Keys())
    cache = ModelCache(registry)
    holder = ModelHolder(cache, S, structlog.get_logger("test"))

    async def put(npz: bytes) -> str:
        return (await registry.put(S, good.artifact, good.meta, npz=npz)).version

    v1 = await put(good.npz)
    await redis.set(registry.keys.model_current(S), v1)
    await holder.load_now()
    assert holder.record is not None and holder.record.version == v1 and holder.model is not None

    async def promote_and_reload(version: str) -> None:
        await redis.set(registry.keys.model_current(S), version)  # promotion as another host did
        await holder.load_now()
        assert holder.record is not None and holder.record.version == v1, version

    # 1. a truncated .npz (stored with its own sha: only loading can tell)
    await promote_and_reload(await put(good.npz[: len(good.npz) // 2]))
    # 2. bytes rotted in Redis after storing: the sha256 in the metadata no longer matches
    v3 = await put(good.npz)
    rotted = good.npz[:-1] + bytes([good.npz[-1] ^ 1])
    await redis.hset(registry.keys.model_version(S, v3), "npz", rotted)
    await promote_and_reload(v3)
    # 3. an object array: np.load(allow_pickle=False) refuses it rather than unpickling
    await promote_and_reload(await put(_npz_with(good.npz, np.array([{"x": 1}], dtype=object))))
    # 4. weights that do not fit the architecture in the metadata
    await promote_and_reload(await put(_npz_with(good.npz, np.zeros((3, 5), np.float32))))
    # 5. metadata swapped for another version's
    v5 = await put(good.npz)
    other = await redis.hget(registry.keys.model_version(S, v1), "meta")
    await redis.hset(registry.keys.model_version(S, v5), "meta", other)
    await promote_and_reload(v5)
    # 6. a version stored without its numpy artifact (serving never falls back to Keras)
    await promote_and_reload(await put(b""))
    # refused versions are not retried on every event
    await holder.refresh()
    assert holder._loading is None or holder._loading.done()
    # a good new version is picked up
    v7 = await put(good.npz)
    await redis.set(registry.keys.model_current(S), v7)
    await holder.load_now()
    assert holder.record.version == v7
    await holder.close()
    await cache.close()


def _npz_with(npz: bytes, dense_kernel: np.ndarray) -> bytes:
    """``npz`` with its Dense kernel replaced (pickled when ``dense_kernel`` holds objects)."""
    with np.load(io.BytesIO(npz)) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["dense_kernel"] = dense_kernel
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=True, **arrays)
    return buf.getvalue()


async def test_failed_training_is_recorded_with_its_cause_and_retried_later(
    storage: Storage, settings: Settings
) -> None:
    store = storage.candles
    await store.upsert(S, btc_candles(700))
    # a window longer than the slices can hold makes training fail for a real reason
    bad = settings.model_copy(
        update={
            "model": settings.model.model_copy(
                update={
                    "window": 1000,
                    "units": 4,
                    "epochs": 1,
                    "train_candles": 700,
                    "scope": "series",
                }
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
    state = await storage.training_log.state(S)
    assert state["outcome"] == "failed" and state["error"]
    assert await storage.registry.current(S) is None  # nothing half-made was promoted
    assert await storage.redis.get(storage.keys.lease(S, "train")) is None  # the lease was released

    scheduler = TrainingScheduler(bad, storage, lambda: [S])
    assert await scheduler.needs_training(S) is None  # not at once: after retrain_every candles
    more = btc_candles(760)[700:]
    await store.upsert(S, more)
    assert await scheduler.needs_training(S) == "no model"


async def test_scheduler_trains_the_most_overdue_series_first(
    storage: Storage, settings: Settings
) -> None:
    """When training cannot keep up, the first configured series must not take every turn:
    no model first, then an expired model, then the series longest since its last attempt."""
    sched = settings.schedule.model_copy(
        update={"min_train_candles": 100, "retrain_every": 50, "max_model_age": 400}
    )
    model = settings.model.model_copy(update={"scope": "series"})
    cfg = settings.model_copy(update={"schedule": sched, "model": model})
    store, registry, tlog = storage.candles, storage.registry, storage.training_log
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
    scheduler = TrainingScheduler(cfg, storage, lambda: held)
    assert await scheduler.most_urgent() == (series["new"], "no model")
    held.remove(series["new"])
    assert await scheduler.most_urgent() == (series["expired"], "model expired (499 candles old)")
    held.remove(series["expired"])
    assert await scheduler.most_urgent() == (series["second"], "299 candles since last training")
    held.remove(series["second"])
    assert await scheduler.most_urgent() == (series["third"], "199 candles since last training")
