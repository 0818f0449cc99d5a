"""The end-to-end harness shared by the latency and replica benchmarks.

A :class:`Pipeline` runs real ``cryptocast forecast`` processes (one or more replicas sharing the
consumer group) serving N series of the seed architecture (LSTM 50 ×2, window 60) with one
model shared by every series (``scope="global"``) or one model per series (``scope="series"``),
a subscriber
in this process that timestamps each prediction's arrival, and the candle writer: every round,
every series gets its next real candle at the same instant (one pipelined Lua upsert per series,
as the ingest sink writes it, with its closed-candle event). The figure is the time from that
write (the candle's arrival at ingest) to the prediction's arrival at the subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from bench.common import emit_progress
from config.settings import ModelSettings, load_settings
from core.lifecycle import cancel_and_wait, with_timeout
from core.schemas import Candle
from core.series import SeriesId
from storage.candles import CandleStore
from storage.client import connect
from storage.facade import Storage
from storage.keys import Keys

HISTORY = 3000
# Loading a Keras model costs a fraction of a second; 100 series load 100 of them.
WARMUP_TIMEOUT_S = 300.0
ROUND_TIMEOUT_S = 120.0
RETRAIN_START_TIMEOUT_S = 60.0
RETRAIN_WINDOWS_S = 2.0  # from the train lease to the first epoch (40,000 candles' windows)


# The retrain that competes with serving trains this series (not served): the whole month is
# stored under it, so the training is one of a month of 1m candles, as in production.
TRAIN_SERIES = SeriesId.parse("binance:TRAIN/USDT:1m")


def series_names(n: int) -> list[SeriesId]:
    return [SeriesId.parse(f"binance:S{i:04d}/USDT:1m") for i in range(n)]


async def prepare(
    url: str, candles: list[Candle], n: int, scopes: tuple[str, ...] = ("global",)
) -> float:
    """History and the promoted models of N series, for each of ``scopes``: ``"global"``, one
    model under the timeframe's global id (what serving shares); ``"series"``, one per series
    (the same model stored once per series: serving cost does not depend on the weights'
    values). Each scope's serving ignores the other's models. The model is the default
    architecture trained for one epoch, once per process. Returns the seconds it took."""
    t0 = time.perf_counter()
    redis = await connect(load_settings(redis_url=url))
    await redis.flushall()
    storage = Storage.build(redis, Keys())
    store, registry = storage.candles, storage.registry
    tf = series_names(1)[0].timeframe
    artifact, npz, meta = _seed_model(candles)
    names = series_names(n)
    # 50 series a pipeline: 1,000 series' history in one (3 million candles) times out writing
    for i in range(0, n, 50):
        await store.upsert_many([(s, candles[:HISTORY]) for s in names[i : i + 50]])
    await store.upsert(TRAIN_SERIES, candles)
    subjects = names if "series" in scopes else []
    if "global" in scopes:
        from core.series import global_model_id

        subjects = [global_model_id(tf), *subjects]
    for s in subjects:
        await registry.promote(s, await registry.put(s, artifact, meta, npz=npz))
    await redis.aclose()
    return time.perf_counter() - t0


_SEED: dict[int, tuple[bytes, bytes, dict[str, Any]]] = {}


def _seed_model(candles: list[Candle]) -> tuple[bytes, bytes, dict[str, Any]]:
    """The default architecture trained for one epoch on the first HISTORY candles, its
    champion the LSTM (cached: every size and scope serves the same weights)."""
    from forecaster.data import CandleArrays
    from forecaster.training.train import train

    key = candles[0].open_time
    if key not in _SEED:
        settings = ModelSettings(epochs=1, train_candles=HISTORY)
        tf = series_names(1)[0].timeframe
        result = train(CandleArrays.from_candles(candles[:HISTORY], tf), settings)
        meta = {**result.meta, "trained_at": int(time.time() * 1000)}
        # Served as the LSTM whatever champion the one-epoch holdout chose (a GARCH, typically):
        # what is measured is the LSTM's forward pass, not an econometric filter's few flops.
        lstm = meta["holdout"]["candidate"]
        meta["champion"] = {
            **meta["champion"],
            "kind": "lstm",
            "crps": lstm["crps"],
            "calibrated_level": lstm["calibrated_level"],
        }
        _SEED[key] = result.artifact, result.npz, meta
    return _SEED[key]


def forecaster_env(
    url: str, n: int, inference: str, scope: str = "global", **extra: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOCAST_")}
    env.update(
        {
            "CRYPTOCAST_REDIS_URL": url,
            "CRYPTOCAST_SERIES": ",".join(s.key for s in series_names(n)),
            "CRYPTOCAST_SCHEDULE__RETRAIN_EVERY": "100000000",
            "CRYPTOCAST_SCHEDULE__MAX_MODEL_AGE": "100000000",
            "CRYPTOCAST_SCHEDULE__STALE_AFTER": "100000000",
            "CRYPTOCAST_FORECAST__INFERENCE": inference,
            "CRYPTOCAST_MODEL__SCOPE": scope,
            "CRYPTOCAST_LOG_FORMAT": "json",
            "CRYPTOCAST_LOG_LEVEL": "WARNING",
            "TF_CPP_MIN_LOG_LEVEL": "3",
            **extra,
        }
    )
    return env


def rss_mb(pid: int) -> float:
    """Resident set size of a process now, from /proc (Linux)."""
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return round(int(row.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for pid {pid}")


def percentiles(latencies: list[float]) -> dict[str, Any]:
    xs = sorted(latencies)
    return {
        "p50_ms": round(statistics.median(xs), 2),
        "p99_ms": round(xs[min(len(xs) - 1, int(len(xs) * 0.99))], 2),
        "max_ms": round(xs[-1], 2),
        "n": len(xs),
    }


class Pipeline:
    """Forecaster replicas + subscriber + candle writer on one Redis (see the module doc)."""

    def __init__(
        self,
        url: str,
        candles: list[Candle],
        n: int,
        inference: str,
        start: int,
        logs: Path,
        scope: str = "global",
    ) -> None:
        self.url, self.candles, self.n, self.inference = url, candles, n, inference
        self.scope = scope
        self.tag = f"{n}-{scope}-{inference}"
        self.spawned: dict[str, float] = {}
        self.startup: dict[str, float] = {}
        self.index = start
        self.logs = logs
        self.series = series_names(n)
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.trainer: asyncio.subprocess.Process | None = None
        self.received: dict[tuple[str, int], float] = {}
        self.published: dict[tuple[str, int], float] = {}  # latency_ms of each message
        # the round's predictions not arrived yet; ``arrived`` is set when the last one does
        self.waiting: set[tuple[str, int]] = set()
        self.arrived = asyncio.Event()
        self.keys = Keys()

    async def __aenter__(self) -> Pipeline:
        self.redis = await connect(load_settings(redis_url=self.url))
        self.store = CandleStore(self.redis, self.keys)
        self.pubsub = self.redis.pubsub()
        await self.pubsub.subscribe(*(self.keys.predictions(s) for s in self.series))
        self.listener = asyncio.create_task(self._listen())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_and_wait(self.listener)
        await self.pubsub.aclose()
        if self.trainer is not None and self.trainer.returncode is None:
            self.trainer.kill()
            await self.trainer.wait()
        for p in self.procs.values():
            if p.returncode is None:
                p.terminate()
                await with_timeout(p.wait(), 60)
        await self.redis.aclose()

    async def _listen(self) -> None:
        async for msg in self.pubsub.listen():
            if msg["type"] == "message":
                t = time.time()
                as_of = int(msg["data"].split(b'"as_of":', 1)[1].split(b",", 1)[0])
                key = (msg["channel"].decode(), as_of)
                self.received[key] = t
                # the forecaster's own figure: candle written -> prediction published
                self.published[key] = float(
                    msg["data"].split(b'"latency_ms":', 1)[1].split(b",", 1)[0]
                )
                if key in self.waiting:
                    self.waiting.discard(key)
                    if not self.waiting:
                        self.arrived.set()

    async def start_replica(self, replica: str, **extra: str) -> None:
        log = self.logs / f"forecast-{self.tag}-{replica}.log"
        env = forecaster_env(
            self.url,
            self.n,
            self.inference,
            self.scope,
            CRYPTOCAST_FORECAST__REPLICA_ID=replica,
            **extra,
        )
        self.spawned[replica] = time.time()
        self.procs[replica] = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cryptocast",
            "forecast",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log.open("wb"),
        )

    def _tails(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-2000:] for p in self.logs.glob("*.log"))

    async def round_trip(self, timeout_s: float = ROUND_TIMEOUT_S) -> list[float]:
        """One candle for every series at once; the latency of each prediction (ms)."""
        c = self.candles[self.index]
        self.index += 1
        keys = [(self.keys.predictions(s), c.open_time) for s in self.series]
        # waited on as an event, not polled: at 1,000 series polling would take CPU from the
        # forecaster on the same cores
        self.waiting = set(keys)
        self.arrived.clear()
        sent = time.time()
        # all series' candles close at the same instant: one write, as the ingest sink does
        await self.store.upsert_many(
            [(s, [c]) for s in self.series], emit_events=True, arrived_ms=int(sent * 1000)
        )
        deadline = time.monotonic() + timeout_s
        while not self.arrived.is_set():
            if time.monotonic() > deadline or any(
                p.returncode is not None for p in self.procs.values()
            ):
                raise RuntimeError(f"predictions did not arrive:\n{self._tails()}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await self.arrived.wait()
        return [(self.received[k] - sent) * 1000 for k in keys]

    async def warm_up(self) -> float:
        """Two unrecorded rounds (leases taken, every model loaded); returns the seconds.

        The first round's candle is written as soon as this is called: right after a replica's
        spawn, its predictions' arrival is that replica's start-up (:attr:`startup`: seconds
        from the process's spawn to the first prediction, and to the last series' first one).
        """
        t0 = time.perf_counter()
        first = self.candles[self.index].open_time
        await self.round_trip(WARMUP_TIMEOUT_S)
        arrivals = [self.received[(self.keys.predictions(s), first)] for s in self.series]
        if len(self.spawned) == 1:
            spawn = next(iter(self.spawned.values()))
            self.startup = {
                "first_s": round(min(arrivals) - spawn, 2),
                "all_s": round(max(arrivals) - spawn, 2),
            }
        await self.round_trip(WARMUP_TIMEOUT_S)
        return time.perf_counter() - t0

    async def measure(self, rounds: int, name: str) -> dict[str, Any]:
        latencies: list[float] = []
        published: list[float] = []
        for _ in range(rounds):
            latencies += await self.round_trip()
            c = self.candles[self.index - 1]
            published += [
                self.published[(self.keys.predictions(s), c.open_time)] for s in self.series
            ]
            if self.trainer is not None and self.trainer.returncode is not None:
                raise RuntimeError(f"the training ended before the measurement:\n{self._tails()}")
            await asyncio.sleep(0.02)
        figures = percentiles(latencies)
        # Up to the publication only (the message's latency_ms): the rest is Redis delivering
        # and this process, the subscriber, reading the messages.
        figures["published"] = percentiles(published)
        emit_progress(f"{name}: {figures}")
        return figures

    async def start_retrain(self) -> None:
        """A real training process (the default model on 40,000 of a month's 1m candles, niced
        as the service runs it), into its epochs before this returns."""
        self.trainer = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "forecaster.training.job",
            "--series",
            TRAIN_SERIES.key,
            "--cold",
            # the same competing load in both scopes: one series' model on a month of candles
            env=forecaster_env(
                self.url,
                self.n,
                self.inference,
                "series",
                CRYPTOCAST_MODEL__TRAIN_CANDLES="40000",
                CRYPTOCAST_MODEL__EPOCHS="50",
            ),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=(self.logs / f"trainer-{self.tag}.log").open("wb"),
        )
        # The job imports TensorFlow, then takes the train lease, reads the candles and fits:
        # the lease held, it is a second or two (the windows built) from its epochs.
        lease = self.keys.lease(TRAIN_SERIES, "train")
        deadline = time.monotonic() + RETRAIN_START_TIMEOUT_S
        while not await self.redis.exists(lease):
            if self.trainer.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the concurrent training failed:\n{self._tails()}")
            await asyncio.sleep(0.1)
        await asyncio.sleep(RETRAIN_WINDOWS_S)
        if self.trainer.returncode is not None:
            raise RuntimeError(f"the concurrent training failed:\n{self._tails()}")

    async def stop_retrain(self) -> None:
        # Killed, not asked: a training stops on SIGTERM only between epochs (tens of seconds
        # on a month of candles). Its train lease would outlive it: removed for the next run.
        if self.trainer is not None and self.trainer.returncode is None:
            self.trainer.kill()
            await self.trainer.wait()
        self.trainer = None
        await self.redis.delete(self.keys.lease(TRAIN_SERIES, "train"))

    async def holders(self) -> dict[str, int]:
        """How many series each replica holds the serve lease of."""
        out: dict[str, int] = {}
        for s in self.series:
            who = (await self.redis.get(self.keys.lease(s, "serve")) or b"").decode()
            out[who] = out.get(who, 0) + 1
        return out

    def warnings(self) -> dict[str, int]:
        """Warning and error events the replicas logged (a lost lease, a failed worker...):
        reported beside the figures, since any of them shows in the tail latencies."""
        counts: Counter[str] = Counter()
        for path in self.logs.glob(f"forecast-{self.tag}-*.log"):
            for line in path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError, AttributeError):
                    counts[orjson.loads(line).get("event", "?")] += 1
        return dict(counts)

    def rss(self) -> dict[str, float]:
        return {name: rss_mb(p.pid) for name, p in self.procs.items()}
