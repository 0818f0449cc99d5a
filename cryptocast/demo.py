"""The machinery of ``cryptocast demo`` (command in :mod:`cryptocast.demo_cmd`): the whole
system, offline, in one command.

A private ``redis-server``, the local replay exchange serving real Binance 1m candles shipped in
``cryptocast/data`` (two markets, 1,000 candles of history behind the replay's "now", then live
at ``--speed`` × real time), the real ``cryptocast ingest`` and ``cryptocast forecast`` services
as child processes, a small-but-real model profile (one LSTM layer of 16 units over 30 candles)
trained and retrained by the forecaster as it would in production. Predictions are printed as
they are published; at the end the demo prints the live score against the naive forecast and
the ``status`` table, and writes a PNG of predictions vs what actually happened.

Everything lives under ``<data_dir>/demo`` (``var/demo``): the plot, the services' JSON logs and
the Redis data, wiped at the next demo run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from rich.console import Console

from config.settings import ENV_PREFIX, load_settings
from core.clock import shared_clock
from core.lifecycle import cancel_all, on_signals
from core.schemas import Prediction
from core.series import SeriesId
from cryptocast.demo_narration import Narrator
from cryptocast.demo_report import SeriesSummary, plot_predictions, print_summary, summarise
from cryptocast.instance import Instance, announced
from cryptocast.procs import ChildService, stop_all
from cryptocast.redis_server import RedisServer
from cryptocast.views import print_status
from replay import FaultConfig, ReplayConfig, ReplayExchange, ReplaySource
from storage.client import Redis, connect
from storage.facade import Storage
from storage.health import series_health
from storage.keys import Keys

log = structlog.get_logger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
# Futures candles relabelled as spot series: the replay exchange speaks Binance's spot protocol.
DEMO_MARKETS = {
    "LINK/USDT": DATA_DIR / "linkusdt_binance_futures_1m_2026-02_head2400.csv",
    "LTC/USDT": DATA_DIR / "ltcusdt_binance_futures_1m_2026-02_head2400.csv",
}
HISTORY_CANDLES = 1000

# Small but real: trains in ~5 s on one core; retrains every 90 candles while serving.
DEMO_PROFILE = {
    "CRYPTOCAST_MODEL__UNITS": "16",
    "CRYPTOCAST_MODEL__LAYERS": "1",
    "CRYPTOCAST_MODEL__WINDOW": "30",
    "CRYPTOCAST_MODEL__EPOCHS": "8",
    "CRYPTOCAST_MODEL__PATIENCE": "3",
    "CRYPTOCAST_MODEL__BATCH_SIZE": "64",
    "CRYPTOCAST_MODEL__TRAIN_CANDLES": "1200",
    "CRYPTOCAST_SCHEDULE__MIN_TRAIN_CANDLES": "600",
    "CRYPTOCAST_SCHEDULE__RETRAIN_EVERY": "90",
    "CRYPTOCAST_SCHEDULE__CHECK_INTERVAL_S": "1",
    # At 60× a candle closes every second: judge staleness in candles generously, so a
    # prediction delayed by a busy CPU is still served rather than skipped.
    "CRYPTOCAST_SCHEDULE__STALE_AFTER": "30",
}


@dataclass
class DemoOptions:
    """How the demo runs; the defaults make the command take about three minutes."""

    out_dir: Path
    speed: float = 60.0
    predictions: int = 120
    timeout_s: float = 420.0
    metrics_port: int = 0
    profile: dict[str, str] = field(default_factory=lambda: dict(DEMO_PROFILE))
    faults: FaultConfig = field(default_factory=FaultConfig)
    history: int = HISTORY_CANDLES
    # Where `status`/`watch`/`web` of a second terminal look for us (cryptocast.instance).
    announce_dir: Path | None = None

    @property
    def series(self) -> list[SeriesId]:
        return [SeriesId.parse(f"binance:{m}:1m") for m in DEMO_MARKETS]

    @property
    def scope(self) -> str:
        """Whose models the demo's forecaster trains (``model.scope``, default global)."""
        return self.profile.get("CRYPTOCAST_MODEL__SCOPE", "global")


@dataclass
class DemoResult:
    """What a demo run ended with."""

    summaries: list[SeriesSummary]
    png: Path | None
    codes: dict[str, int]
    interrupted: bool  # Ctrl-C or SIGTERM before the planned number of predictions


