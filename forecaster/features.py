"""Windows of stationary features, chronological slices and the train-only scaler.

The features of each candle (``ret``, ``range``, ``vol``, ``gk``, ``tod_sin``, ``tod_cos``) are
defined in :mod:`forecaster.candle_features` and importable from here too.

Normalisation (``trailing_rms``, the default of the model): every window is divided by its own
trailing volatility ``sigma_w = sqrt(mean(ret^2))`` over the window's rows (floored at
:data:`SIGMA_FLOOR`), in the columns measured in return units (``ret``, ``range``, ``gk``), and so
is the target: the network sees and predicts returns in units of the recent volatility, so one
model carries across calm and wild regimes, and a forecast is multiplied back by ``sigma_w``.
Normalised values are clipped to ``±CLIP`` (a window of a flat market has ``sigma_w`` at the
floor). ``none`` keeps the raw features (models of metadata schema 1).

A window for *target row* ``t`` is the feature rows ``t-window .. t-1``; its target is ``ret_t``
and its "last close" is ``close_{t-1}``. A window therefore spans the ``window + 1`` candles
``t-window-1 .. t-1`` plus the target candle, all inside one segment: windows never cross a hole.

Slices are by target row: train ``[0, b1)``, early-stop ``[b1, b2)``, holdout ``[b2, n)``. A
window of a slice reads only rows before its target, so no slice's window sees a later slice's
target; inputs may reach back into an earlier slice (they are the past at prediction time).
The scaler (mean/std per feature, and for the target, after normalisation) is fit on the train
slice only.

No TensorFlow here: this module is imported by the web and CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from forecaster.candle_features import (
    FEATURE_NAMES,
    RETURN_UNITS,
    FeatureError,
    Stacked,
    check_features,
    feature_matrix,
    last_window,
    log_returns,
    raw_features,
    window_features,
)
from forecaster.data import CandleArrays

__all__ = [
    "FEATURE_NAMES",
    "NORMALISATIONS",
    "RETURN_UNITS",
    "SIGMA_FLOOR",
    "FeatureError",
    "PreparedData",
    "Scaler",
    "WindowSet",
    "build_windows",
    "feature_matrix",
    "input_from_features",
    "log_returns",
    "prepare",
    "slice_bounds",
    "target_rows",
    "window_features",
    "window_input",
    "window_sigma",
]

NORMALISATIONS = ("trailing_rms", "none")
SIGMA_FLOOR = 1e-8
CLIP = 20.0


def _check_norm(normalisation: str) -> None:
    if normalisation not in NORMALISATIONS:
        raise FeatureError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")


def window_sigma(ret_windows: np.ndarray) -> np.ndarray:
    """Trailing volatility of windows of log returns ``(..., window)``: RMS, floored."""
    r = np.asarray(ret_windows, dtype=np.float64)
    return np.maximum(np.sqrt(np.mean(r * r, axis=-1)), SIGMA_FLOOR)


def _normalise(
    x: np.ndarray, sigma: np.ndarray, names: Sequence[str], normalisation: str
) -> np.ndarray:
    """Raw windows ``(m, window, F)`` divided by their ``sigma`` in the return-unit columns."""
    if normalisation == "none":
        return x
    out = np.array(x, dtype=np.float64, copy=True)
    cols = [i for i, n in enumerate(names) if n in RETURN_UNITS]
    if cols:
        out[:, :, cols] = np.clip(out[:, :, cols] / sigma[:, None, None], -CLIP, CLIP)
    return out


def window_input(
    recent: CandleArrays, window: int, scaler: Scaler, normalisation: str
) -> tuple[np.ndarray, float]:
    """The network's input ``(1, window, F)`` for the candle after ``recent``, and ``sigma_w``.

    Exactly what :func:`prepare` builds for a training window (same normalisation and scaler).
    """
    _check_norm(normalisation)
    last = last_window(recent, window)
    return input_from_features(
        raw_features(last, list(scaler.features)),
        np.diff(np.log(last.close)),
        scaler,
        normalisation,
    )


def check_window(recent: CandleArrays, window: int) -> None:
    """Raise :class:`FeatureError` where :func:`window_input` would refuse ``recent``."""
    if len(recent) < window + 1:
        raise FeatureError(f"need {window + 1} candles for a window of {window}, got {len(recent)}")
    if not recent.tail(window + 1).is_contiguous():
        raise FeatureError("the last window crosses a hole in the candles")


def windows_input(
    recents: Sequence[CandleArrays], window: int, scaler: Scaler, normalisation: str
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`window_input` for N series' candles at once (each passed :func:`check_window`):
    inputs ``(N, window, F)`` and sigmas ``(N,)``, the same numbers from one set of numpy calls
    (series closing together, served by one model)."""
    _check_norm(normalisation)
    names = list(scaler.features)
    tails = [r.tail(window + 1) for r in recents]
    cols = Stacked(
        *(np.stack([getattr(t, c) for t in tails]) for c in Stacked.__dataclass_fields__)
    )
    feats = raw_features(cols, names)
    rets = np.diff(np.log(cols.close))
    n = len(tails)
    sigma = np.ones(n) if normalisation == "none" else window_sigma(rets)
    return scaler.transform(_normalise(feats, sigma, names, normalisation)), sigma


