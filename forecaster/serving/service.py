"""The forecaster service: serve the series this replica holds, retrain them on schedule.

Replicas split the configured series by lease (docs/architecture.md, decision 4): every
``lease_ttl_s / 3`` a replica heartbeats, renews the ``serve`` leases it holds, gives back those
beyond its fair share (series / live replicas, rounded up) and takes free ones below it; it runs one
:class:`~forecaster.serving.worker.SeriesWorker` per series held and stops a worker whose lease it
lost. A replica that dies stops renewing; after the TTL another takes its series and reclaims its
pending events. Lifecycle: :meth:`start`, :meth:`run` until :meth:`stop` (SIGTERM), then the workers
are cancelled, leases released and a training in flight stopped: no orphan tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid

import structlog
from redis.exceptions import RedisError

from config.settings import Settings
from core.clock import ClockSync, ExchangeClock, WallClock
from core.lifecycle import Service, cancel_all, cancel_and_wait
from core.series import SeriesId
from forecaster.serving.paths import PathRefresher
from forecaster.serving.prom import EVENTS_PENDING, LIVE_MAE, LIVE_MASE, SERIES_HELD
from forecaster.serving.scheduler import TrainingScheduler
from forecaster.serving.worker import SeriesWorker, ServingContext
from storage.facade import Storage

log = structlog.get_logger(__name__)


class ForecastService(Service):
    """One forecaster replica."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        *,
        config_file: str | None = None,
        train: bool = True,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.store = storage.candles
        self.replica = settings.forecast.replica_id or (
            f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        )
        self.clock = ExchangeClock() if settings.clock == "exchange" else WallClock()
        self.ctx = ServingContext(
            settings=settings,
            storage=storage,
            clock=self.clock,
            consumer=self.replica,
            paths=PathRefresher(storage.paths, settings.forecast.path_steps),
        )
        self.leases = storage.leases
        self.replicas = storage.replicas
        self.workers: dict[SeriesId, tuple[SeriesWorker, asyncio.Task[None]]] = {}
        self.scheduler = (
            TrainingScheduler(
                settings, storage, lambda: list(self.workers), config_file=config_file
            )
            if train
            else None
        )
        self._stopped = asyncio.Event()
        self._closed = False
        self.ready = asyncio.Event()

    async def start(self) -> None:
        await self._refresh_clock()
        if self.scheduler is not None:
            self.scheduler.start()

    async def run(self) -> None:
        """Serve until :meth:`stop`."""
        log.info(
            "forecast.started",
            replica=self.replica,
            series=[s.key for s in self.settings.series_ids],
        )
        try:
            async with asyncio.TaskGroup() as tg:
                loops = [
                    tg.create_task(self._lease_loop(), name="leases"),
                    tg.create_task(self._housekeeping(), name="housekeeping"),
                ]
                await self._stopped.wait()
                for t in loops:
                    await cancel_and_wait(t)
        finally:
            await self.close()

    def stop(self) -> None:
        self._stopped.set()

    async def close(self) -> None:
        """Stop the scheduler and every worker, give the leases back (once)."""
        if self._closed:
            return
        self._closed = True
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.ctx.fanin is not None:
            await self.ctx.fanin.close()  # first: no read restarts as each worker leaves
        held = list(self.workers)
        await self._stop_workers(held)
        for series in held:
            with contextlib.suppress(RedisError, OSError):
                await self.leases.release(series, "serve", self.replica)
        if self.ctx.models is not None:
            await self.ctx.models.close()
        if self.ctx.paths is not None:
            await self.ctx.paths.close()
        with contextlib.suppress(RedisError, OSError):
            await self.replicas.leave(self.replica)
        log.info("forecast.stopped", replica=self.replica)

    async def _lease_loop(self) -> None:
        ttl_ms = int(self.settings.forecast.lease_ttl_s * 1000)
        all_series = self.settings.series_ids
        while True:
            try:
                now = int(time.time() * 1000)
                await self.replicas.heartbeat(self.replica, now)
                live = max(1, await self.replicas.live(now, ttl_ms))
                await self._balance(all_series, -(-len(all_series) // live), ttl_ms)
            except (RedisError, OSError) as e:
                # keep serving what we hold until the TTL says otherwise
                log.warning("lease.redis_unavailable", error=str(e).splitlines()[0][:200])
            SERIES_HELD.set(len(self.workers))
            self.ready.set()
            await asyncio.sleep(self.settings.forecast.lease_ttl_s / 3)

    async def _balance(self, all_series: list[SeriesId], share: int, ttl_ms: int) -> None:
        """Renew what we hold, give back what exceeds our fair ``share`` (so a newcomer gets
        work), take free series while under it. A worker stops before its lease is released,
        so two replicas never serve one series; the next holder reclaims pending events."""
        gone: list[SeriesId] = []
        for series in list(self.workers):
            _worker, task = self.workers[series]
            if task.done():  # crashed (e.g. Redis gone): restart below if still ours
                gone.append(series)
            elif not await self.leases.renew(series, "serve", self.replica, ttl_ms):
                log.warning("lease.lost", replica=self.replica, **series.log_fields())
                gone.append(series)
        await self._stop_workers(gone)
        surplus = list(self.workers)[share:]
        # Stopped together, then released: giving back half of a thousand series one by one
        # took longer than the leases' TTL.
        await self._stop_workers(surplus)
        for series in surplus:
            await self.leases.release(series, "serve", self.replica)
            log.info("lease.released", replica=self.replica, share=share, **series.log_fields())
        for series in all_series:
            if len(self.workers) >= share:
                break
            if series not in self.workers and await self.leases.acquire(
                series, "serve", self.replica, ttl_ms
            ):
                self._start_worker(series)

    def _start_worker(self, series: SeriesId) -> None:
        worker = SeriesWorker(self.ctx, series)
        task = asyncio.create_task(self._run_worker(worker), name=f"serve:{series.key}")
        self.workers[series] = (worker, task)
        log.info("lease.acquired", replica=self.replica, **series.log_fields())

    async def _run_worker(self, worker: SeriesWorker) -> None:
        try:
            await worker.run()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the lease loop restarts it on its next tick
            worker.log.warning("worker.failed", error=str(e).splitlines()[0][:300])
            await asyncio.sleep(1.0)

    async def _stop_workers(self, series: list[SeriesId]) -> None:
        """Stop the workers of ``series`` together; each has ended before its lease goes (never
        two servers of one series)."""
        await cancel_all(*(self.workers.pop(s)[1] for s in series))

    async def _housekeeping(self) -> None:
        """Clock re-sync, pending-event and live-score gauges."""
        while True:
            await asyncio.sleep(2.0)
            with contextlib.suppress(RedisError, OSError):
                await self._refresh_clock()
                for series, (worker, _task) in list(self.workers.items()):
                    EVENTS_PENDING.labels(series.key).set(
                        await self.ctx.events.pending_count(series)
                    )
                    figures = worker.scorer.figures()
                    if figures.get("mae") is not None:
                        LIVE_MAE.labels(series.key).set(figures["mae"])
                    if figures.get("mase") is not None:
                        LIVE_MASE.labels(series.key).set(figures["mase"])

    async def _refresh_clock(self) -> None:
        if isinstance(self.clock, ExchangeClock):
            raw = await self.store.redis.get(self.store.keys.clock())
            if raw:
                self.clock.update(ClockSync.from_json(raw))
