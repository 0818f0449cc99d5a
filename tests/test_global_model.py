"""The global model: one LSTM trained across the four real 1m series, served by numpy alone.

Trained once per session (tiny: 4 units, window 16, 2 epochs) on the first 3,000 candles of each
of the four Binance futures months shipped in ``data/``.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import pytest

from config.settings import load_settings
from core.clock import ClockSync, ExchangeClock
from core.schemas import Candle
from core.series import SeriesId, Timeframe, global_model_id
from forecaster.data import CandleArrays
from forecaster.features import FeatureError
from forecaster.inference import LoadedModel
from forecaster.serving.scheduler import TrainingScheduler
from forecaster.serving.worker import SeriesWorker, ServingContext
from forecaster.training.pooled import MIN_HOLDOUT_PER_SERIES, candles_per_series, train_global
from forecaster.training.promotion import decide_promotion
from storage.facade import Storage
from tests.forecaster_support import promote_trained, tiny_settings
from tests.market_data import FUTURES_1M, market_file

M1 = Timeframe("1m")
ROWS = 3000
SAMPLE = 4000  # fewer than the four series' training windows: the sample is drawn


def settings_for_test() -> Any:
    return tiny_settings(units=4, window=16, global_sample=SAMPLE)


@lru_cache(maxsize=1)
def futures_arrays() -> dict[str, CandleArrays]:
    out = {}
    for sym, name in FUTURES_1M.items():
        df = pd.read_csv(market_file(name), nrows=ROWS)
        cols = (df[c].to_numpy(float) for c in ("open", "high", "low", "close", "volume"))
        out[f"binance:{sym}/USDT:1m"] = CandleArrays.from_columns(
            M1, df["open_time"].to_numpy(np.int64), *cols
        )
    return out


@lru_cache(maxsize=1)
def trained_global() -> Any:
    return train_global(futures_arrays(), settings_for_test())


def test_numpy_artifact_equals_the_keras_model() -> None:
    result = trained_global()
    served = LoadedModel.from_npz(result.npz, result.meta)
    assert served.model is None  # nothing of Keras in what serving loads
    arrays = futures_arrays()["binance:LINK/USDT:1m"]
    rows = np.arange(ROWS - 500, ROWS)
    dist, ok = served.predict_distribution(arrays, rows)
    ref, ok_ref = result.model.predict_distribution(arrays, rows)
    assert ok.all() and (ok == ok_ref).all()
    # the raw network outputs, numpy against Keras's own forward pass, on real windows
    x, _, _ = served.prepare(arrays.slice(0, ROWS - 1))
    np.testing.assert_allclose(served.forward(x), result.model.forward_model(x), atol=1e-5)
    np.testing.assert_allclose(dist.loc, ref.loc, atol=1e-8)
    np.testing.assert_allclose(dist.scale, ref.scale, rtol=1e-5)


def test_training_draws_a_bounded_sample_and_scores_every_series() -> None:
    meta = trained_global().meta
    assert meta["scope"] == "global" and meta["members"] == sorted(futures_arrays())
    assert meta["sample"]["train_windows"] <= SAMPLE + 2 * len(futures_arrays())
    assert meta["sample"]["train_windows"] >= SAMPLE * 0.95
    assert meta["training_range"]["last_open_time"] == max(
        int(a.open_time[-1]) for a in futures_arrays().values()
    )
    for key, s in meta["per_series"].items():
        assert s["n"] >= MIN_HOLDOUT_PER_SERIES, key
        assert s["crps"] > 0 and s["static_crps"] > 0 and s["naive_mae"] > 0
        assert s["worse_than_naive"] == (s["crps"] >= s["static_crps"])
    assert meta["worse_than_naive"] == sorted(
        k for k, s in meta["per_series"].items() if s["worse_than_naive"]
    )
    pooled = meta["holdout"]
    assert pooled["metric"] == "crps" and pooled["pooled_over"] == 4
    n = sum(s["n"] for s in meta["per_series"].values())
    pooled_crps = sum(s["crps"] * s["n"] for s in meta["per_series"].values()) / n
    assert pooled["candidate"]["crps"] == pytest.approx(pooled_crps, rel=1e-9)
    # the first global model is served whatever its skill; promotion reads the pooled scores
    assert decide_promotion(trained_global().typed_meta, None, False).promote


def test_a_warm_retrain_is_scored_against_the_serving_model_on_the_same_points() -> None:
    first = trained_global()
    again = train_global(futures_arrays(), settings_for_test(), current=first.model)
    cur = again.meta["holdout"]["current"]
    assert cur is not None and cur["crps"] > 0
    assert again.meta["holdout"]["current_sha256"] == first.meta["artifact_sha256"]
    assert again.meta["warm_started"]


def test_a_global_model_refuses_raw_inputs_and_too_short_series() -> None:
    with pytest.raises(FeatureError, match="normalisation"):
        train_global(
            futures_arrays(), settings_for_test().model_copy(update={"normalisation": "none"})
        )
    short = {k: a.slice(0, 24) for k, a in futures_arrays().items()}  # no three slices of 16
    with pytest.raises(FeatureError, match="no series"):
        train_global(short, settings_for_test())


def test_candles_per_series_shrinks_with_the_series_count_down_to_the_minimum() -> None:
    s = tiny_settings(global_sample=60_000, train_candles=20_000, window=60)
    assert candles_per_series(s, 4, 500) == 20_000  # capped by train_candles
    assert candles_per_series(s, 100, 500) == 918  # its share of the sample
    assert candles_per_series(s, 1000, 500) == 500  # never below what a slice needs


def _candles(arrays: CandleArrays) -> list[Candle]:
    return [
        Candle(int(t), float(o), float(h), float(lo), float(c), float(v))
        for t, o, h, lo, c, v in zip(
            arrays.open_time,
            arrays.open,
            arrays.high,
            arrays.low,
            arrays.close,
            arrays.volume,
            strict=True,
        )
    ]


async def test_a_new_series_is_served_from_its_first_full_window_without_training(
    storage: Storage,
) -> None:
    """A series the global model never saw (here NEAR, relabelled and left out of training)
    is predicted by it as soon as its first ``window + 1`` candles exist, and nothing trains
    a model of its own."""
    members = {k: a for k, a in futures_arrays().items() if "NEAR" not in k}
    result = train_global(members, settings_for_test())
    new = SeriesId.parse("binance:NEW/USDT:1m")
    registry = storage.registry
    rec = await promote_trained(registry, new, result, trained_at=1)
    candles = _candles(futures_arrays()["binance:NEAR/USDT:1m"].slice(2000, 2040))
    settings = load_settings(series=[new.key], schedule={"stale_after": 10**6})
    assert settings.model.scope == "global"
    store = storage.candles
    ctx = ServingContext(
        settings=settings,
        storage=storage,
        clock=ExchangeClock(ClockSync(candles[-1].open_time + 60_000, 0, 0.0)),
        consumer="test",
    )
    worker = SeriesWorker(ctx, new)
    await ctx.events.ensure_group(new)
    await worker.holder.load_now()
    window = result.model.window
    for c in candles:  # the series' very first candles, one event each as they close
        await store.upsert(new, [c], emit_events=True, arrived_ms=int(time.time() * 1000))
        await worker.handle(await ctx.events.read(new, "test", block_ms=None))
    published = await ctx.bus.since(new)
    assert [p.as_of for p in published] == [c.open_time for c in candles[window:]]
    assert {p.model.version for p in published} == {rec.version}
    assert worker.stats.skipped == {"incomplete_window": window}
    # no model, no training of its own: the scheduler only ever trains the global model
    assert await registry.versions(new) == [] and await storage.training_log.state(new) == {}
    scheduler = TrainingScheduler(settings, storage, lambda: [new])
    assert scheduler.subjects() == [global_model_id(M1)]
    await worker.holder.close()
    assert ctx.models is not None
    await ctx.models.close()
