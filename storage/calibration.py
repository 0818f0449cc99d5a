"""The live interval calibration of each series, kept in Redis so every replica continues it.

One JSON value per series under :meth:`storage.keys.Keys.calibration` (in the series' hash
tag): the adaptive-conformal state (``aci``: the nominal ``target``, ``alpha_t``, counts), the
model version it calibrates, and the interval last published (``pending``: its target time and
bounds), which the next candle settles. The forecaster writes it in the same atomic step as the
prediction it belongs to (storage.predictions); ``status`` and the web read it here.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from core.series import SeriesId
from storage.keys import Keys

__all__ = ["CalibrationStore", "levels"]


class CalibrationStore:
    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def read(self, series: SeriesId) -> dict[str, Any] | None:
        """The stored state, or None (none yet, or unreadable: the forecaster starts afresh)."""
        raw = await self.redis.get(self.keys.calibration(series))
        if raw is None:
            return None
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None

    async def write(self, series: SeriesId, state: dict[str, Any]) -> None:
        """Replace the state (the forecaster writes it with each prediction instead)."""
        await self.redis.set(self.keys.calibration(series), orjson.dumps(state))


def levels(state: dict[str, Any] | None) -> dict[str, Any] | None:
    """``nominal``, ``effective`` level and realised ``coverage`` of a stored state, for status."""
    aci = (state or {}).get("aci")
    if not isinstance(aci, dict):
        return None
    vals = [aci.get("target"), aci.get("alpha_t"), aci.get("min_level", 0.5)]
    vals.append(aci.get("max_level", 0.995))
    nums = [float(v) for v in vals if isinstance(v, int | float)]
    if len(nums) != 4:
        return None
    target, alpha, lo, hi = nums
    n, misses = int(aci.get("n", 0)), int(aci.get("misses", 0))
    effective = min(max(1.0 - alpha, lo), hi)
    return {
        "nominal": target,
        "effective": effective if math.isfinite(effective) else None,
        "scored": n,
        "coverage": (1.0 - misses / n) if n else None,
        "version": (state or {}).get("version"),
    }