def input_from_features(
    feats: np.ndarray, rets: np.ndarray, scaler: Scaler, normalisation: str
) -> tuple[np.ndarray, float]:
    """As :func:`window_input`, from a window's raw features ``(window, F)`` and its log returns."""
    sigma = 1.0 if normalisation == "none" else float(window_sigma(rets))
    x = _normalise(feats[None], np.array([sigma]), list(scaler.features), normalisation)
    return scaler.transform(x), sigma


def target_rows(
    arrays: CandleArrays, window: int, start: int = 0, stop: int | None = None
) -> np.ndarray:
    """Rows ``t`` in ``[start, stop)`` that have a full window inside t's segment."""
    stop = len(arrays) if stop is None else stop
    out: list[np.ndarray] = []
    for seg_start, seg_stop in arrays.segments():
        lo = max(seg_start + window + 1, start)
        hi = min(seg_stop, stop)
        if hi > lo:
            out.append(np.arange(lo, hi, dtype=np.int64))
    return np.concatenate(out) if out else np.empty(0, dtype=np.int64)


def slice_bounds(n: int, early_stop_fraction: float, holdout_fraction: float) -> tuple[int, int]:
    """``(b1, b2)``: train targets are rows ``[0, b1)``, early-stop ``[b1, b2)``, holdout after."""
    n_hold = round(n * holdout_fraction)
    n_early = round(n * early_stop_fraction)
    b2 = n - n_hold
    return b2 - n_early, b2


@dataclass(frozen=True, slots=True)
class Scaler:
    """Per-feature standardisation, and the target's; stored as plain JSON numbers."""

    features: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    target_mean: float
    target_std: float

    @classmethod
    def fit(cls, features: Sequence[str], x: np.ndarray, y: np.ndarray) -> Scaler:
        """Fit on feature rows ``x`` (``(m, F)``, NaN rows ignored) and targets ``y``."""
        x = x[~np.isnan(x).any(axis=1)]
        y = y[~np.isnan(y)]
        if x.shape[0] < 2 or y.size < 2:
            raise FeatureError("too few training rows to fit the scaler")
        mean = x.mean(axis=0)
        std = _safe_std(x.std(axis=0))
        y_std = float(_safe_std(np.array([y.std()]))[0])
        return cls(tuple(features), mean, std, float(y.mean()), y_std)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Scale features (last axis = features)."""
        return (x - self.mean) / self.std

    def transform_target(self, y: np.ndarray) -> np.ndarray:
        """Scale raw log returns into the model's output space."""
        return (y - self.target_mean) / self.target_std

    def inverse_target(self, z: np.ndarray) -> np.ndarray:
        """Model outputs back to raw log returns."""
        return z * self.target_std + self.target_mean

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (lists of floats), never a pickle."""
        return {
            "features": list(self.features),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "target_mean": self.target_mean,
            "target_std": self.target_std,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Scaler:
        """Inverse of :meth:`to_json`; validates shapes and finiteness."""
        try:
            feats = tuple(str(f) for f in d["features"])
            mean = np.asarray(d["mean"], dtype=np.float64)
            std = np.asarray(d["std"], dtype=np.float64)
            tm, ts = float(d["target_mean"]), float(d["target_std"])
        except (KeyError, TypeError, ValueError) as e:
            raise FeatureError(f"bad scaler parameters: {e}") from None
        check_features(feats)
        ok = mean.shape == std.shape == (len(feats),) and np.all(np.isfinite(mean))
        if not ok or not np.all(std > 0) or not (np.isfinite(tm) and np.isfinite(ts) and ts > 0):
            raise FeatureError("bad scaler parameters: wrong shape, non-finite or zero std")
        return cls(feats, mean, std, tm, ts)


def _safe_std(s: np.ndarray) -> np.ndarray:
    # A constant feature (e.g. volume on a feed that has none) must not divide by zero.
    return np.where(np.isfinite(s) & (s > 1e-12), s, 1.0)


@dataclass(frozen=True, slots=True)
class WindowSet:
    """Windows of one slice, ready for Keras, with what metrics need in price space."""

    x: np.ndarray  # (m, window, F) float32, normalised and scaled
    y: np.ndarray  # (m,) float32, normalised and scaled target
    rows: np.ndarray  # (m,) target row in the arrays
    target_ret: np.ndarray  # (m,) raw log return of the target candle
    last_close: np.ndarray  # (m,) close of the candle before the target
    actual_close: np.ndarray  # (m,) close of the target candle
    target_time: np.ndarray  # (m,) open time of the target candle
    sigma: np.ndarray  # (m,) the window's trailing volatility (1 without normalisation)

    def __len__(self) -> int:
        return int(self.rows.size)

    def subset(self, keep: np.ndarray) -> WindowSet:
        """The windows where ``keep`` is true."""
        if keep.all():
            return self
        return WindowSet(*(getattr(self, f)[keep] for f in self.__slots__))


def _raw_windows(
    arrays: CandleArrays, feats: np.ndarray, rows: np.ndarray, window: int, normalisation: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unscaled (normalised) windows ``(m, window, F)``, their sigma and normalised targets."""
    f = feats.shape[1]
    ret = np.log(arrays.close[rows] / arrays.close[rows - 1]) if rows.size else np.empty(0)
    if not rows.size:
        return np.empty((0, window, f)), np.empty(0), np.empty(0)
    view = np.lib.stride_tricks.sliding_window_view(feats, window, axis=0)  # (n-w+1, F, w)
    x = view[rows - window].transpose(0, 2, 1)
    if normalisation == "none":
        return x, np.ones(rows.size), ret
    r = np.nan_to_num(np.concatenate([[0.0], np.diff(np.log(arrays.close))]))
    c2 = np.concatenate([[0.0], np.cumsum(r * r)])
    # Rows t-window .. t-1 of target t: never the target itself (no look-ahead).
    ms = (c2[rows] - c2[rows - window]) / window
    sigma = np.maximum(np.sqrt(np.maximum(ms, 0.0)), SIGMA_FLOOR)
    return x, sigma, np.clip(ret / sigma, -CLIP, CLIP)


