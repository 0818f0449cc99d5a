"""Serving a version's champion, and the live calibration of its interval.

:class:`EconometricServer` publishes a GARCH-t / EWMA / static champion: its fixed parameters and
filter state come from the version's metadata (``ModelMeta.econometric_entry``: the ``champion``
or the ``econometric`` copy, written at training), and the state is filtered forward one closed
candle at a time (a few float operations), catching up from the candle store when the worker
starts or a candle was missed. It is a pure
function of the metadata and the candles, so every replica derives the same state.

:class:`LiveCalibration` is one series' adaptive conformal inference (forecaster.calibration):
the interval published for candle ``t+1`` is settled when that candle arrives (miss or hit), which
moves the level of the next interval. Its state travels through Redis (storage.calibration) with
each prediction, so restarts and replica hand-overs continue it; it is reset when the served
version changes (a new champion has its own holdout-calibrated start level).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.model_meta import EconometricEntry
from core.schemas import Candle
from core.series import Timeframe
from forecaster.calibration import DEFAULT_GAMMA, MAX_LEVEL, MIN_LEVEL, AciState
from forecaster.econometric import FilterState, VarianceModel
from forecaster.heads import Forecast

__all__ = ["EconometricServer", "LiveCalibration"]


class EconometricServer:
    """An econometric model filtered forward over the closed candles of one series."""

    def __init__(self, entry: EconometricEntry, timeframe: Timeframe) -> None:
        self.model = VarianceModel.from_dict(entry.params)
        self.kind = self.model.requested or self.model.kind
        self.tf = timeframe
        self.naive_point = entry.point == "naive"
        self._base = (FilterState.from_dict(entry.state), entry.state_time)
        self.state, self.time = self._base
        self.close: float | None = None  # close of the candle at self.time, once seen

    def gap(self, candle: Candle) -> int:
        """How many candles back from ``candle`` the filter needs (0: up to date or older)."""
        return max(self.tf.floor_index(candle.open_time) - self.tf.floor_index(self.time), 0)

    def advance(self, candles: Sequence[Candle], *, force: bool = False) -> bool:
        """Absorb the returns of ``candles`` (ascending, ending at the newest) after the state.

        Returns False when ``candles`` do not reach back to the state's candle (the caller
        reads more from the store; with ``force`` the missing stretch is treated as a hole),
        True once the state is at the newest candle. A return across a hole is unknown: the
        variance carries over (the filter's rule for a gap).
        """
        if not candles or candles[-1].open_time <= self.time:
            return True
        if candles[0].open_time > self.time and not force:
            return False
        prev: Candle | None = None
        for c in candles:
            if c.open_time <= self.time:
                prev = c
                continue
            r = math.nan
            if prev is not None and self.tf.next_open(prev.open_time) == c.open_time:
                r = math.log(c.close / prev.close)
            self.state = self.model.step(self.state, r)
            self.time, prev = c.open_time, c
        self.close = candles[-1].close
        return True

    def reset(self) -> None:
        """Back to the state stored at training (e.g. after a revised candle)."""
        self.state, self.time = self._base

    def forecast(self, last_close: float, level: float) -> Forecast:
        """The next candle's forecast from the current state."""
        # Forecast.of checks what ReturnDistribution.of would (finite, scale > 0, df > 2).
        m = self.model
        loc = 0.0 if self.naive_point else float(m.mu)
        return Forecast.of(loc, m.scale_at(float(self.state.var)), float(m.df), last_close, level)


@dataclass
class LiveCalibration:
    """ACI state of one series plus the interval awaiting its candle (see the module docstring)."""

    aci: AciState
    version: str | None = None
    pending: dict[str, Any] | None = None  # {"target_time", "lower", "upper"} (prices)

    @classmethod
    def start(
        cls, target: float, start_level: float, version: str | None, gamma: float = DEFAULT_GAMMA
    ) -> LiveCalibration:
        """A fresh state at the holdout-calibrated ``start_level``."""
        lv = min(max(start_level, MIN_LEVEL), MAX_LEVEL)
        return cls(AciState(target=target, gamma=gamma, alpha_t=1.0 - lv), version)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LiveCalibration:
        """Inverse of :meth:`to_dict` (raises on a malformed state)."""
        pending = d.get("pending")
        return cls(
            AciState.from_dict(d.get("aci") or {}),
            d.get("version"),
            dict(pending) if isinstance(pending, dict) else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON for Redis."""
        return {"aci": self.aci.to_dict(), "version": self.version, "pending": self.pending}

    @property
    def level(self) -> float:
        """The level to read the next interval at."""
        return self.aci.level

    def settle(self, candle: Candle) -> bool:
        """Score the pending interval against ``candle`` if it is its target; True if it was.

        Only the candle the interval was published for moves the state, once: a redelivered or
        older candle changes nothing, so the level used at ``t`` depends on outcomes <= t only.
        """
        p = self.pending
        if p is None or int(p["target_time"]) != candle.open_time:
            if p is not None and int(p["target_time"]) < candle.open_time:
                self.pending = None  # its candle never came (a hole): nothing to learn
            return False
        self.aci = self.aci.update(float(p["lower"]), float(p["upper"]), candle.close)
        self.pending = None
        return True

    def published(self, target_time: int, lower: float, upper: float) -> None:
        """Remember the interval just published for ``target_time``."""
        self.pending = {"target_time": target_time, "lower": lower, "upper": upper}
