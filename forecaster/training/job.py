"""One training run of one model, in its own process: ``python -m forecaster.training.job``.

The model is a series' own (``--series binance:BTC/USDT:1m``) or the global model of a timeframe
(``--series global:ALL:1m``, :func:`core.series.global_model_id`), trained on every configured
series of that timeframe (:mod:`forecaster.training.pooled`).

Training is CPU-heavy and must never delay serving (docs/architecture.md, decision 3), so the
service starts this module as a child process with TensorFlow's threads bounded
(``CRYPTOCAST_MODEL__THREADS``). The run holds the series' ``train`` lease (renewed while it trains;
a killed run's lease simply expires; a run that loses it, or gets SIGTERM, stops within a batch,
storing nothing), reads the most recent candles, trains (warm-started from the current model when
the architecture matches), stores the artifact as a new immutable version and
promotes it only by the rules of decision 2. The registry write is one atomic step, so a run killed
at any moment leaves either a complete version or nothing.

Exit codes: 0 trained (promoted or not), 1 failed, 3 skipped (lease busy, not enough data).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import threading
import time
import uuid

import structlog

from config.logging import configure_logging, series_logger
from config.settings import Settings, load_settings
from core.clock import shared_clock
from core.lifecycle import cancel_and_wait, on_signals
from core.model_meta import ModelMeta
from core.schemas import Candle
from core.series import SeriesId
from storage.candles import CandleStore
from storage.client import connect
from storage.facade import Storage
from storage.leases import Leases
from storage.registry import ModelIntegrityError

LEASE_TTL_MS = 60_000
EXIT_OK, EXIT_FAILED, EXIT_SKIPPED = 0, 1, 3

log = structlog.get_logger(__name__)


async def train_series(
    settings: Settings,
    series: SeriesId,
    *,
    force_cold: bool = False,
    stop: threading.Event | None = None,
    lease_ttl_ms: int = LEASE_TTL_MS,
) -> int:
    """Train ``series`` once; returns an exit code (see the module docstring). The fit ends early,
    storing nothing, when ``stop`` is set or the ``train`` lease is lost."""
    from forecaster.data import CandleArrays  # noqa: PLC0415 (TensorFlow loads after the lease is held)
    from forecaster.inference import ArtifactError, LoadedModel  # noqa: PLC0415 (TensorFlow loads after the lease is held)
    from forecaster.training.model import configure_tensorflow  # noqa: PLC0415 (TensorFlow loads after the lease is held)
    from forecaster.training.pooled import train_global  # noqa: PLC0415 (TensorFlow loads after the lease is held)
    from forecaster.training.promotion import decide_promotion  # noqa: PLC0415 (TensorFlow loads after the lease is held)
    from forecaster.training.train import TrainingStopped, train  # noqa: PLC0415 (TensorFlow loads after the lease is held)

    slog = series_logger(series, __name__)
    # Everything this process logs (the training module included) is about this series.
    structlog.contextvars.bind_contextvars(**series.log_fields(), series=series.key)
    configure_tensorflow(settings.model.threads)
    redis = await connect(settings)
    storage = Storage.from_settings(redis, settings)
    clock = await shared_clock(redis, storage.keys.clock(), settings.clock)
    store, registry, leases, tlog = (
        storage.candles,
        storage.registry,
        storage.leases,
        storage.training_log,
    )
    owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    if not await leases.acquire(series, "train", owner, lease_ttl_ms):
        slog.info("training.skipped", reason="another training of this series is running")
        await redis.aclose()
        return EXIT_SKIPPED
    stop = threading.Event() if stop is None else stop
    renew = asyncio.create_task(_renew(leases, series, owner, stop, lease_ttl_ms))
    started = time.time()
    try:
        by_series = await training_candles(store, settings, series)
        last_open = max((c[-1].open_time for c in by_series.values() if c), default=None)
        newest = None if last_open is None else series.timeframe.floor_index(last_open)
        await tlog.record(
            series, started_at=int(started * 1000), index=newest, outcome="running", owner=owner
        )
        by_series = {
            k: c for k, c in by_series.items() if len(c) >= settings.schedule.min_train_candles
        }
        if not by_series:
            slog.info("training.skipped", reason="not enough candles")
            await tlog.record(series, outcome="not_enough_data", finished_at=_ms())
            return EXIT_SKIPPED
        current: LoadedModel | None = None
        current_meta: ModelMeta | None = None
        try:
            rec = await registry.current(series)
            if rec is not None:
                current_meta = rec.meta
                current = await asyncio.to_thread(LoadedModel.from_artifact, rec.artifact, rec.meta)
        except (ModelIntegrityError, ArtifactError) as e:
            slog.error("training.current_model_refused", error=str(e)[:300])
        tf = series.timeframe
        arrays = {k: CandleArrays.from_candles(c, tf) for k, c in by_series.items()}
        n_candles = sum(len(c) for c in by_series.values())
        slog.info(
            "training.started",
            candles=n_candles,
            series_count=len(arrays),
            warm=current is not None,
        )
        if series.is_global:
            result = await asyncio.to_thread(
                train_global,
                arrays,
                settings.model,
                current=current,
                warm_start=not force_cold,
                stop=stop,
            )
        else:
            result = await asyncio.to_thread(
                train,
                arrays[series.key],
                settings.model,
                current=current,
                warm_start=not force_cold,
                series_context=series.log_fields(),
                stop=stop,
            )
        assert last_open is not None
        expired = current_meta is not None and current_meta.expired(
            last_open, tf, settings.schedule.max_model_age
        )
        decision = decide_promotion(result.typed_meta, current_meta, expired)
        meta = {
            **result.meta,
            "trained_at": clock.now_ms(),
            "promotion": {
                "promote": decision.promote,
                "reason": decision.reason,
                "current_expired": expired,
            },
        }
        record = await registry.put(series, result.artifact, meta, npz=result.npz)
        if decision.promote:
            await registry.promote(series, record)
        await registry.prune(series, keep=settings.schedule.keep_versions)
        await tlog.record(
            series,
            outcome="promoted" if decision.promote else "kept_current",
            version=record.version,
            reason=decision.reason,
            finished_at=_ms(),
            duration_s=round(time.time() - started, 2),
            skill=result.typed_meta.skill,
        )
        slog.info(
            "training.finished",
            version=record.version,
            promoted=decision.promote,
            reason=decision.reason,
            skill=result.typed_meta.skill,
            duration_s=round(time.time() - started, 2),
        )
        return EXIT_OK
    except TrainingStopped:
        # Not recorded in the training log: a new holder of the lease may be writing there.
        slog.warning("training.stopped", duration_s=round(time.time() - started, 2))
        return EXIT_FAILED
    except Exception as e:
        slog.exception("training.failed", error=str(e)[:500])
        with contextlib.suppress(Exception):
            await tlog.record(series, outcome="failed", error=str(e)[:500], finished_at=_ms())
        return EXIT_FAILED
    finally:
        await cancel_and_wait(renew)
        with contextlib.suppress(Exception):
            await leases.release(series, "train", owner)
        await redis.aclose()


async def training_candles(
    store: CandleStore, settings: Settings, subject: SeriesId
) -> dict[str, list[Candle]]:
    """The candles one training of ``subject`` reads, per series: the series' newest
    ``train_candles``, or for a global model each configured series of its timeframe's share
    (:func:`forecaster.training.pooled.candles_per_series`)."""
    from forecaster.training.pooled import candles_per_series  # noqa: PLC0415 (TensorFlow loads after the lease is held)

    if not subject.is_global:
        return {subject.key: await store.last(subject, settings.model.train_candles)}
    members = [s for s in settings.series_ids if s.timeframe == subject.timeframe]
    n = candles_per_series(settings.model, len(members), settings.schedule.min_train_candles)
    return {s.key: await store.last(s, n) for s in members}


async def _renew(
    leases: Leases, series: SeriesId, owner: str, stop: threading.Event, ttl_ms: int
) -> None:
    """Renew the ``train`` lease until cancelled; once lost (expired or taken), ``stop``."""
    while True:
        await asyncio.sleep(ttl_ms / 3000)
        if not await leases.renew(series, "train", owner, ttl_ms):
            holder = await leases.holder(series, "train")
            series_logger(series, __name__).warning("training.lease_lost", holder=holder)
            stop.set()
            return


def _ms() -> int:
    return time.time_ns() // 1_000_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forecaster.training.job", description=__doc__)
    parser.add_argument("--series", required=True)
    parser.add_argument("--config", default=None)
    parser.add_argument("--cold", action="store_true", help="do not warm-start")
    args = parser.parse_args(argv)
    settings = load_settings(args.config)
    configure_logging(settings.log_format, settings.log_level)
    # Training is batch work beside latency-critical serving on the same cores.
    os.nice(settings.model.nice)
    return asyncio.run(_main(settings, SeriesId.parse(args.series), args.cold))


async def _main(settings: Settings, series: SeriesId, cold: bool) -> int:
    """Run the training; SIGTERM stops the fit and cancels the run so the lease is released on
    the way out (the fit's thread must end too: the interpreter waits for it)."""
    stop = threading.Event()
    task = asyncio.create_task(train_series(settings, series, force_cold=cold, stop=stop))

    def terminate() -> None:
        stop.set()
        task.cancel()

    try:
        with on_signals(terminate, (signal.SIGTERM,)):
            return await task
    except asyncio.CancelledError:
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