def build_windows(
    arrays: CandleArrays,
    xn: np.ndarray,
    sigma: np.ndarray,
    yn: np.ndarray,
    rows: np.ndarray,
    scaler: Scaler,
) -> WindowSet:
    """Scale normalised windows ``xn`` (from :func:`_raw_windows`) into a :class:`WindowSet`."""
    close = arrays.close
    return WindowSet(
        x=np.ascontiguousarray(scaler.transform(xn), dtype=np.float32),
        y=scaler.transform_target(yn).astype(np.float32),
        rows=rows,
        target_ret=np.log(close[rows] / close[rows - 1]),
        last_close=close[rows - 1],
        actual_close=close[rows],
        target_time=arrays.open_time[rows],
        sigma=sigma,
    )


@dataclass(frozen=True, slots=True)
class PreparedData:
    """Everything one training run needs, derived from the arrays it was given."""

    arrays: CandleArrays
    features: np.ndarray  # (n, F) unscaled, unnormalised
    scaler: Scaler
    bounds: tuple[int, int]
    train: WindowSet
    early_stop: WindowSet
    holdout: WindowSet
    mase_scale: float  # in-sample naive MAE (price) on the train slice's targets
    normalisation: str = "none"

    def slices_json(self) -> dict[str, Any]:
        """Slice boundaries for the model's metadata (target open times and window counts)."""

        def one(ws: WindowSet) -> dict[str, Any]:
            return {
                "windows": len(ws),
                "first_target_time": int(ws.target_time[0]) if len(ws) else None,
                "last_target_time": int(ws.target_time[-1]) if len(ws) else None,
            }

        b1, b2 = self.bounds
        t = self.arrays.open_time
        return {
            "train": {**one(self.train), "rows": [0, b1]},
            "early_stop": {**one(self.early_stop), "rows": [b1, b2], "start_time": int(t[b1])},
            "holdout": {**one(self.holdout), "rows": [b2, len(t)], "start_time": int(t[b2])},
        }


def prepare(
    arrays: CandleArrays,
    features: Sequence[str],
    window: int,
    early_stop_fraction: float,
    holdout_fraction: float,
    normalisation: str = "none",
) -> PreparedData:
    """Split ``arrays`` chronologically, fit the scaler on train, build the three window sets.

    ``normalisation`` is ``"none"`` (raw features; the scaler is fit on the train slice's rows)
    or ``"trailing_rms"`` (per-window volatility normalisation, see the module docstring; the
    scaler is fit on the train windows' normalised rows).
    """
    names = check_features(features)
    _check_norm(normalisation)
    n = len(arrays)
    b1, b2 = slice_bounds(n, early_stop_fraction, holdout_fraction)
    feats = feature_matrix(arrays, names)
    train_rows = target_rows(arrays, window, 0, b1)
    if train_rows.size < 2:
        raise FeatureError(f"too few candles: {n} rows give {train_rows.size} training windows")
    all_rows = (train_rows, target_rows(arrays, window, b1, b2), target_rows(arrays, window, b2))
    raw = []
    for rows in all_rows:
        x, sigma, yn = _raw_windows(arrays, feats, rows, window, normalisation)
        raw.append((_normalise(x, sigma, names, normalisation), sigma, yn))
    if normalisation == "none":
        scaler = Scaler.fit(names, feats[:b1], raw[0][2])
    else:
        scaler = Scaler.fit(names, raw[0][0].reshape(-1, len(names)), raw[0][2])
    sets = []
    for rows, (x, sigma, yn) in zip(all_rows, raw, strict=True):
        if not rows.size:
            raise FeatureError(
                f"too few candles: {n} rows leave an empty slice for window {window}"
            )
        sets.append(build_windows(arrays, x, sigma, yn, rows, scaler))
    mase_scale = float(np.mean(np.abs(sets[0].actual_close - sets[0].last_close)))
    train, early_stop, holdout = sets
    return PreparedData(
        arrays, feats, scaler, (b1, b2), train, early_stop, holdout, mase_scale, normalisation
    )
