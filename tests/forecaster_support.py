"""Real candles and tiny trained models shared by the forecaster tests (cached per session).

Loads the real Binance BTC/USDT 1h candles with pandas directly (the official CSV readers live
in ``ingest/``, which the forecaster tests do not depend on). The first 3,000 rows contain the
real hole at 2023-03-24 13:00 UTC.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from config.settings import ModelSettings
from core.schemas import Candle
from core.series import SeriesId, Timeframe, model_subject
from forecaster.data import CandleArrays
from storage.registry import ModelRecord, ModelRegistry
from tests.market_data import BTC_1H, market_file

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BTC_CSV = market_file(BTC_1H)
H1 = Timeframe("1h")
HOLE_MS = 1679662800000  # 2023-03-24 13:00 UTC, missing in the source data


@lru_cache(maxsize=4)
def btc_candles(n: int = 3000) -> tuple[Candle, ...]:
    """The first ``n`` real hourly candles as :class:`Candle` objects."""
    df = pd.read_csv(BTC_CSV, nrows=n)
    ms = (pd.to_datetime(df["timestamp"], utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(
        milliseconds=1
    )
    return tuple(
        Candle(int(t), float(o), float(h), float(lo), float(c), float(v))
        for t, o, h, lo, c, v in zip(
            ms, df["open"], df["high"], df["low"], df["close"], df["volume"], strict=True
        )
    )


def btc_arrays(n: int = 3000) -> CandleArrays:
    """The first ``n`` real hourly candles as arrays (new ones each call: a test may alter them)."""
    return CandleArrays.from_candles(btc_candles(n), H1)


def tiny_settings(**overrides: Any) -> ModelSettings:
    """A model small enough for unit tests (seconds on two cores)."""
    base: dict[str, Any] = {
        "units": 8,
        "layers": 2,
        "window": 24,
        "epochs": 2,
        "patience": 1,
        "batch_size": 256,
    }
    base.update(overrides)
    return ModelSettings(**base)


def untrained_model(s: ModelSettings, data: Any, **meta: Any) -> Any:
    """A seeded, untrained model of ``s``'s shape behind the real scaler of ``data`` (a
    ``PreparedData``), as a ``LoadedModel``; ``meta`` adds or replaces metadata entries."""
    from forecaster.inference import LoadedModel
    from forecaster.training.model import build_model
    from forecaster.training.train import base_meta

    interval = {"level": 0.9, "q_low": -0.01, "q_high": 0.01}
    full = {**base_meta(data.arrays, data, s), "interval": interval, **meta}
    return LoadedModel.from_keras(build_model(len(s.features), s), full)


@lru_cache(maxsize=1)
def trained_tiny() -> Any:
    """One tiny model trained cold on the first 2,800 candles (a ``TrainingResult``)."""
    from forecaster.training.train import train

    return train(btc_arrays(3000).slice(0, 2800), tiny_settings())


def weights_equal(a: list[np.ndarray], b: list[np.ndarray], atol: float = 0.0) -> bool:
    """True when two Keras weight lists are equal within ``atol``."""
    return len(a) == len(b) and all(
        x.shape == y.shape and np.allclose(x, y, rtol=0.0, atol=atol)
        for x, y in zip(a, b, strict=True)
    )


async def promote_trained(
    registry: ModelRegistry, series: SeriesId, result: Any, scope: str = "global", **meta: Any
) -> ModelRecord:
    """Store ``result`` (a ``TrainingResult``, both artifacts) as the promoted model serving
    ``series`` under ``scope``: the series' own, or its timeframe's global model."""
    subject = model_subject(series, scope)
    rec = await registry.put(subject, result.artifact, {**result.meta, **meta}, npz=result.npz)
    await registry.promote(subject, rec)
    return rec


class FixedClock:
    """A serving clock stopped at ``now_ms`` (e.g. just after the last candle: nothing stale)."""

    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now
