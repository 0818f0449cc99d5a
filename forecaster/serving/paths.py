"""The multi-step forecast path of each served series, refreshed off the hot path.

After a worker publishes a prediction it hands the model and the window it just used to the
process's :class:`PathRefresher` (``submit``: a dict assignment, nothing awaited). One background
task computes the paths, in one worker thread, with :func:`forecaster.horizon.horizon_paths`
(the backtest's recursion), and stores each under ``storage.paths`` for the web to slice
(docs/architecture.md, decision 13).

The work is bounded and stays out of the predictions' way:

- the latest request per series wins: a backlog of a thousand candles costs one path, not a
  thousand;
- every series' candle closes at the same instant, and the recursion holds the GIL for most of
  its time (about 0.3 s for 240 steps of the default model on a shared 2-core machine), so a path
  starts only once no prediction has been published for ``settle_s`` (or after ``max_wait_s``,
  so a never-ending backlog cannot starve the paths): the predictions of a candle go out first,
  the paths run between candles;
- one path is computed at a time, so at most one thread is ever busy with them; when they take
  longer than a candle (hundreds of series), each series' path is refreshed less often instead.

A path that cannot be computed (a diverging recursion, Redis away) is logged with the series and
skipped: the next candle tries again; serving never notices.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from config.logging import series_logger
from core.lifecycle import cancel_and_wait
from core.schemas import Candle, ModelInfo
from core.series import SeriesId
from forecaster.data import CandleArrays
from forecaster.horizon import horizon_paths
from forecaster.inference import LoadedModel
from storage.paths import ForecastPath, PathPoint, PathStore
from storage.registry import ModelRecord

__all__ = ["PathRefresher", "compute_path"]

SETTLE_S = 0.25
MAX_WAIT_S = 5.0
MAX_DUTY = 0.25  # most of one core the paths may take, averaged over one computation


def compute_path(
    series: SeriesId, model: LoadedModel, info: ModelInfo, recent: CandleArrays, steps: int
) -> ForecastPath:
    """The recursive ``steps``-candle path of ``model`` after the last row of ``recent``
    (which needs the model's ``window + 1`` contiguous candles at its end, else
    ``FeatureError``). Each point's interval is the one-step interval widened by ``sqrt(k)``."""
    (path,) = horizon_paths(recent, steps, lstm=model)
    last_close = float(recent.close[-1])
    rets = np.diff(np.log(np.concatenate([[last_close], path.pred])))
    return ForecastPath(
        series=series.key,
        model=info,
        as_of=int(recent.open_time[-1]),
        last_close=last_close,
        interval_level=model.interval_level,
        steps=steps,
        points=[
            PathPoint(
                time=int(path.target_time[i]),
                predicted_close=float(path.pred[i]),
                predicted_return=float(rets[i]),
                lower=float(path.lower[i]),
                upper=float(path.upper[i]),
            )
            for i in range(steps)
        ],
    )


def lstm_info(record: ModelRecord) -> ModelInfo:
    """The path's model: the version's LSTM (the recursion needs a network to feed back into,
    whichever model is the one-step champion)."""
    return ModelInfo(
        version=record.version,
        kind="lstm",
        trained_at=record.trained_at,
        skill=float(record.meta.skill or 0.0),
    )


@dataclass(frozen=True, slots=True)
class _Request:
    series: SeriesId
    model: LoadedModel
    record: ModelRecord
    recent: CandleArrays | Sequence[Candle]  # candles become arrays in the worker thread


class PathRefresher:
    """Coalescing background refresher of the stored paths, shared by a forecaster process."""

    def __init__(
        self,
        store: PathStore,
        steps: int,
        *,
        settle_s: float = SETTLE_S,
        max_wait_s: float = MAX_WAIT_S,
    ) -> None:
        self.store = store
        self.steps = steps
        self.settle_s = settle_s
        self.max_wait_s = max_wait_s
        self._last_submit = 0.0
        self.refreshed = 0
        self.failed = 0
        self._pending: dict[SeriesId, _Request] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="forecast-path")

    def submit(
        self,
        series: SeriesId,
        model: LoadedModel,
        record: ModelRecord,
        recent: CandleArrays | Sequence[Candle],
    ) -> None:
        """Ask for the path after ``recent``'s last candle (replacing any request of ``series``
        not yet started). Returns at once; call from the event loop."""
        if self._closed:
            return
        self._pending[series] = _Request(series, model, record, recent)
        self._last_submit = time.monotonic()
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="forecast-paths")

    async def close(self) -> None:
        """Stop: requests not started are dropped; a computation in its thread is left to
        finish (it cannot be interrupted) but its result is never written."""
        self._closed = True
        if self._task is not None:
            await cancel_and_wait(self._task)
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._quiet()
                series = next(iter(self._pending))
                started = time.monotonic()
                await self._refresh(self._pending.pop(series))
                # Paths are a view for people; predictions are for bots. Bounded to a share of
                # one core, so with many series each path is refreshed less often instead.
                busy = time.monotonic() - started
                await asyncio.sleep(busy * (1.0 / MAX_DUTY - 1.0))

    async def _quiet(self) -> None:
        """Return once no request has come for ``settle_s``, or ``max_wait_s`` from now."""
        deadline = time.monotonic() + self.max_wait_s
        while (idle := time.monotonic() - self._last_submit) < self.settle_s:
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(min(self.settle_s - idle, max(0.0, deadline - time.monotonic())))

    async def _refresh(self, req: _Request) -> None:
        log = series_logger(req.series, __name__)
        loop = asyncio.get_running_loop()
        info = lstm_info(req.record)
        try:
            path = await loop.run_in_executor(self._pool, _compute, req, info, self.steps)
            await self.store.write(path)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # one series' path never stops the others, nor serving
            self.failed += 1
            log.warning("path.failed", version=info.version, error=f"{type(e).__name__}: {e}"[:300])
            return
        self.refreshed += 1
        log.debug("path.refreshed", version=info.version, as_of=path.as_of, steps=path.steps)


def _compute(req: _Request, info: ModelInfo, steps: int) -> ForecastPath:
    """:func:`compute_path` of a request (building its arrays here, off the event loop)."""
    recent = req.recent
    if not isinstance(recent, CandleArrays):
        recent = CandleArrays.from_candles(list(recent), req.series.timeframe)
    return compute_path(req.series, req.model, info, recent, steps)
