"""Well-formed messages for tests: one place that knows how a Prediction is put together."""

from __future__ import annotations

import math

from core.schemas import ModelInfo, Prediction, stream_id_for
from core.series import SeriesId


def make_prediction(
    series: SeriesId | str = "binance:BTC/USDT:1m",
    as_of: int = 0,
    *,
    last_close: float = 100.0,
    predicted_close: float | None = None,
    predicted_return: float | None = None,
    lower: float | None = None,
    upper: float | None = None,
    version: str = "v1-x",
    trained_at: int = 0,
    skill: float = 0.05,
    published_at: int | None = None,
    latency_ms: float = 1.0,
) -> Prediction:
    """A Prediction made at ``as_of``; what follows from other fields (target time, id, the
    return of the predicted close) is derived unless given, so tests cannot get it wrong."""
    s = SeriesId.parse(series) if isinstance(series, str) else series
    target = s.timeframe.next_open(as_of)
    predicted = last_close * 1.001 if predicted_close is None else predicted_close
    return Prediction(
        exchange=s.exchange,
        symbol=s.symbol,
        timeframe=s.timeframe.text,
        as_of=as_of,
        target_time=target,
        last_close=last_close,
        predicted_close=predicted,
        predicted_return=(
            math.log(predicted / last_close) if predicted_return is None else predicted_return
        ),
        lower=last_close * 0.99 if lower is None else lower,
        upper=last_close * 1.01 if upper is None else upper,
        interval_level=0.9,
        model=ModelInfo(version=version, trained_at=trained_at, skill=skill),
        stale_model=False,
        published_at=target if published_at is None else published_at,
        latency_ms=latency_ms,
        id=stream_id_for(as_of),
    )
