"""Serving one series: closed-candle event in, Prediction out, within milliseconds.

A :class:`SeriesWorker` reads the series' closed-candle events through the consumer group (on a
standalone Redis through the process's one read for all series, :mod:`.fanin`), builds the
window from the candle store, runs the model's numpy forward pass (no
``model.predict``), publishes the Prediction exactly once (the Lua script keys it by ``as_of``)
and only then acknowledges the event, so a worker that dies leaves it pending for the next
holder of the series. Loading a newly promoted model happens in a thread while the old one keeps
serving (docs/architecture.md, decision 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from config.logging import series_logger
from config.settings import Settings
from core.clock import Clock
from core.lifecycle import cancel_and_wait
from core.model_meta import ModelMeta
from core.schemas import QUANTILE_LEVELS, Candle, ModelInfo, Prediction, stream_id_for
from core.series import SeriesId, model_subject
from forecaster.data import CandleArrays
from forecaster.heads import Forecast
from forecaster.inference import LoadedModel
from forecaster.serving.batching import InferenceBatcher
from forecaster.serving.champion import EconometricServer, LiveCalibration
from forecaster.serving.fanin import EventFanIn
from forecaster.serving.live_score import LiveScorer
from forecaster.serving.models import MODEL_REFRESH_S, ModelCache, ModelHolder
from forecaster.serving.paths import PathRefresher
from forecaster.serving.prom import EVENTS_SKIPPED, LATENCY, MODEL_AGE, PREDICTIONS, PUBLISH_LATENCY
from storage.calibration import CalibrationStore
from storage.candles import CandleStore
from storage.events import CandleEvent, CandleEvents
from storage.facade import Storage
from storage.predictions import PredictionBus
from storage.registry import ModelRecord, ModelRegistry
from storage.scores import LiveScores

MAX_CATCH_UP = 100_000  # candles an econometric filter reads to catch up (beyond: a hole)


@dataclass
class ServingContext:
    """What every worker of one forecaster process shares."""

    settings: Settings
    storage: Storage
    clock: Clock
    consumer: str
    batcher: InferenceBatcher = field(default_factory=InferenceBatcher)
    models: ModelCache | None = None
    paths: PathRefresher | None = None  # the dashboard's multi-step paths; None: not kept
    fanin: EventFanIn | None = None  # one read for all series (standalone Redis only)
    # The stores the workers use, all the process's one Storage's.
    store: CandleStore = field(init=False)
    events: CandleEvents = field(init=False)
    bus: PredictionBus = field(init=False)
    registry: ModelRegistry = field(init=False)
    scores: LiveScores = field(init=False)
    calibration: CalibrationStore = field(init=False)

    def __post_init__(self) -> None:
        s = self.storage
        self.store, self.events, self.bus = s.candles, s.events, s.predictions
        self.registry, self.scores, self.calibration = s.registry, s.scores, s.calibration
        if self.models is None:
            self.models = ModelCache(
                self.registry, keras=self.settings.forecast.inference == "keras"
            )
        if self.fanin is None and self.bus.pipelined:
            read_batch = self.settings.forecast.read_batch
            self.fanin = EventFanIn(self.events, self.consumer, read_batch)

    def subject(self, series: SeriesId) -> SeriesId:
        """Whose model serves ``series`` (its own, or its timeframe's global model)."""
        return model_subject(series, self.settings.model.scope)


@dataclass
class WorkerStats:
    published: int = 0
    duplicates: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


class SeriesWorker:
    """Consumes one series' closed-candle events and publishes its predictions."""

    def __init__(self, ctx: ServingContext, series: SeriesId) -> None:
        self.ctx = ctx
        self.series = series
        self.log = series_logger(series, __name__)
        assert ctx.models is not None
        self.holder = ModelHolder(ctx.models, ctx.subject(series), self.log)
        self.scorer = LiveScorer(ctx.settings.forecast.score_window)
        self.stats = WorkerStats()
        # The last window+1 candles, kept from the events themselves so the hot path needs no
        # read; rebuilt from the store whenever it would not be exactly the stored window.
        self.recent: deque[Candle] = deque()
        self.calibration: LiveCalibration | None = None  # read from Redis on first use
        self._econ: dict[str, EconometricServer] = {}  # kind -> filter, for self._econ_version
        self._econ_version: str | None = None
        # the series' metric children, looked up once (labels() costs microseconds a call)
        key = series.key
        self._age, self._published = MODEL_AGE.labels(key), PREDICTIONS.labels(key)
        self._latency = LATENCY.labels(key)
        self._arrays: tuple[Candle, Candle, CandleArrays] | None = None  # see _candle_arrays

    async def run(self) -> None:
        """Serve until cancelled: first what earlier holders left pending, then new events."""
        ctx, s = self.ctx, self.series
        await ctx.events.ensure_group(s)
        await self.holder.load_now()
        refresher = asyncio.create_task(self._refresh_model_loop())
        try:
            # We hold the series' lease, so every pending entry is an orphan of a dead holder.
            while batch := await ctx.events.claim(s, ctx.consumer, min_idle_ms=0, count=500):
                await self.handle(batch)
            while batch := await ctx.events.read(s, ctx.consumer, pending=True, count=500):
                await self.handle(batch)
            if ctx.fanin is not None:
                await self._serve_fanned_in(ctx.fanin)
            while True:
                batch = await ctx.events.read(
                    s, ctx.consumer, count=ctx.settings.forecast.read_batch, block_ms=1000
                )
                if batch:
                    await self.handle(batch)
        finally:
            await cancel_and_wait(refresher)
            await self.holder.close()

    async def _serve_fanned_in(self, fanin: EventFanIn) -> None:
        """Serve the events the process-wide read hands this series (never returns)."""
        queue = await fanin.join(self.series)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                await self.handle(item)
        finally:  # before the lease goes (see forecaster.serving.fanin)
            await fanin.leave(self.series)

    async def _refresh_model_loop(self) -> None:
        # Off the hot path: a promotion is picked up within a second.
        while True:
            await asyncio.sleep(MODEL_REFRESH_S)
            with contextlib.suppress(RedisError, OSError):
                await self.holder.refresh()

    async def handle(self, batch: list[CandleEvent]) -> None:
        """Predict each event in order (a backlog after a restart included: it costs a
        millisecond each). A published prediction acknowledges its event and carries the live
        score in the same atomic step; events without a prediction are acknowledged together."""
        paths = self.ctx.paths
        # no path step starts while events are being handled (forecaster.serving.paths)
        with paths.serving() if paths is not None else contextlib.nullcontext():
            unanswered: list[str] = []
            for ev in sorted(batch, key=lambda e: e.candle.open_time):
                scored = self.scorer.closed(ev.candle)  # the candle settles the last prediction
                if not await self._predict(ev, self.scorer.figures() if scored else None):
                    unanswered.append(ev.id)
            if unanswered:
                await self.ctx.events.ack(self.series, *unanswered)

    async def _window(self, candle: Candle, n: int) -> list[Candle]:
        """The ``n`` candles ending with ``candle``, from memory when the events so far are
        exactly the stored history, else from the store (which may return fewer: a hole)."""
        tf = self.series.timeframe
        recent = self.recent
        if recent and recent[-1].open_time == candle.open_time:
            recent[-1] = candle  # a revision of the newest candle
        elif recent and tf.next_open(recent[-1].open_time) == candle.open_time:
            recent.append(candle)
        else:
            recent.clear()
        while len(recent) > n:
            recent.popleft()
        if len(recent) < n:
            recent.clear()
            recent.extend(await self.ctx.store.window(self.series, candle.open_time, n))
            window = list(recent)
            if len(window) < n:
                # A short read means a hole: keep only the run after it, so the candles
                # appended next never grow the memory copy to full length with the hole inside.
                start = len(window) - 1
                while start > 0 and tf.next_open(window[start - 1].open_time) == (
                    window[start].open_time
                ):
                    start -= 1
                recent.clear()
                recent.extend(window[start:])
            return window
        return list(recent)

    async def _predict(self, ev: CandleEvent, scores: dict[str, Any] | None) -> bool:
        """Publish the prediction for ``ev``; False when none was published (skipped)."""
        tf = self.series.timeframe
        settings = self.ctx.settings
        now = self.ctx.clock.now_ms()
        if now - tf.next_open(ev.candle.open_time) > settings.schedule.stale_after * tf.ms:
            self._skip("stale")
            return False
        model, record = self.holder.model, self.holder.record
        if model is None or record is None:
            self._skip("no_model")
            return False
        if ev.revised and self.recent and ev.candle.open_time < self.recent[-1].open_time:
            self.recent.clear()  # an older candle inside the window changed
        candles = await self._window(ev.candle, model.window + 1)
        if len(candles) < model.window + 1:
            self._skip("incomplete_window")  # a hole inside the window: never predict across it
            return False
        cal = await self._calibration(record.version, record.meta, model)
        cal.settle(ev.candle)  # the interval published for this candle meets its outcome
        got = await self._forecast(ev, model, record, candles, cal.level)
        if got is None:
            self._skip("no_forecast")
            return False
        kind, forecast = got
        meta = record.meta
        age = meta.age_at(ev.candle.open_time, tf)
        self._age.set(age)
        target_time = tf.next_open(ev.candle.open_time)
        skill = meta.skill_of(kind)
        prediction = Prediction(
            exchange=self.series.exchange,
            symbol=self.series.symbol,
            timeframe=tf.text,
            as_of=ev.candle.open_time,
            target_time=target_time,
            last_close=candles[-1].close,
            predicted_close=forecast.pred_close,
            predicted_return=forecast.pred_return,
            lower=forecast.lower,
            upper=forecast.upper,
            interval_level=cal.aci.target,
            effective_level=forecast.level,
            sigma=forecast.sigma,
            quantiles={str(q): v for q, v in zip(QUANTILE_LEVELS, forecast.quantiles, strict=True)},
            p_up=forecast.p_up,
            model=ModelInfo(
                version=record.version,
                kind=kind,
                trained_at=record.trained_at,
                skill=float(skill or 0.0),
            ),
            stale_model=meta.expired(ev.candle.open_time, tf, settings.schedule.max_model_age),
            published_at=self.ctx.clock.now_ms(),
            latency_ms=round(time.time() * 1000 - ev.arrived_ms, 3),
            id=stream_id_for(ev.candle.open_time),
        )
        nxt = LiveCalibration(cal.aci, cal.version)
        nxt.published(target_time, forecast.lower, forecast.upper)
        t0 = time.perf_counter()
        published = await self.ctx.bus.publish(
            prediction,
            ack=[ev.id],
            group=self.ctx.events.group,
            scores=scores,
            calibration=nxt.to_dict(),
        )
        if published:
            self.calibration = nxt
            self.stats.published += 1
            self._published.inc()
            self._latency.observe(prediction.latency_ms / 1000)
            PUBLISH_LATENCY.observe(time.perf_counter() - t0)
            self.scorer.predicted(prediction, (forecast.loc, forecast.scale, forecast.df))
            if self.ctx.paths is not None:  # off the hot path: returns at once
                self.ctx.paths.submit(self.series, model, record, candles)
        else:
            # A redelivered event (already published once), or a gap-filled candle older than
            # one already predicted: the stream only moves forward.
            self.stats.duplicates += 1
            self._skip("already_published")
        return True  # acknowledged by the publish script either way

    async def _calibration(
        self, version: str, meta: ModelMeta, model: LoadedModel
    ) -> LiveCalibration:
        """This series' calibration for ``version``: memory, else Redis, else a fresh start."""
        cal = self.calibration
        if cal is None:
            assert self.ctx.calibration is not None
            try:
                stored = await self.ctx.calibration.read(self.series)
                cal = LiveCalibration.from_dict(stored) if stored else None
            except (ValueError, TypeError, KeyError) as e:
                self.log.warning("calibration.unreadable", error=str(e)[:200])
                cal = None
        if cal is None or cal.version != version:
            start = meta.champion.calibrated_level if meta.champion is not None else None
            level = start if start is not None else model.start_level
            gamma = self.ctx.settings.forecast.calibration_gamma
            cal = LiveCalibration.start(model.interval_level, level, version, gamma)
            self.log.info("calibration.started", version=version, level=round(cal.level, 4))
        self.calibration = cal
        return cal

    async def _forecast(
        self,
        ev: CandleEvent,
        model: LoadedModel,
        record: ModelRecord,
        candles: list[Candle],
        level: float,
    ) -> tuple[str, Forecast] | None:
        """The champion's forecast, or the first fallback that gives a finite one."""
        champion = record.meta.champion_kind
        for kind in dict.fromkeys((champion, "ewma", "static", "lstm")):
            try:
                if kind == "lstm":
                    # Built here only: an econometric champion needs the candles alone.
                    arrays = self._candle_arrays(candles)
                    if self.ctx.settings.forecast.inference == "keras":
                        return kind, model.predict_keras(arrays, level)  # the slow baseline
                    return kind, await self.ctx.batcher.forecast(model, arrays, level)
                server = await self._econometric(record, kind, ev, candles)
                if server is not None:
                    return kind, server.forecast(candles[-1].close, level)
                self.log.warning("forecast.fallback", model=kind, error="no parameters stored")
            except (ValueError, ArithmeticError) as e:
                self.log.warning(
                    "forecast.fallback", model=kind, champion=champion, error=str(e)[:200]
                )
        return None

    def _candle_arrays(self, candles: list[Candle]) -> CandleArrays:
        """``CandleArrays.from_candles(candles)``; when ``candles`` is the last call's window
        moved on by one candle (the same objects, from ``self.recent``), the last arrays
        shifted by one row instead (~10 us instead of ~60 for 61 candles)."""
        prev = self._arrays
        if (
            prev is not None
            and len(candles) == len(prev[2])
            and candles[0] is prev[0]
            and candles[-2] is prev[1]
        ):
            arrays = prev[2].shifted(candles[-1])
        else:
            arrays = CandleArrays.from_candles(candles, self.series.timeframe)
        # the second candle and the last: what the next window shares with this one
        self._arrays = (candles[1], candles[-1], arrays) if len(candles) > 1 else None
        return arrays

    async def _econometric(
        self, record: ModelRecord, kind: str, ev: CandleEvent, candles: list[Candle]
    ) -> EconometricServer | None:
        """The econometric model ``kind`` of ``record``, filtered up to ``ev``'s candle."""
        if self._econ_version != record.version:
            self._econ, self._econ_version = {}, record.version
        server = self._econ.get(kind)
        if server is None:
            entry = record.meta.econometric_entry(kind)
            if entry is None:
                return None
            server = self._econ[kind] = EconometricServer(entry, self.series.timeframe)
        if ev.revised and ev.candle.open_time <= server.time:
            server.reset()  # a candle it absorbed changed: filter again from the stored state
        if not server.advance(candles):
            # Restart, hand-over or a backlog: catch up from the candle store (bounded).
            n = min(server.gap(ev.candle) + 1, MAX_CATCH_UP)
            history = await self.ctx.store.window(self.series, ev.candle.open_time, n)
            server.advance(history, force=True)
        return server

    def _skip(self, reason: str) -> None:
        self.stats.skipped[reason] = self.stats.skipped.get(reason, 0) + 1
        EVENTS_SKIPPED.labels(self.series.key, reason).inc()
