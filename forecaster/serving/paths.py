"""The multi-step forecast path of each served series, refreshed off the hot path.

After a worker publishes a prediction it hands the model and the window it just used to the
process's :class:`PathRefresher` (``submit``: a dict assignment, nothing awaited). One background
task computes the paths with the backtest's recursion (:class:`forecaster.horizon.LstmRecursion`)
and stores each under ``storage.paths`` for the web to slice (docs/architecture.md, decision 13).

The work is bounded and stays out of the predictions' way:

- the latest request per series wins: a backlog of a thousand candles costs one path, not a
  thousand;
- the series served by one model object (every series of a timeframe, with the global model)
  share a recursion: ``MAX_BATCH`` windows go through each step's one forward pass;
- the recursion runs on the event loop one step (one forward pass, a few milliseconds) at a
  time, and a step never starts while a worker is handling events (:meth:`PathRefresher.serving`):
  a candle's predictions wait for one step at most. (In a worker thread, as before, the recursion
  held the GIL for most of its 0.3 s a path, and every prediction during it ran at half speed.)
- a batch starts only once no prediction has been published for ``settle_s`` (or after
  ``max_wait_s``, so a never-ending backlog cannot starve the paths), and the steps take at most
  ``MAX_DUTY`` of one core: with hundreds of series each path is refreshed less often instead.

A path that cannot be computed (a short window, a diverging recursion, Redis away) is logged with
the series and skipped: the next candle tries again; serving never notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from config.logging import series_logger
from core.lifecycle import cancel_and_wait
from core.schemas import Candle, ModelInfo
from core.series import SeriesId
from forecaster.data import CandleArrays
from forecaster.horizon import HorizonPath, LstmRecursion
from forecaster.inference import LoadedModel
from storage.paths import ForecastPath, PathStore
from storage.registry import ModelRecord

__all__ = ["PathRefresher", "stored_path"]

SETTLE_S = 0.25
MAX_WAIT_S = 5.0
MAX_DUTY = 0.25  # most of one core the paths may take, averaged over each step
MAX_BATCH = 32  # windows per recursion step: ~2-3 ms a step for the default model


def stored_path(
    series: SeriesId, info: ModelInfo, recent: CandleArrays, path: HorizonPath
) -> ForecastPath:
    """The stored form of the recursion's ``path`` after the last candle of ``recent``."""
    last_close = float(recent.close[-1])
    rets = np.diff(np.log(np.concatenate([[last_close], path.pred])))
    # One validation of plain columns (pydantic's core): 240 PathPoint objects built one by one
    # cost a millisecond of the event loop.
    columns = zip(
        path.target_time.tolist(),
        path.pred.tolist(),
        rets.tolist(),
        path.lower.tolist(),
        path.upper.tolist(),
        strict=True,
    )
    return ForecastPath.model_validate(
        {
            "series": series.key,
            "model": info,
            "as_of": int(recent.open_time[-1]),
            "last_close": last_close,
            "interval_level": path.level,
            "steps": len(path.pred),
            "points": [
                {"time": t, "predicted_close": c, "predicted_return": r, "lower": lo, "upper": hi}
                for t, c, r, lo, hi in columns
            ],
        }
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
    recent: CandleArrays | Sequence[Candle]  # candles become arrays when the batch starts


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
        self._serving = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

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

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """Around a worker's handling of its events: no recursion step starts meanwhile."""
        self._serving += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._serving -= 1
            if self._serving == 0:
                self._idle.set()

    async def close(self) -> None:
        """Stop: requests not started are dropped, a batch in progress is abandoned between
        two steps (nothing of it is written)."""
        self._closed = True
        if self._task is not None:
            await cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._quiet()
                batch = self._take_batch()
                try:
                    deadline = asyncio.get_running_loop().time() + self.max_wait_s
                    await self._refresh(batch, deadline)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # never the end of the paths: the batch is lost only
                    for req in batch:
                        self._failed(req, e)

    def _take_batch(self) -> list[_Request]:
        """The oldest request, with the others of its model object and timeframe (up to
        ``MAX_BATCH``)."""
        first = next(iter(self._pending.values()))
        tf = first.series.timeframe
        batch = [
            r for r in self._pending.values() if r.model is first.model and r.series.timeframe == tf
        ][:MAX_BATCH]
        for r in batch:
            del self._pending[r.series]
        return batch

    async def _quiet(self) -> None:
        """Return once no request has come for ``settle_s``, or ``max_wait_s`` from now."""
        deadline = time.monotonic() + self.max_wait_s
        while (idle := time.monotonic() - self._last_submit) < self.settle_s:
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(min(self.settle_s - idle, max(0.0, deadline - time.monotonic())))

    async def _when_idle(self, deadline: float) -> None:
        """Return once no worker is handling events, or at ``deadline`` (the loop's clock): a
        batch waits ``max_wait_s`` in all for serving to pause, then runs regardless."""
        if not self._serving:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                while self._serving:  # a worker may start between the wake-up and this task
                    await self._idle.wait()

    async def _step_when_idle(self, rec: LstmRecursion, deadline: float) -> None:
        """One recursion step, once no worker is handling events (or past ``deadline``), then
        a pause that keeps the steps within ``MAX_DUTY`` of a core."""
        await self._when_idle(deadline)
        started = time.perf_counter()
        rec.step()
        await asyncio.sleep((time.perf_counter() - started) * (1.0 / MAX_DUTY - 1.0))

    async def _refresh(self, batch: list[_Request], deadline: float) -> None:
        model = batch[0].model
        ready: list[tuple[_Request, CandleArrays]] = []
        await self._when_idle(deadline)  # building the windows: ~0.1 ms each
        for req in batch:
            try:
                recent = req.recent
                if not isinstance(recent, CandleArrays):
                    recent = CandleArrays.from_candles(list(recent), req.series.timeframe)
                model.check(recent)
                ready.append((req, recent))
            except Exception as e:  # one series' path never stops the others, nor serving
                self._failed(req, e)
        if not ready:
            return
        try:
            rec = LstmRecursion(model, [a for _r, a in ready])
            for _ in range(self.steps):
                await self._step_when_idle(rec, deadline)
            await self._when_idle(deadline)
            paths = rec.paths()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            for req, _a in ready:
                self._failed(req, e)
            return
        for (req, recent), path in zip(ready, paths, strict=True):
            await self._when_idle(deadline)  # a path's message and its write: ~0.6 ms
            try:
                info = lstm_info(req.record)  # refuses a non-finite skill, for this path only
                if isinstance(path, ValueError):
                    raise path
                await self.store.write(stored_path(req.series, info, recent, path))
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._failed(req, e)
                continue
            self.refreshed += 1
            series_logger(req.series, __name__).debug(
                "path.refreshed",
                version=req.record.version,
                as_of=int(recent.open_time[-1]),
                steps=self.steps,
            )

    def _failed(self, req: _Request, e: Exception) -> None:
        self.failed += 1
        series_logger(req.series, __name__).warning(
            "path.failed", version=req.record.version, error=f"{type(e).__name__}: {e}"[:300]
        )