class Demo:
    """The demo's processes and Redis: :meth:`start`, then :meth:`collect`, then :meth:`stop`."""

    def __init__(self, opts: DemoOptions, console: Console) -> None:
        self.opts = opts
        self.console = console
        self.series = opts.series
        self.keys = Keys()
        self.server: RedisServer | None = None
        self.exchange: ReplayExchange | None = None
        self.redis: Redis | None = None
        self.storage: Storage | None = None
        self.services: list[ChildService] = []
        self.env: dict[str, str] = {}
        self.received: dict[str, list[Prediction]] = {s.key: [] for s in self.series}
        self.narrator = Narrator(console)

    @property
    def redis_url(self) -> str:
        assert self.server is not None
        return f"redis://127.0.0.1:{self.server.port}/0"

    def instance(self) -> Instance:
        """How a second terminal's commands find this run."""
        return Instance(
            owner="demo",
            pid=os.getpid(),
            redis_url=self.redis_url,
            series=[s.key for s in self.series],
            clock="exchange",
            key_prefix=self.keys.prefix,
        )

    async def start(self) -> None:
        """Fresh Redis, the replay exchange, then the two services."""
        out = self.opts.out_dir
        for stale in ("redis", "logs"):
            shutil.rmtree(out / stale, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        self.server = RedisServer(out / "redis")
        await asyncio.to_thread(self.server.start)
        self.redis = await connect(load_settings(redis_url=self.redis_url))
        self.storage = Storage.build(self.redis, self.keys)
        self.exchange = ReplayExchange(
            ReplayConfig(
                sources=[ReplaySource(path, m, "1m") for m, path in DEMO_MARKETS.items()],
                speed=self.opts.speed,
                history_candles=self.opts.history,
                exchange_info_symbols="replayed",
                ping_interval=5.0,
                faults=self.opts.faults,
            )
        )
        await self.exchange.start()
        self.env = self.service_env()
        logs = out / "logs"
        for command in ("ingest", "forecast"):
            env = dict(self.env)
            if self.opts.metrics_port:
                port = self.opts.metrics_port + (command == "forecast")
                env[ENV_PREFIX + "METRICS_PORT"] = str(port)
            self.services.append(
                ChildService(command, env, log_path=logs / f"{command}.log").start()
            )

    def service_env(self) -> dict[str, str]:
        """What the services see: none of the caller's CRYPTOCAST_* settings, only the demo's."""
        assert self.exchange is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        env.update(
            {
                "CRYPTOCAST_REDIS_URL": self.redis_url,
                "CRYPTOCAST_SERIES": ",".join(s.key for s in self.series),
                "CRYPTOCAST_CLOCK": "exchange",
                "CRYPTOCAST_BINANCE_WS_URL": self.exchange.ws_url.removesuffix("/ws"),
                "CRYPTOCAST_BINANCE_REST_URL": self.exchange.rest_url,
                "CRYPTOCAST_LOG_FORMAT": "json",
                "CRYPTOCAST_DATA_DIR": str(self.opts.out_dir),
                "CRYPTOCAST_MODEL_CACHE_DIR": str(self.opts.out_dir / "models"),
                "TF_CPP_MIN_LOG_LEVEL": "3",
                **self.opts.profile,
            }
        )
        return env

    async def stop(self) -> dict[str, int]:
        """Stop the services (SIGTERM, in parallel), the exchange and Redis; exit codes."""
        codes = await asyncio.to_thread(stop_all, self.services)
        if self.exchange is not None:
            await self.exchange.stop()
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = self.storage = None
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)
        return codes

    # -- the live part ----------------------------------------------------------------------

    async def collect(
        self,
        on_prediction: Callable[[Prediction], None] | None = None,
        stop: asyncio.Event | None = None,
    ) -> bool:
        """Receive predictions until every series has ``opts.predictions`` (True), or the
        timeout, a dead service or ``stop`` (False). Narrates ingest and training meanwhile."""
        assert self.storage is not None
        bus = self.storage.predictions
        done = asyncio.Event()
        target = self.opts.predictions

        async def listen() -> None:
            async for p in bus.subscribe(self.series):
                self.received[p.series.key].append(p)
                if on_prediction is not None:
                    on_prediction(p)
                if all(len(v) >= target for v in self.received.values()):
                    done.set()

        async def watch_services() -> None:
            while all(s.poll() is None for s in self.services):  # noqa: ASYNC110 (a process)
                await asyncio.sleep(0.5)
            dead = next(s for s in self.services if s.poll() is not None)
            self.console.print(
                f"[red]the {dead.command} service exited ({dead.poll()}); its log:[/red]\n"
                + dead.tail()
            )

        tasks = [
            asyncio.create_task(listen(), name="demo-listen"),
            asyncio.create_task(
                self.narrator.follow(
                    self.storage,
                    self.series,
                    self.opts.history,
                    self.opts.speed,
                    self.opts.scope,
                ),
                name="demo-narrate",
            ),
            asyncio.create_task(watch_services(), name="demo-services"),
            asyncio.create_task(done.wait(), name="demo-done"),
        ]
        if stop is not None:
            tasks.append(asyncio.create_task(stop.wait(), name="demo-stop"))
        try:
            await asyncio.wait(tasks, timeout=self.opts.timeout_s, return_when="FIRST_COMPLETED")
        finally:
            await cancel_all(*tasks)
        return done.is_set()

    # -- the end ----------------------------------------------------------------------------

    async def results(self) -> tuple[dict[str, list[Prediction]], dict[str, dict[int, float]]]:
        """Every published prediction (from the streams: the channel is only for speed) and the
        actual closes of the candles they predicted."""
        assert self.storage is not None
        bus, store = self.storage.predictions, self.storage.candles
        preds: dict[str, list[Prediction]] = {}
        closes: dict[str, dict[int, float]] = {}
        for s in self.series:
            preds[s.key] = await bus.since(s, None, count=100_000)
            if preds[s.key]:
                first = preds[s.key][0].as_of - 60 * s.timeframe.ms
                closes[s.key] = {c.open_time: c.close for c in await store.range(s, first, None)}
            else:
                closes[s.key] = {}
        return preds, closes

    async def status(self) -> list[dict[str, Any]]:
        """``cryptocast status --json``'s entries for the demo's series."""
        assert self.storage is not None
        clock = await shared_clock(self.storage.redis, self.keys.clock(), "exchange")
        stale_after = int(self.opts.profile.get("CRYPTOCAST_SCHEDULE__STALE_AFTER", "3"))
        return [
            await series_health(self.storage, s, clock, stale_after, scope=self.opts.scope)
            for s in self.series
        ]


