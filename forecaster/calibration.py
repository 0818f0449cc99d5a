"""Adaptive conformal inference (Gibbs & Candès 2021) on top of a model's predictive quantiles.

The published interval at candle ``t`` is the model distribution's central interval at level
``1 - alpha_t``; once the candle closes, ``alpha`` moves towards the target by

    alpha_{t+1} = alpha_t + gamma * (alpha - miss_t),    alpha = 1 - target

so a run of misses widens the next intervals and a run of hits narrows them. Over any ``T``
candles the miss rate is within ``(max(alpha_1, 1 - alpha) + gamma) / (gamma T)`` of ``alpha``
whatever the data do (drift, regime changes, a misspecified model), which a static interval
cannot promise. The level actually used is ``1 - alpha_t`` clipped to ``[min_level,
max_level]`` (an interval at level <= 0 or >= 1 is useless to publish); ``alpha_t`` itself is
kept unclipped so the guarantee holds while the clip does not bind.

The state is a small frozen dataclass: :meth:`AciState.update` returns the next state, and
:meth:`AciState.to_dict` / :meth:`AciState.from_dict` carry it through Redis (or JSON) so
restarts and replica hand-overs continue the same sequence. Intervals, bounds and outcomes are
log returns here, but any monotone transform (e.g. prices) works the same if used consistently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from forecaster.distribution import ReturnDistribution

__all__ = ["DEFAULT_GAMMA", "AciState", "run_aci"]

DEFAULT_GAMMA = 0.005  # Gibbs & Candès' choice; ~200 candles to react to a shift
MIN_LEVEL, MAX_LEVEL = 0.5, 0.995


@dataclass(frozen=True, slots=True)
class AciState:
    """One series' calibration: ``alpha_t`` is the miscoverage level of the next interval."""

    target: float = 0.9  # the nominal coverage level (1 - alpha)
    gamma: float = DEFAULT_GAMMA
    alpha_t: float = math.nan  # NaN: not started, use 1 - target
    n: int = 0  # outcomes absorbed
    misses: int = 0
    min_level: float = MIN_LEVEL
    max_level: float = MAX_LEVEL

    def __post_init__(self) -> None:
        if not 0.0 < self.target < 1.0:
            raise ValueError(f"target coverage must be in (0, 1), got {self.target}")
        if not self.gamma >= 0.0:
            raise ValueError(f"gamma must be >= 0, got {self.gamma}")
        if not 0.0 < self.min_level <= self.target <= self.max_level < 1.0:
            raise ValueError("need 0 < min_level <= target <= max_level < 1")
        if math.isnan(self.alpha_t):
            object.__setattr__(self, "alpha_t", 1.0 - self.target)

    @property
    def level(self) -> float:
        """The effective coverage level of the next published interval (clipped)."""
        return float(min(max(1.0 - self.alpha_t, self.min_level), self.max_level))

    @property
    def coverage(self) -> float:
        """Realised coverage of the intervals absorbed so far (NaN before any)."""
        return 1.0 - self.misses / self.n if self.n else math.nan

    def interval(self, dist: ReturnDistribution) -> tuple[np.ndarray, np.ndarray]:
        """The central interval of ``dist`` at :attr:`level` (log returns, one per point)."""
        return dist.interval(self.level)

    def update(self, lo: float, hi: float, actual: float) -> AciState:
        """The state after the outcome ``actual`` of the interval ``[lo, hi]`` is known.

        A non-finite outcome (no candle) changes nothing.
        """
        if not math.isfinite(actual):
            return self
        miss = not (lo <= actual <= hi)
        a = self.alpha_t + self.gamma * ((1.0 - self.target) - float(miss))
        return replace(self, alpha_t=a, n=self.n + 1, misses=self.misses + int(miss))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (plain floats and ints)."""
        # Spelled out: dataclasses.asdict deep-copies and even fields() costs ~10 us, on every
        # publish of every series.
        return {
            "target": self.target,
            "gamma": self.gamma,
            "alpha_t": self.alpha_t,
            "n": self.n,
            "misses": self.misses,
            "min_level": self.min_level,
            "max_level": self.max_level,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AciState:
        """Inverse of :meth:`to_dict`; missing keys take the defaults."""
        return cls(
            target=float(d.get("target", 0.9)),
            gamma=float(d.get("gamma", DEFAULT_GAMMA)),
            alpha_t=float(d.get("alpha_t", math.nan)),
            n=int(d.get("n", 0)),
            misses=int(d.get("misses", 0)),
            min_level=float(d.get("min_level", MIN_LEVEL)),
            max_level=float(d.get("max_level", MAX_LEVEL)),
        )


def run_aci(
    dist: ReturnDistribution, actual: np.ndarray, state: AciState
) -> tuple[np.ndarray, np.ndarray, np.ndarray, AciState]:
    """Calibrate a sequence of forecasts in time order, as the live service would.

    Returns ``(lower, upper, level, final_state)``: point ``i``'s interval uses the state after
    outcomes ``0 .. i-1`` only. ``actual`` are the observed log returns.
    """
    y = np.asarray(actual, dtype=np.float64)
    if y.shape != (len(dist),):
        raise ValueError(f"need one outcome per forecast: {len(dist)} forecasts, {y.shape}")
    lo, hi, level = np.empty(y.size), np.empty(y.size), np.empty(y.size)
    s = state
    for i in range(y.size):
        level[i] = s.level
        lo_i, hi_i = s.interval(dist.take(slice(i, i + 1)))
        lo[i], hi[i] = float(lo_i[0]), float(hi_i[0])
        s = s.update(lo[i], hi[i], float(y[i]))
    return lo, hi, level, s
