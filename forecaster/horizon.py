"""Multi-step forecasts from the last candle ("prediction until a date"), recursively.

Every model here predicts one log return; ``H`` steps are reached by feeding each predicted return
back as the newest input and predicting again.

- Inputs other than the return cannot be predicted by these models: the LSTM's ``range`` and
  ``vol`` features of the imagined candles are **held neutral** at their training means (the
  scaler's mean: scaled value 0), i.e. an ordinary candle with an ordinary volume change. That
  keeps the inputs inside the range the model was trained on instead of inventing volatility.
- Intervals widen with ``sqrt(h)``: step ``h``'s bounds are
  ``last_close * exp(cum_pred_h + q * sqrt(h))`` with ``q`` the one-step interval's offsets
  (the LSTM's distribution at the last window, at its holdout-calibrated level; a baseline's
  train-window residuals). That is the
  random-walk rule for independent one-step errors; it ignores volatility clustering and the
  model's own compounding error, so it is a rough guide, not a calibrated multi-step interval.
  Walk-forward coverage is measured for one step only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from forecaster.data import CandleArrays
from forecaster.features import (
    RETURN_UNITS,
    FeatureError,
    input_from_features,
    log_returns,
    window_features,
)

if TYPE_CHECKING:
    from forecaster.baselines import FittedBaseline
    from forecaster.inference import LoadedModel

__all__ = ["HorizonPath", "horizon_paths"]

METHOD = (
    "recursive: predicted log returns fed back; LSTM range/vol inputs held at their training "
    "means; interval = one-step residual quantiles x sqrt(h)"
)


@dataclass(frozen=True, slots=True)
class HorizonPath:
    """One model's ``H``-step path from the last candle."""

    name: str
    step: np.ndarray  # 1..H
    target_time: np.ndarray  # open time of each predicted candle
    pred: np.ndarray  # price
    lower: np.ndarray
    upper: np.ndarray
    level: float

    def to_json(self) -> dict[str, Any]:
        """Plain lists for the report."""
        return {
            "target_time": [int(t) for t in self.target_time],
            "pred": [float(v) for v in self.pred],
            "lower": [float(v) for v in self.lower],
            "upper": [float(v) for v in self.upper],
            "level": self.level,
        }


def _path(
    name: str,
    arrays: CandleArrays,
    rets: np.ndarray,
    q_low: float,
    q_high: float,
    level: float,
) -> HorizonPath:
    steps = np.arange(1, rets.size + 1)
    cum = np.cumsum(rets)
    last = float(arrays.close[-1])
    root = np.sqrt(steps)
    tf, base = arrays.timeframe, int(arrays.index[-1])
    return HorizonPath(
        name=name,
        step=steps,
        target_time=np.array([tf.open_time(base + int(h)) for h in steps], dtype=np.int64),
        pred=last * np.exp(cum),
        lower=last * np.exp(cum + q_low * root),
        upper=last * np.exp(cum + q_high * root),
        level=level,
    )


def _lstm_returns(model: LoadedModel, arrays: CandleArrays, steps: int) -> np.ndarray:
    feats = window_features(arrays, model.window, model.features)  # (window, F) unscaled
    rets = log_returns(arrays)[len(arrays) - model.window :]
    names = model.features
    ret_col = names.index("ret") if "ret" in names else None
    tf, base = arrays.timeframe, int(arrays.index[-1])
    out = np.empty(steps, dtype=np.float64)
    for h in range(steps):
        x, sigma = input_from_features(feats, rets, model.scaler, model.normalisation)
        loc, _scale, _df = model.distribution(model.forward(x).reshape(1, -1), np.array([sigma]))
        r = float(loc[0])
        out[h] = r
        # The imagined candle: its return, the other inputs at their training means (in the
        # window's volatility units when normalised), its own time of day.
        row = np.array(model.scaler.mean, dtype=np.float64)
        if model.normalisation != "none":
            row = np.array(
                [v * sigma if n in RETURN_UNITS else v for n, v in zip(names, row, strict=True)]
            )
        if ret_col is not None:
            row[ret_col] = r
        phase = (tf.open_time(base + h + 1) % 86_400_000) * (2.0 * math.pi / 86_400_000)
        for name, val in (("tod_sin", math.sin(phase)), ("tod_cos", math.cos(phase))):
            if name in names:
                row[names.index(name)] = val
        feats = np.vstack([feats[1:], row[None, :]])
        rets = np.append(rets[1:], r)
    return out


def _baseline_returns(fb: FittedBaseline, arrays: CandleArrays, steps: int) -> np.ndarray:
    lags = fb.model.lags
    hist = log_returns(arrays)[len(arrays) - lags :] if lags else np.empty(0)
    if hist.size != lags or np.isnan(hist).any():
        raise FeatureError("the last candles cross a hole: no multi-step forecast")
    out = np.empty(steps, dtype=np.float64)
    for h in range(steps):
        r = float(fb.model.predict(hist[None, :])[0])
        out[h] = r
        if lags:
            hist = np.append(hist[1:], r)
    return out


def horizon_paths(
    arrays: CandleArrays,
    steps: int,
    *,
    lstm: LoadedModel | None = None,
    baselines: dict[str, FittedBaseline] | None = None,
    level: float = 0.9,
) -> list[HorizonPath]:
    """``steps``-ahead paths from the last candle of ``arrays`` for each model given."""
    if steps < 1:
        raise ValueError("the horizon must be at least one step")
    paths: list[HorizonPath] = []
    if lstm is not None:
        rets = _lstm_returns(lstm, arrays, steps)
        # The one-step interval of the model's own distribution (what a message publishes).
        one = lstm.predict_next(arrays)
        last = float(arrays.close[-1])
        q_low = math.log(one.lower / last) - one.pred_return
        q_high = math.log(one.upper / last) - one.pred_return
        paths.append(_path("lstm", arrays, rets, q_low, q_high, lstm.interval_level))
    for name, fb in (baselines or {}).items():
        rets = _baseline_returns(fb, arrays, steps)
        paths.append(_path(name, arrays, rets, fb.q_low, fb.q_high, level))
    for p in paths:
        if not (np.all(np.isfinite(p.pred)) and math.isfinite(float(p.upper[-1]))):
            raise FeatureError(f"the {p.name} multi-step forecast diverged")
    return paths