async def run_demo(
    opts: DemoOptions,
    console: Console,
    during: Callable[[Demo], Awaitable[None]] | None = None,
) -> DemoResult:
    """The whole demo; ``during`` (tests) runs once predictions have arrived, before the stop.

    Interrupted (Ctrl-C, SIGTERM), it still prints what it saw so far."""
    demo = Demo(opts, console)
    say = demo.narrator.say
    stop = asyncio.Event()
    codes: dict[str, int] = {}
    png: Path | None = None
    report: list[dict[str, Any]] = []
    preds: dict[str, list[Prediction]] = {s.key: [] for s in opts.series}
    closes: dict[str, dict[int, float]] = {s.key: {} for s in opts.series}
    with on_signals(stop.set):
        try:
            console.print(
                f"[bold]cryptocast demo[/bold]: private Redis, replay exchange at {opts.speed:g}× "
                f"over real Binance 1m candles of {', '.join(DEMO_MARKETS)} (futures prices "
                f"replayed as the spot series {', '.join(s.key for s in opts.series)}), ingest, "
                f"training and live predictions. Logs: {opts.out_dir / 'logs'}. Ctrl-C stops early."
            )
            await demo.start()
            say(
                f"redis-server on 127.0.0.1:{demo.server.port if demo.server else '?'}, replay "
                f"exchange on {demo.exchange.rest_url if demo.exchange else '?'}, services started"
                + (
                    "; `cryptocast status` or `watch` in another terminal follow this run"
                    if opts.announce_dir is not None
                    else ""
                )
            )
            with contextlib.ExitStack() as announcement:
                if opts.announce_dir is not None:
                    announcement.enter_context(announced(opts.announce_dir, demo.instance()))
                complete = await demo.collect(demo.narrator.prediction, stop)
                if not complete:
                    say("[yellow]stopping before the planned number of predictions[/yellow]")
                if during is not None:
                    await during(demo)
                report = await demo.status()
                preds, closes = await demo.results()
        finally:
            codes = await demo.stop()
    summaries = [summarise(preds[k], closes[k], k) for k in preds]
    seconds = time.monotonic() - demo.narrator.started_at
    if report:
        print_status(report, console)
    print_summary(console, summaries, seconds)
    if any(s.scored for s in summaries):
        png = plot_predictions(preds, closes, summaries, opts.out_dir / "predictions.png")
        console.print(f"plot of predictions vs actual: [bold]{png}[/bold]")
    elif stop.is_set():
        console.print("[yellow]stopped before any prediction was scored: no plot[/yellow]")
    else:
        console.print("[red]no prediction arrived; see the service logs above[/red]")
    return DemoResult(summaries, png, codes, interrupted=stop.is_set())
