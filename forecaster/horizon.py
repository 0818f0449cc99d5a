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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from forecaster.data import CandleArrays
from forecaster.features import (
    RETURN_UNITS,
    FeatureError,
    _normalise,
    log_returns,
    window_features,
    window_sigma,
)

if TYPE_CHECKING:
    from forecaster.baselines import FittedBaseline
    from forecaster.inference import LoadedModel

__all__ = [
    "HorizonPath",
    "LstmRecursion",
    "check_path",
    "horizon_paths",
    "one_step_offsets",
    "path_of",
]

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


def path_of(
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


class LstmRecursion:
    """The LSTM's recursion for a batch of windows of one model, one step at a time.

    Every window takes the same path through the same arithmetic as it would alone, so a batch
    of one is the backtest's path and a batch of a hundred series (the global model's, after one
    instant) is one forward pass a step instead of a hundred. :meth:`step` is short (one forward
    pass), so a caller on an event loop can give the loop back between steps.
    """

    def __init__(self, model: LoadedModel, arrays: Sequence[CandleArrays]) -> None:
        if not arrays:
            raise ValueError("no windows to forecast from")
        tf = arrays[0].timeframe
        if any(a.timeframe != tf for a in arrays):
            raise ValueError("the windows of one recursion share a timeframe")
        self.model = model
        self.tf = tf
        self.arrays = list(arrays)
        self.names = list(model.scaler.features)
        w, names = model.window, model.features
        # (B, window, F) unscaled, and (B, window) log returns
        self.feats = np.stack([window_features(a, w, names) for a in arrays])
        self.rets = np.stack([log_returns(a)[len(a) - w :] for a in arrays])
        self.base = np.array([int(a.index[-1]) for a in arrays], dtype=np.int64)
        self.ret_col = names.index("ret") if "ret" in names else None
        self.tod = [(names.index(n), n) for n in ("tod_sin", "tod_cos") if n in names]
        self.scaled_cols = [i for i, n in enumerate(names) if n in RETURN_UNITS]
        self.out: list[np.ndarray] = []  # (B,) predicted log return, per step

    def __len__(self) -> int:
        return len(self.base)

    def step(self) -> None:
        """Predict the next candle of every window and feed it back as the newest input."""
        m = self.model
        n = len(self)
        if m.naive_point:
            # The point falls back to naive: every step's return is 0 whatever the network
            # says, so the inputs fed back are never read.
            self.out.append(np.zeros(n))
            return
        normalised = m.normalisation != "none"
        sigma = window_sigma(self.rets) if normalised else np.ones(n)
        x = m.scaler.transform(_normalise(self.feats, sigma, self.names, m.normalisation))
        r, _scale, _df = m.distribution(m.forward(x).reshape(n, -1), sigma)
        r = np.asarray(r, dtype=np.float64)
        self.out.append(r)
        # The imagined candle: its return, the other inputs at their training means (in the
        # window's volatility units when normalised), its own time of day.
        row = np.tile(np.asarray(m.scaler.mean, dtype=np.float64), (n, 1))
        if normalised and self.scaled_cols:
            row[:, self.scaled_cols] *= sigma[:, None]
        if self.ret_col is not None:
            row[:, self.ret_col] = r
        if self.tod:
            h = len(self.out)
            opens = np.array([self.tf.open_time(int(b) + h) for b in self.base], dtype=np.int64)
            phase = (opens % 86_400_000) * (2.0 * math.pi / 86_400_000)
            for col, name in self.tod:
                row[:, col] = np.sin(phase) if name == "tod_sin" else np.cos(phase)
        self.feats = np.concatenate([self.feats[:, 1:], row[:, None, :]], axis=1)
        self.rets = np.concatenate([self.rets[:, 1:], r[:, None]], axis=1)

    def returns(self) -> np.ndarray:
        """``(B, steps)``: the predicted log returns of the steps taken so far."""
        return np.stack(self.out, axis=1) if self.out else np.empty((len(self), 0))

    def paths(self) -> list[HorizonPath | ValueError]:
        """Per window, the path of the steps taken so far, its interval the one-step interval
        widened by ``sqrt(h)``; or the ``ValueError`` (a non-finite forecast, a diverged
        recursion) that window's path raised. One forward pass for the one-step intervals."""
        m = self.model
        out: list[HorizonPath | ValueError] = []
        offsets = one_step_offsets(m, self.arrays)
        for a, rets, q in zip(self.arrays, self.returns(), offsets, strict=True):
            try:
                if isinstance(q, ValueError):
                    raise q
                out.append(check_path(path_of("lstm", a, rets, *q, m.interval_level)))
            except ValueError as e:  # FeatureError included
                out.append(e)
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


def one_step_offsets(
    model: LoadedModel, arrays: Sequence[CandleArrays]
) -> list[tuple[float, float] | ValueError]:
    """Per window, the one-step interval's offsets from its predicted log return (what a
    message publishes, read at the model's start level): ``(q_low, q_high)``, or the
    ``ValueError`` a non-finite forecast raised. One forward pass for all windows."""
    x, last, sigma = model.prepare_many(list(arrays))
    got = model.finish_many(model.forward(x), last, sigma, np.full(len(arrays), np.nan))
    out: list[tuple[float, float] | ValueError] = []
    for f, close in zip(got, last, strict=True):
        if isinstance(f, ValueError):
            out.append(f)
        else:
            c = float(close)
            out.append(
                (math.log(f.lower / c) - f.pred_return, math.log(f.upper / c) - f.pred_return)
            )
    return out


def check_path(p: HorizonPath) -> HorizonPath:
    """``p``, or :class:`FeatureError` if the recursion diverged."""
    if not (np.all(np.isfinite(p.pred)) and math.isfinite(float(p.upper[-1]))):
        raise FeatureError(f"the {p.name} multi-step forecast diverged")
    return p


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
        rec = LstmRecursion(lstm, [arrays])
        for _ in range(steps):
            rec.step()
        (path,) = rec.paths()
        if isinstance(path, ValueError):
            raise path
        paths.append(path)
    for name, fb in (baselines or {}).items():
        rets = _baseline_returns(fb, arrays, steps)
        paths.append(path_of(name, arrays, rets, fb.q_low, fb.q_high, level))
    return [check_path(p) for p in paths]
