"""Running the real services as subprocesses against the replay exchange, for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from cryptocast.redis_server import free_port
from replay import FaultConfig, ReplayConfig, ReplayExchange, ReplaySource
from tests.market_data import market_file

T = TypeVar("T")

FILES = {
    "LINK/USDT": "linkusdt_binance_futures_1m_2026-02.csv",
    "LTC/USDT": "ltcusdt_binance_futures_1m_2026-02.csv",
    "AVAX/USDT": "avaxusdt_binance_futures_1m_2026-02.csv",
    "NEAR/USDT": "nearusdt_binance_futures_1m_2026-02.csv",
}

# Small enough to train in a few seconds on two cores; the real sizes are for benchmarks.
TINY_MODEL = {
    "CRYPTOCAST_MODEL__UNITS": "4",
    "CRYPTOCAST_MODEL__WINDOW": "16",
    "CRYPTOCAST_MODEL__EPOCHS": "2",
    "CRYPTOCAST_MODEL__BATCH_SIZE": "128",
    "CRYPTOCAST_MODEL__TRAIN_CANDLES": "800",
    "CRYPTOCAST_SCHEDULE__MIN_TRAIN_CANDLES": "300",
    "CRYPTOCAST_SCHEDULE__CHECK_INTERVAL_S": "0.5",
}


def free_port_pair(offset: int) -> int:
    """A free port N with N + ``offset`` free too, for a second listener derived from N."""
    for _ in range(200):
        port = free_port()
        if port + offset > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + offset))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port N with N + {offset} free too")


def slice_csv(symbol: str, rows: int, dest: Path) -> Path:
    """The first ``rows`` rows of a real 1m file (futures candles: tests relabel them as the
    spot series ``binance:<symbol>:1m`` because the replay exchange speaks the spot protocol)."""
    lines = market_file(FILES[symbol]).read_text().splitlines(keepends=True)
    out = dest / f"{symbol.replace('/', '').lower()}_1m.csv"
    out.write_text("".join(lines[: rows + 1]))
    return out


async def start_replay(
    symbols: list[str],
    rows: int,
    dest: Path,
    *,
    speed: float,
    history: int = 1000,
    faults: FaultConfig | None = None,
    updates_per_candle: int = 3,
) -> ReplayExchange:
    config = ReplayConfig(
        sources=[ReplaySource(slice_csv(s, rows, dest), s, "1m") for s in symbols],
        speed=speed,
        history_candles=history,
        ping_interval=5.0,
        faults=faults or FaultConfig(),
        updates_per_candle=updates_per_candle,
    )
    exchange = ReplayExchange(config)
    await exchange.start()
    return exchange


def service_env(
    redis_url: str,
    exchange: ReplayExchange,
    series: list[str],
    *,
    retrain_every: int | None = None,
    stale_after: int | None = None,
    **extra: str,
) -> dict[str, str]:
    """The environment of a service over ``exchange`` with a tiny model; ``retrain_every`` and
    ``stale_after`` (candles) set the schedule, ``extra`` any other variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOCAST_")}
    if retrain_every is not None:
        extra["CRYPTOCAST_SCHEDULE__RETRAIN_EVERY"] = str(retrain_every)
    if stale_after is not None:
        extra["CRYPTOCAST_SCHEDULE__STALE_AFTER"] = str(stale_after)
    env.update(
        {
            "CRYPTOCAST_REDIS_URL": redis_url,
            "CRYPTOCAST_SERIES": ",".join(series),
            "CRYPTOCAST_CLOCK": "exchange",
            "CRYPTOCAST_BINANCE_WS_URL": exchange.ws_url.removesuffix("/ws"),
            "CRYPTOCAST_BINANCE_REST_URL": exchange.rest_url,
            "CRYPTOCAST_LOG_FORMAT": "json",
            "TF_CPP_MIN_LOG_LEVEL": "3",
            **TINY_MODEL,
            **extra,
        }
    )
    return env


NO_CLEAN_EXIT = -1000  # what terminate() reports for a service that ignored SIGTERM


class Service:
    """``python -m cryptocast <command>`` in its own process group (so a kill takes its children,
    e.g. a training process, with it), logging to a file."""

    def __init__(self, command: str, env: dict[str, str], log_dir: Path) -> None:
        self.command = command
        self.env = env
        self.log_path = log_dir / f"{command}-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cryptocast", self.command],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # killed instead: callers assert on the code, and their teardown goes on
            self.kill()
            return NO_CLEAN_EXIT

    def kill(self) -> None:
        """kill -9 of the whole process group (the service and any training child)."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()


@contextlib.contextmanager
def reaped(proc: subprocess.Popen[Any]) -> Iterator[subprocess.Popen[Any]]:
    """``proc``, killed on the way out if it still runs (a failing test leaves no child behind)."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def interrupt(proc: subprocess.Popen[Any], within_s: float) -> int:
    """Ctrl-C to ``proc``; its exit code, which it must give within ``within_s`` seconds."""
    proc.send_signal(signal.SIGINT)
    return await asyncio.to_thread(proc.wait, within_s)


def start_pipeline(env: dict[str, str], log_dir: Path) -> tuple[Service, Service]:
    """The ingest and the forecast service, both started with ``env``."""
    return Service("ingest", env, log_dir).start(), Service("forecast", env, log_dir).start()


async def wait_for(
    check: Callable[[], Awaitable[T]],
    within_s: float,
    what: str,
    interval: float = 0.1,
    on_fail: Callable[[], str] | None = None,
) -> T:
    """Poll ``check`` until it returns something truthy, or fail after ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            detail = on_fail() if on_fail else ""
            raise AssertionError(f"timed out after {within_s}s waiting for {what}\n{detail}")
        await asyncio.sleep(interval)


async def status_json(
    env: dict[str, str], timeout_s: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """``cryptocast status --json`` as its own process, as an operator's second terminal runs it
    (``stdout`` holds the JSON; the exit code says stale or not)."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cryptocast", "status", "--json"],
        env=env,
        capture_output=True,
        timeout=timeout_s,
        check=False,
    )
