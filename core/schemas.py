"""The messages everyone agrees on: :class:`Candle` and :class:`Prediction`.

``Candle`` is a slotted dataclass rather than a pydantic model because it sits on the ingest hot
path (hundreds of thousands per second in a backfill); its validation is one function,
:func:`candle_problem`, that returns a short reason code so rejects can be counted per reason.
``Prediction`` is the public message bots consume; it is a pydantic model so its JSON schema is
generated, documented and checked on both sides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from core.series import SeriesId, Timeframe

PREDICTION_SCHEMA_VERSION = 2
# Quantile levels of the next close in every schema-2 message (keys of ``Prediction.quantiles``).
QUANTILE_LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)
ModelKind = Literal["lstm", "garch", "ewma", "static"]

# Reason codes for rejected candles, shared by every source so metrics line up.
REJECT_REASONS = (
    "malformed",  # not parseable / missing fields / wrong types
    "not_finite",  # NaN or inf in a price or the volume
    "non_positive_price",
    "high_low",  # low > open/close or high < open/close
    "negative_volume",
    "misaligned",  # open time not on the timeframe grid
    "wrong_interval",  # another timeframe than the series (a close time outside the candle)
    "wrong_symbol",
    "future",  # closes after "now" by the service clock
    "out_of_range",  # absurd magnitude (e.g. corrupt volume)
)


class CandleError(ValueError):
    """A candle that must not enter history; ``reason`` is one of :data:`REJECT_REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Candle:
    """One closed OHLCV candle, identified by its open time (UTC epoch ms)."""

    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    trades: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "open_time": self.open_time,
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
            "trades": self.trades,
        }


# Prices above this are treated as corrupt: no traded asset is quoted at 1e12 in any currency,
# and float64 loses cent precision long before the limit matters.
MAX_PRICE = 1e12
MAX_VOLUME = 1e18


def candle_problem(
    c: Candle, timeframe: Timeframe, now_ms: int | None = None, close_time: int | None = None
) -> str | None:
    """Return why ``c`` is invalid for ``timeframe`` (a reason code), or ``None`` when it is valid.

    Valid means: finite positive prices, ``low <= open, close <= high``, finite ``volume >= 0``,
    the open time aligned to the timeframe and, when ``now_ms`` is given, the candle closed by then.

    A candle is identified by its aligned open time. ``close_time``, when the source gives one
    (Binance's last millisecond of the candle), may fall before the end of the interval: the
    exchange halted mid-candle and closed it early, and that candle is real. It is
    ``wrong_interval`` only outside the candle (before its open, or past its interval: a candle of
    a longer timeframe); the candle has closed by ``now_ms`` once its close time has passed.
    """
    o, h, lo, cl, v = c.open, c.high, c.low, c.close, c.volume
    if not (math.isfinite(o) and math.isfinite(h) and math.isfinite(lo) and math.isfinite(cl)):
        return "not_finite"
    if not math.isfinite(v):
        return "not_finite"
    if o <= 0 or h <= 0 or lo <= 0 or cl <= 0:
        return "non_positive_price"
    if h > MAX_PRICE or v > MAX_VOLUME:
        return "out_of_range"
    if not (lo <= o <= h and lo <= cl <= h):
        return "high_low"
    if v < 0:
        return "negative_volume"
    if c.trades is not None and c.trades < 0:
        return "malformed"
    if not timeframe.is_aligned(c.open_time):
        return "misaligned"
    closes_at = timeframe.next_open(c.open_time)
    if close_time is not None:
        if not c.open_time <= close_time < closes_at:
            return "wrong_interval"
        closes_at = close_time + 1
    if now_ms is not None and closes_at > now_ms:
        return "future"
    return None


def validate_candle(c: Candle, timeframe: Timeframe, now_ms: int | None = None) -> Candle:
    """Return ``c`` if valid, else raise :class:`CandleError` with the reason."""
    reason = candle_problem(c, timeframe, now_ms)
    if reason is not None:
        raise CandleError(reason, f"{c} for timeframe {timeframe}")
    return c


class ModelInfo(BaseModel):
    """Which model made a prediction and how good it was on its holdout."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    version: str
    kind: ModelKind = Field(
        "lstm",
        description="The version's champion on its holdout by CRPS, the model that made this "
        "forecast: 'lstm', 'garch' (GARCH(1,1)-t), 'ewma' (RiskMetrics 0.94) or 'static' "
        "(schema 2; schema-1 messages were all 'lstm')",
    )
    trained_at: int = Field(description="UTC epoch ms when training finished")
    skill: float = Field(
        description="Validation skill vs the naive forecast on the holdout: 1 - MAE/MAE_naive "
        "(> 0 beats naive)"
    )


class Prediction(BaseModel):
    """The next-step forecast published for every closed candle of a series (schema version 2).

    Schema 2 adds the forecast distribution (``sigma``, ``quantiles``, ``p_up``,
    ``effective_level``, ``model.kind``); every schema-1 field keeps its meaning, and a schema-1
    message still parses (the new fields are then ``None``). No number in a message is NaN or
    infinite: construction refuses them.
    """

    schema_: int = Field(PREDICTION_SCHEMA_VERSION, alias="schema")
    exchange: str
    symbol: str
    timeframe: str
    as_of: int = Field(description="Open time (ms) of the last closed candle used")
    target_time: int = Field(description="Open time (ms) of the predicted candle")
    last_close: float
    predicted_close: float
    predicted_return: float = Field(description="Predicted log return close[t+1]/close[t]")
    lower: float = Field(description="Lower bound of the interval for the next close")
    upper: float = Field(description="Upper bound of the interval for the next close")
    interval_level: float = Field(description="Nominal coverage of [lower, upper], e.g. 0.9")
    effective_level: float | None = Field(
        None,
        description="The level the model's distribution was read at for [lower, upper] after "
        "live calibration (adaptive conformal inference keeps the realised coverage at "
        "interval_level)",
    )
    sigma: float | None = Field(
        None, description="Predicted standard deviation of the next log return"
    )
    quantiles: dict[str, float] | None = Field(
        None,
        description="Quantiles of the next close, keyed by level: '0.05', '0.25', '0.5', "
        "'0.75', '0.95' (the model's distribution, before calibration)",
    )
    p_up: float | None = Field(
        None, ge=0.0, le=1.0, description="Probability that the next close is above last_close"
    )
    model: ModelInfo
    stale_model: bool = Field(description="True when the model is past max_model_age")
    published_at: int = Field(description="UTC epoch ms (service clock) at publication")
    latency_ms: float = Field(description="From the candle's arrival at ingest to publication")
    id: str = Field(description="Entry id in the prediction stream, for resuming: '<as_of>-0'")

    model_config = ConfigDict(frozen=True, populate_by_name=True, allow_inf_nan=False)

    @property
    def series(self) -> SeriesId:
        return SeriesId.parse(f"{self.exchange}:{self.symbol}:{self.timeframe}")

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(by_alias=True))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Prediction:
        return cls.model_validate(orjson.loads(raw))


def stream_id_for(as_of: int) -> str:
    """The prediction stream entry id for a prediction made at ``as_of`` (decision 4)."""
    return f"{as_of}-0"


ClockKind = Literal["wall", "exchange"]
