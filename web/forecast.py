"""Multi-step forecasts "up to a date" for the dashboard: slices of the path the forecaster stores.

The forecaster computes the path once per candle (``forecaster.serving.paths``, the backtest's
recursion: each predicted log return fed back as the newest input, the interval widened by
``sqrt(k)``) and stores it under ``storage.paths``. The web only reads and slices it, so it
loads no model and imports nothing of the forecaster (docs/architecture.md, decision 13), and
any number of viewers costs one computation per candle.
"""

from __future__ import annotations

from config.settings import MAX_PATH_STEPS
from core.series import SeriesId
from storage.paths import ForecastPath, PathStore
from web.models import ForecastOut

__all__ = ["DEFAULT_STEPS", "MAX_STEPS", "BeyondPath", "ForecastUnavailable", "PathReader"]

MAX_STEPS = MAX_PATH_STEPS
DEFAULT_STEPS = 60


class ForecastUnavailable(RuntimeError):
    """No path is stored for the series yet (no model promoted, or no candle since)."""


class BeyondPath(ValueError):
    """The request reaches outside the stored path (before its first candle or past its end)."""


class PathReader:
    """The stored paths, sliced to what a request asks for."""

    def __init__(self, paths: PathStore) -> None:
        self.paths = paths

    async def forecast(
        self, series: SeriesId, *, steps: int | None = None, until: int | None = None
    ) -> ForecastOut:
        """The first ``steps`` candles of the path (default 60), or those up to the candle
        opening at ``until``; :class:`BeyondPath` past the stored steps."""
        path = await self.paths.read(series)
        if path is None:
            raise ForecastUnavailable(
                f"no forecast for {series} yet: the forecaster stores one after each "
                "prediction once a model is promoted"
            )
        n = _steps(series, path, steps, until)
        return ForecastOut(
            series=path.series,
            model=path.model,
            as_of=path.as_of,
            last_close=path.last_close,
            steps=n,
            interval_level=path.interval_level,
            points=path.points[:n],
        )


def _steps(series: SeriesId, path: ForecastPath, steps: int | None, until: int | None) -> int:
    stored = f"the stored path has {path.steps} (the forecaster's forecast.path_steps)"
    if until is None:
        if steps is None:
            return min(DEFAULT_STEPS, path.steps)
        if steps > path.steps:
            raise BeyondPath(f"steps must be at most {path.steps}: {stored}")
        return steps
    tf = series.timeframe
    n = tf.floor_index(until) - tf.floor_index(path.as_of)
    if not 1 <= n <= path.steps:
        raise BeyondPath(
            f"until must be 1..{path.steps} candles after the forecast's last candle "
            f"({path.as_of}): {stored}"
        )
    return n
