"""What the API returns: every route declares one of these, and FastAPI checks the response
against it (the OpenAPI schema at ``/docs`` is generated from them)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from core.schemas import ModelInfo, Prediction
from storage.paths import PathPoint


class CandleOut(BaseModel):
    """One closed candle (prices in the quote currency, times UTC epoch ms)."""

    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    trades: int | None = None


class CandlePage(BaseModel):
    series: str
    candles: list[CandleOut]
    next_since: int | None = Field(
        description="Pass as ``since`` for the next page; null when this page reaches the newest "
        "stored candle"
    )


class PredictionPage(BaseModel):
    series: str
    predictions: list[Prediction]
    next_since: str | None = Field(
        description="Pass as ``since`` for the next page; null when there is nothing newer"
    )


class SeriesOut(BaseModel):
    series: str
    exchange: str
    symbol: str
    timeframe: str
    path: str = Field(description="The series percent-encoded for use in URLs")


class ForecastOut(BaseModel):
    """A slice of the series' stored multi-step path (``storage.paths``)."""

    series: str
    model: ModelInfo
    as_of: int
    last_close: float
    steps: int
    interval_level: float
    points: list[PathPoint]


class StatusOut(BaseModel):
    series: list[dict[str, Any]] = Field(
        description="Per-series health, the entries of ``cryptocast status --json``"
    )
    stream_clients: int


class HealthOut(BaseModel):
    ok: bool
    redis: str
    stream_ready: bool | None = None
