"""Model metadata is one typed schema: what training writes survives the registry byte for byte
(fields it does not know included), a model's age is counted in closed candles, and metadata
that does not fit the schema is refused on the way in and on the way out."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from core.clock import WallClock
from core.model_meta import ModelMeta, ModelMetaError
from core.series import SeriesId, Timeframe
from storage.client import Redis
from storage.facade import Storage
from storage.health import series_health
from storage.keys import Keys
from storage.registry import ModelIntegrityError, ModelRegistry
from tests.forecaster_support import btc_candles, trained_tiny

S = SeriesId.parse("binance:BTC/USDT:1h")
H = 3_600_000


def _meta(last_open_time: int, **fields: Any) -> ModelMeta:
    return ModelMeta.parse({"training_range": {"last_open_time": last_open_time}, **fields})


async def test_trained_metadata_round_trips_through_the_registry(redis: Redis) -> None:
    result = trained_tiny()
    # What a newer writer adds (a global model) must survive an older reader untouched.
    newer = {
        **result.meta,
        "trained_at": 123,
        "scope": "global",
        "members": ["binance:BTC/USDT:1h", "binance:ETH/USDT:1h"],
        "holdout": {**result.meta["holdout"], "per_series": {"binance:ETH/USDT:1h": {"crps": 1}}},
        "future_field": {"nested": [1, 2.5, None]},
    }
    reg = ModelRegistry(redis, Keys())
    put = await reg.put(S, result.artifact, newer)
    stored = await redis.hget(reg.keys.model_version(S, put.version), "meta")
    # Byte-compatible: the writer's dict, plus what the registry adds, as orjson writes it.
    assert stored == orjson.dumps({**newer, "sha256": put.sha256, "version": put.version})

    got = await reg.get(S, put.version, with_artifact=False)
    meta = got.meta
    assert meta == put.meta
    assert meta.to_json() == orjson.loads(stored)  # nothing lost, nothing invented
    assert meta.scope == "global"
    assert meta.members == newer["members"]
    assert meta.holdout is not None
    assert (meta.holdout.model_extra or {})["per_series"] == {"binance:ETH/USDT:1h": {"crps": 1}}
    # The typed fields are the ones training wrote.
    rng = result.meta["training_range"]
    assert meta.training_range.last_open_time == rng["last_open_time"]
    assert meta.training_range.first_open_time == rng["first_open_time"]
    assert meta.training_range.candles == rng["candles"]
    assert meta.architecture is not None
    assert meta.architecture.window == result.meta["architecture"]["window"]
    assert meta.interval is not None
    assert meta.interval.q_low == result.meta["interval"]["q_low"]
    assert meta.skill == result.meta["skill"]
    assert meta.champion_kind == result.meta["champion"]["kind"]
    assert meta.holdout.candidate is not None
    assert meta.holdout.candidate.crps == result.meta["holdout"]["candidate"]["crps"]
    static = meta.holdout.scores("static")
    assert static is not None and static.crps == result.meta["holdout"]["static"]["crps"]
    ewma = meta.econometric_entry("ewma")
    assert ewma is not None and ewma.state_time == result.meta["econometric"]["ewma"]["state_time"]
    assert got.trained_at == 123
    # The candidate handed back by training carries the same parsed metadata.
    assert result.typed_meta == ModelMeta.parse(result.meta)
    # A typed writer stores the same JSON object a dict writer does.
    again = await reg.put(S, result.artifact, meta)
    again_stored = await redis.hget(reg.keys.model_version(S, again.version), "meta")
    want = {**orjson.loads(stored), "version": again.version}
    assert orjson.loads(again_stored) == want


def test_older_metadata_without_newer_fields_gets_the_defaults() -> None:
    meta = _meta(0)
    assert meta.scope == "series"
    assert meta.champion_kind == "lstm" and meta.skill_of("garch") is None
    assert meta.to_json() == {"training_range": {"last_open_time": 0}}  # no invented fields


@pytest.mark.parametrize("timeframe", ["1m", "1h", "1d"])
def test_age_counts_candles_closed_since_training(timeframe: str) -> None:
    tf = Timeframe(timeframe)
    trained = tf.open_time(1000)
    meta = _meta(trained)
    assert meta.age_at(trained, tf) == 0  # the last candle it was trained on
    assert meta.age_at(trained + tf.ms - 1, tf) == 0  # any instant inside that candle
    assert meta.age_at(trained + tf.ms, tf) == 1
    assert meta.age_at(tf.open_time(1899), tf) == 899
    assert meta.age_at(tf.open_time(990), tf) == 0  # older than the model: not negative
    # Expired strictly past the limit, as the scheduler and the messages have always meant it.
    assert not meta.expired(tf.open_time(1010), tf, max_age=10)
    assert meta.expired(tf.open_time(1011), tf, max_age=10)
    assert not meta.expired(tf.open_time(1011) - 1, tf, max_age=10)


def test_age_in_calendar_frames() -> None:
    month, week = Timeframe("1M"), Timeframe("1w")
    jan = month.open_time(month.floor_index(1_704_067_200_000))  # 2024-01-01
    meta = _meta(jan)
    assert meta.age_at(month.open_time(month.floor_index(jan) + 2), month) == 2  # March
    assert meta.age_at(month.next_open(jan) - 1, month) == 0  # 31 January, 23:59:59.999
    monday = week.open_time(week.floor_index(jan) + 1)
    assert _meta(monday).age_at(monday + 7 * 86_400_000, week) == 1


@pytest.mark.parametrize(
    ("meta", "where"),
    [
        ({}, "training_range"),
        ({"training_range": {"first_open_time": 0}}, "training_range.last_open_time"),
        ({"training_range": {"last_open_time": "yesterday"}}, "training_range.last_open_time"),
        ({"training_range": {"last_open_time": 0}, "skill": "high"}, "skill"),
        ({"training_range": {"last_open_time": 0}, "scope": "planet"}, "scope"),
        ({"training_range": {"last_open_time": 0}, "interval": {"level": 0.9}}, "interval.q_low"),
    ],
)
async def test_invalid_metadata_is_refused_on_put(
    redis: Redis, meta: dict[str, Any], where: str
) -> None:
    reg = ModelRegistry(redis, Keys())
    with pytest.raises(ModelMetaError, match=re.escape(where)):
        await reg.put(S, b"weights", meta)
    assert await reg.versions(S) == []  # nothing half-stored


async def test_metadata_invalid_in_redis_is_an_integrity_error(
    redis: Redis, storage: Storage
) -> None:
    candles = btc_candles(200)
    store, reg = storage.candles, storage.registry
    await store.upsert(S, candles)
    rec = await reg.put(S, b"weights", _meta(candles[100].open_time, trained_at=1))
    await reg.promote(S, rec)
    key = reg.keys.model_version(S, rec.version)
    raw = orjson.loads(await redis.hget(key, "meta"))
    # Edited behind the registry's back: the training range no longer says when it ends.
    raw["training_range"]["last_open_time"] = "last tuesday"
    await redis.hset(key, "meta", orjson.dumps(raw))
    with pytest.raises(ModelIntegrityError, match=re.escape("training_range.last_open_time")):
        await reg.current(S)
    entry = await series_health(storage, S, WallClock(), stale_after=3, scope="series")
    assert entry["model"] is not None and "training_range" in entry["model"]["error"]
