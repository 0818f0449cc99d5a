"""Multi-step forecasts "up to a date" for the dashboard, from the series' current model.

The recursion itself is :func:`forecaster.horizon.horizon_paths` (the backtest's multi-step
forecast): each predicted log return is fed back as the newest input, the other inputs of an
imagined candle are held at their training means, and the interval at step ``k`` is the model's
one-step interval widened by ``sqrt(k)``: a rough guide to how fast uncertainty grows, not a
calibrated band.

This module adds what a server needs: models are loaded from the registry (sha256-verified, Keras
safe mode) in a worker thread, once per version, and the last path per series is reused until a
new candle or model arrives, so any number of viewers costs one computation per candle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from core.model_meta import ModelMeta
from core.series import SeriesId
from storage.candles import CandleStore
from storage.registry import ModelRegistry

if TYPE_CHECKING:
    from forecaster.data import CandleArrays
    from forecaster.inference import LoadedModel

log = structlog.get_logger(__name__)

MAX_STEPS = 1000


class ForecastUnavailable(RuntimeError):
    """No forecast can be made now (no model yet, too few candles, a hole in the window)."""


def multi_step(model: LoadedModel, recent: CandleArrays, steps: int) -> list[dict[str, Any]]:
    """A recursive ``steps``-candle forecast after the last row of ``recent``.

    Each point: ``time`` (open time of the predicted candle), ``predicted_close``, ``lower``,
    ``upper`` (price) and ``predicted_return`` (that step's log return). ``recent`` needs the
    model's ``window + 1`` contiguous candles at its end (else ``FeatureError``).
    """
    from forecaster.horizon import horizon_paths  # noqa: PLC0415 (the forecaster code the dashboard still borrows: see pyproject)

    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be 1..{MAX_STEPS}")
    (path,) = horizon_paths(recent, steps, lstm=model)
    logs = np.log(np.concatenate([[float(recent.close[-1])], path.pred]))
    rets = np.diff(logs)
    return [
        {
            "time": int(path.target_time[i]),
            "predicted_return": float(rets[i]),
            "predicted_close": float(path.pred[i]),
            "lower": float(path.lower[i]),
            "upper": float(path.upper[i]),
        }
        for i in range(steps)
    ]


@dataclass
class _Cached:
    version: str
    model: LoadedModel
    meta: ModelMeta
    trained_at: int


class Forecaster:
    """Multi-step forecasts per series from the promoted model, with per-version caching."""

    def __init__(
        self,
        registry: ModelRegistry,
        store: CandleStore,
        loader: Callable[[bytes, ModelMeta], LoadedModel] | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self._loader = loader
        self._models: dict[str, _Cached] = {}
        self._paths: dict[tuple[str, str, int, int], list[dict[str, Any]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def model(self, series: SeriesId) -> _Cached:
        """The promoted model of ``series``, loaded once per version (in a worker thread)."""
        version = await self.registry.current_version(series)
        if version is None:
            raise ForecastUnavailable(f"no model has been promoted for {series} yet")
        cached = self._models.get(series.key)
        if cached is not None and cached.version == version:
            return cached
        lock = self._locks.setdefault(series.key, asyncio.Lock())
        async with lock:  # one load per version even when many viewers ask at once
            cached = self._models.get(series.key)
            if cached is not None and cached.version == version:
                return cached
            rec = await self.registry.get(series, version)  # verifies the sha256
            loaded = await asyncio.to_thread(self._load, rec.artifact, rec.meta)
            cached = _Cached(version, loaded, rec.meta, rec.trained_at)
            self._models[series.key] = cached
            log.info("web.model_loaded", series=series.key, version=version)
            return cached

    def _load(self, artifact: bytes, meta: ModelMeta) -> LoadedModel:
        if self._loader is not None:
            return self._loader(artifact, meta)
        from forecaster.inference import LoadedModel  # noqa: PLC0415 (the forecaster code the dashboard still borrows: see pyproject)

        return LoadedModel.from_artifact(artifact, meta)

    async def forecast(self, series: SeriesId, steps: int) -> dict[str, Any]:
        """``{"series", "model", "as_of", "last_close", "steps", "points": [...]}``."""
        from forecaster.data import CandleArrays  # noqa: PLC0415 (the forecaster code the dashboard still borrows: see pyproject)
        from forecaster.features import FeatureError  # noqa: PLC0415 (the forecaster code the dashboard still borrows: see pyproject)

        cached = await self.model(series)
        window = cached.model.window
        candles = await self.store.last(series, window + 1)
        if not candles:
            raise ForecastUnavailable(f"no candles stored for {series} yet")
        as_of = candles[-1].open_time
        key = (series.key, cached.version, as_of, steps)
        points = self._paths.get(key)
        if points is None:
            arrays = CandleArrays.from_candles(candles, series.timeframe)
            try:
                points = await asyncio.to_thread(multi_step, cached.model, arrays, steps)
            except FeatureError as e:
                raise ForecastUnavailable(f"cannot forecast {series} now: {e}") from None
            # Only the newest candle's paths are worth keeping: drop the rest of this series.
            for k in [k for k in self._paths if k[0] == series.key]:
                del self._paths[k]
            self._paths[key] = points
        return {
            "series": series.key,
            "model": {
                "version": cached.version,
                "trained_at": cached.trained_at,
                "skill": cached.meta.skill,
            },
            "as_of": as_of,
            "last_close": candles[-1].close,
            "steps": steps,
            "interval_level": cached.model.interval_level,
            "points": points,
        }
