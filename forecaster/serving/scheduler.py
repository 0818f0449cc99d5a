"""When to retrain: an APScheduler job that starts training processes.

Every ``schedule.check_interval_s`` the job looks at the series this replica serves and starts a
training process (``python -m forecaster.training.job``) for the most urgent that needs one: no
model yet (once ``min_train_candles`` exist), then a model past ``max_model_age`` candles (forced at
the next new candle), then ``retrain_every`` candles since the last attempt, each ordered by how far
overdue it is, so that when training cannot keep up no series waits behind the others for ever. At
most one training runs per replica so serving keeps a core; the ``train`` lease inside the job keeps
two replicas from training one series at once. A failed run is logged with its cause and retried
``retrain_every`` candles later.

With the global scope (``model.scope``, the default) what is trained is the global model of each
timeframe this replica serves, judged on the newest candle of any of its series
(docs/architecture.md, decision 12); the ``train`` lease on it keeps replicas apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from config.logging import series_logger
from config.settings import Settings
from core.lifecycle import with_timeout
from core.series import SeriesId, global_model_id
from forecaster.serving.prom import TRAINING_SECONDS, TRAININGS
from storage.facade import Storage
from storage.registry import ModelIntegrityError

log = structlog.get_logger(__name__)


class TrainingScheduler:
    """Decides which held series to retrain and runs one training process at a time."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        held: Callable[[], list[SeriesId]],
        *,
        config_file: str | None = None,
    ) -> None:
        self.settings = settings
        self.store = storage.candles
        self.held = held
        self.config_file = config_file
        self.registry = storage.registry
        self.tlog = storage.training_log
        self.leases = storage.leases
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.proc: asyncio.subprocess.Process | None = None
        self.training: SeriesId | None = None
        self.runs: list[tuple[str, int]] = []
        self._watch: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.scheduler.add_job(
            self.check,
            "interval",
            seconds=self.settings.schedule.check_interval_s,
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
            id="training-check",
        )
        self.scheduler.start()

    async def stop(self) -> None:
        """Stop scheduling; a training in flight is asked to stop (it releases its lease)."""
        self.scheduler.shutdown(wait=False)
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await with_timeout(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._watch is not None:
            await asyncio.gather(self._watch, return_exceptions=True)

    async def check(self) -> None:
        """The scheduled job: start a training for the most urgent held series (module doc)."""
        if self.proc is not None and self.proc.returncode is None:
            return
        try:
            picked = await self.most_urgent()
        except Exception as e:  # Redis down: the next check tries again
            log.warning("schedule.check_failed", error=str(e)[:200])
            return
        if picked is not None:
            await self.launch(*picked)

    def subjects(self) -> list[SeriesId]:
        """The models this replica may train: its held series' own, or with the global scope the
        global model of each timeframe it serves (the ``train`` lease keeps replicas apart)."""
        held = self.held()
        if self.settings.model.scope == "series":
            return held
        return list(dict.fromkeys(global_model_id(s.timeframe) for s in held))

    def members(self, subject: SeriesId) -> list[SeriesId]:
        """The series whose candles train ``subject``."""
        if not subject.is_global:
            return [subject]
        return [s for s in self.settings.series_ids if s.timeframe == subject.timeframe]

    async def most_urgent(self) -> tuple[SeriesId, str] | None:
        """The model to train next and why, or None when none needs it."""
        best: tuple[tuple[int, float], SeriesId, str] | None = None
        for series in self.subjects():
            need = await self._need(series)
            if need is not None and (best is None or need[1] > best[0]):
                best = (need[1], series, need[0])
        return None if best is None else (best[1], best[2])

    async def needs_training(self, series: SeriesId) -> str | None:
        """Why ``series`` should be trained now, or None."""
        need = await self._need(series)
        return None if need is None else need[0]

    async def _need(self, series: SeriesId) -> tuple[str, tuple[int, float]] | None:
        """Why ``series`` should be trained now and how urgently (greater first), or None."""
        sched = self.settings.schedule
        tf = series.timeframe
        members = self.members(series)
        lasts = [t for t in [await self.store.last_open_time(s) for s in members] if t is not None]
        last = max(lasts, default=None)
        if last is None or await self.leases.holder(series, "train") is not None:
            return None
        newest = tf.floor_index(last)
        state = await self.tlog.state(series)
        attempted = state.get("index")
        since_attempt = None if attempted is None else newest - int(attempted)
        try:
            rec = await self.registry.current(series, with_artifact=False)
        except ModelIntegrityError:
            rec = None
        if rec is None:
            counts = [await self.store.count(s) for s in members]
            if max(counts, default=0) < sched.min_train_candles:
                return None
            if since_attempt is None or since_attempt >= sched.retrain_every:
                return "no model", (2, math.inf if since_attempt is None else since_attempt)
            return None
        age = rec.meta.age_at(last, tf)
        if since_attempt is None:  # a model promoted by hand or restored: count from its data
            since_attempt = age
        if rec.meta.expired(last, tf, sched.max_model_age) and since_attempt >= 1:
            return f"model expired ({age} candles old)", (1, age)
        if since_attempt >= sched.retrain_every:
            return f"{since_attempt} candles since last training", (0, since_attempt)
        return None

    async def launch(self, series: SeriesId, reason: str) -> None:
        args = [sys.executable, "-m", "forecaster.training.job", "--series", series.key]
        if self.config_file:
            args += ["--config", self.config_file]
        series_logger(series, __name__).info("training.launch", reason=reason)
        # The child inherits the environment, so it sees the same CRYPTOCAST_* settings.
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
        self.proc = await asyncio.create_subprocess_exec(*args, env=env)
        self.training = series
        self._watch = asyncio.create_task(self._wait(series, self.proc))

    async def _wait(self, series: SeriesId, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        outcome = {0: "trained", 1: "failed", 3: "skipped"}.get(code, f"exit {code}")
        TRAININGS.labels(series.key, outcome).inc()
        # The run happened in the child: its own record of how long it took is the duration.
        with contextlib.suppress(Exception):
            duration = (await self.tlog.state(series)).get("duration_s")
            if code == 0 and duration is not None:
                TRAINING_SECONDS.labels(series.key).set(float(duration))
        self.runs.append((series.key, code))
        if code not in (0, 3):
            series_logger(series, __name__).warning("training.process_failed", exit_code=code)
        self.training = None
