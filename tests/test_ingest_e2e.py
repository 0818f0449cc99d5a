"""The ingest service end to end: the real IngestService against the local replay exchange.

The replayed candles are real: slices of the four one-month 1m Binance USDⓈ-M futures dumps in
``shared/data`` (AVAX, LINK, LTC, NEAR), one series each. The replay exchange speaks Binance's
*spot* protocol, so these futures candles are relabelled as spot series (``binance:AVAX/USDT:1m``
...) for the replay; the tests are about delivery, not about which market the prices are from.
Everything runs over loopback: real websockets, real REST through ccxt, the real redis-server.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings, load_settings
from core.lifecycle import with_timeout
from core.schemas import Candle
from core.series import SeriesId
from cryptocast.redis_server import RedisServer
from ingest.binance_ws import BinanceKlineSource
from ingest.ccxt_source import CcxtPollSource, CcxtWatchSource
from ingest.csvfiles import read_csv
from ingest.service import IngestService
from replay import FaultConfig, ReplayConfig, ReplayExchange, ReplaySource
from storage.candles import CandleStore
from storage.client import Redis
from storage.facade import Storage
from storage.keys import Keys
from tests.market_data import market_file

FILES = {
    "AVAX": "avaxusdt_binance_futures_1m_2026-02.csv",
    "LINK": "linkusdt_binance_futures_1m_2026-02.csv",
    "LTC": "ltcusdt_binance_futures_1m_2026-02.csv",
    "NEAR": "nearusdt_binance_futures_1m_2026-02.csv",
}
HISTORY = 1000  # candles behind the replay's start: the ingester's initial history comes from them


def _slice(tmp_path: Path, name: str, rows: int) -> Path:
    out = tmp_path / name
    with market_file(name).open() as src:
        out.write_text("".join(next(src) for _ in range(rows + 1)))  # + the header row
    return out


def _rows(path: Path) -> dict[int, Candle]:
    return {r.candle.open_time: r.candle for r in read_csv(path).rows if r.candle}


async def _until(
    cond: Callable[[], Awaitable[bool]], within: float, what: str, every: float = 0.1
) -> None:
    deadline = time.monotonic() + within
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:.0f} s: {what}")
        await asyncio.sleep(every)


@asynccontextmanager
async def _replay(csvs: list[Path], **kw: Any) -> AsyncIterator[ReplayExchange]:
    kw.setdefault("exchange_info_symbols", "replayed")
    ex = ReplayExchange(
        ReplayConfig([ReplaySource(p) for p in csvs], history_candles=HISTORY, **kw)
    )
    await ex.start()
    try:
        yield ex
    finally:
        await ex.stop()


def _settings(base: Settings, ex: ReplayExchange, series: list[str], **ingest: Any) -> Settings:
    return load_settings(
        redis_url=base.redis_url.get_secret_value(),
        series=series,
        clock="exchange",
        binance_ws_url=f"ws://{ex.base_url}",
        binance_rest_url=ex.rest_url,
        ingest={"reconnect_min_s": 0.02, "reconnect_max_s": 0.2, **ingest},
    )


@asynccontextmanager
async def _running(service: IngestService) -> AsyncIterator[asyncio.Task[None]]:
    """Start the service (as ``serve_ingest`` does) and stop it cleanly, whatever happens."""
    try:
        await service.start()
    except BaseException:
        await service.close()
        raise
    task = asyncio.create_task(service.run(), name="ingest-under-test")
    try:
        await with_timeout(service.ready.wait(), 10)
        yield task
    finally:
        service.stop()
        await with_timeout(task, 15)


async def _assert_events_in_order(redis: Redis, store: CandleStore, series: SeriesId) -> None:
    """Closed-candle events in open-time order, through every reconnect: live candles that close
    while a gap fill runs wait for it, so the forecaster never gets a candle before the ones its
    window needs (it would skip it as an incomplete window and never predict it)."""
    entries = await redis.xrange(store.keys.events(series))
    firsts = [int(f[b"i"]) for _id, f in entries if f.get(b"r") != b"1"]
    assert firsts, f"no events for {series}"
    late = [(a, b) for a, b in itertools.pairwise(firsts) if b <= a]
    assert not late, f"{series}: {len(late)} events before an older candle's, e.g. {late[:3]}"


def _record_offers(service: IngestService) -> dict[tuple[str, str], set[int]]:
    """Spy on the sink: open times offered per (series, via), accepted or not."""
    offered: dict[tuple[str, str], set[int]] = defaultdict(set)
    real = service.sink.offer

    def offer(
        series: SeriesId,
        candle: Candle,
        arrived_ms: int,
        via: str = "ws",
        close_time: int | None = None,
    ) -> bool:
        offered[series.key, via].add(candle.open_time)
        return real(series, candle, arrived_ms, via, close_time)

    service.sink.offer = offer  # type: ignore[method-assign]
    return offered


async def _assert_exact(store: CandleStore, series: SeriesId, rows: dict[int, Candle]) -> int:
    """Every CSV row from the first stored candle to the last row is stored once, equal to the
    CSV; nothing else is stored. Returns how many candles that is."""
    stored = await store.range(series)
    assert stored, f"{series}: nothing stored"
    first, last = stored[0].open_time, max(rows)
    expected = [rows[t] for t in sorted(rows) if first <= t <= last]
    assert [c.open_time for c in stored] == [c.open_time for c in expected], f"{series}: times"
    assert await store.count(series) == len(expected)
    for got, want in zip(stored, expected, strict=True):
        assert (got.open, got.high, got.low, got.close, got.volume) == (
            want.open,
            want.high,
            want.low,
            want.close,
            want.volume,
        ), f"{series} {got.open_time}: stored {got} but the CSV has {want}"
    return len(expected)


async def _caught_up(service: IngestService, store: CandleStore, rows: dict[SeriesId, Any]) -> bool:
    for s, r in rows.items():
        if await store.last_open_time(s) != max(r):
            return False
        first = await store.first_open_time(s)
        assert first is not None
        if await store.count(s) != sum(1 for t in r if t >= first):
            return False
    return service.sink._queue.empty() and service.sink._idle.is_set()


async def test_faulty_feed_every_candle_exactly_once(
    tmp_path: Path, settings: Settings, redis: Redis
) -> None:
    """Four real series, 3,200 live candles plus 4,000 of history, through ≥ 20 dropped
    connections, silent stalls and 5 % malformed messages: Redis ends up with every closed
    candle of the replayed range exactly once, equal to the CSV, and nothing malformed."""
    live = 800
    csvs = {sym: _slice(tmp_path, name, HISTORY + live) for sym, name in FILES.items()}
    series = {SeriesId.parse(f"binance:{sym}/USDT:1m"): p for sym, p in csvs.items()}
    rows = {s: _rows(p) for s, p in series.items()}
    faults = FaultConfig(
        seed=11,
        drop_after=150,
        drop_jitter=0.5,  # each connection drops after 75..225 messages...
        stall_after=190,  # ...unless it stalls first, after 190: then ingest must notice
        stall_seconds=0.6,
        malformed_rate=0.05,
    )
    async with _replay(
        list(csvs.values()), speed=2000.0, updates_per_candle=1, faults=faults
    ) as ex:
        cfg = _settings(settings, ex, [s.key for s in series], stale_factor=3.0)
        storage = Storage.from_settings(redis, cfg)
        store = storage.candles
        # Four streams at 2000x send a message every ~4 ms: 0.15 s of silence is a stall.
        service = IngestService(cfg, storage, expected_interval_s=0.05)
        async with _running(service):
            src = service.sources[0]
            replay_s = live * 60 / 2000.0
            await _until(
                lambda: _caught_up(service, store, rows),
                within=replay_s + 40,
                what="every series stored up to its last CSV row",
            )
            assert ex._hub is not None and len(ex._hub.ended) == 4  # the CSVs have run out
        stats = ex.stats
        assert stats.drops >= 20, stats
        assert stats.stalls >= 3, stats
        assert isinstance(src, BinanceKlineSource) and src.stats.stale_reconnects >= 3
        assert stats.malformed_sent >= 0.04 * (stats.finals_sent + stats.partials_sent), stats
    total = 0
    for s, r in rows.items():
        total += await _assert_exact(store, s, r)
        await _assert_events_in_order(redis, store, s)
    assert total >= 4 * (HISTORY + live) * 0.95
    rejected = service.sink.rejects.by_reason()
    # broken JSON and missing fields are "malformed"; the others carry their own reason
    assert rejected.get("malformed", 0) > 0, rejected
    assert sum(rejected.get(r, 0) for r in ("not_finite", "non_positive_price", "high_low")) > 0
    assert rejected.get("wrong_interval", 0) + rejected.get("wrong_symbol", 0) > 0, rejected
    assert sum(rejected.values()) <= stats.malformed_sent
    assert service.sink.stored_by_via["rest"] > 0  # the outages were filled over REST


async def test_fifty_disconnects_and_server_closes_lose_nothing(
    tmp_path: Path, settings: Settings, redis: Redis
) -> None:
    """Two real series through ≥ 50 dropped connections and 24 h-style server closes (the
    server ends a connection at the end of its lifetime, close code 1001; stalls are the sibling
    test's): every closed candle stored exactly once and equal to the CSV, and no reconnect
    waits longer than the configured cap."""
    live = 1000
    picked = dict(list(FILES.items())[:2])
    csvs = {sym: _slice(tmp_path, name, HISTORY + live) for sym, name in picked.items()}
    series = {SeriesId.parse(f"binance:{sym}/USDT:1m"): p for sym, p in csvs.items()}
    rows = {s: _rows(p) for s, p in series.items()}
    # drops after 15..45 messages (~0.12..0.37 s at ~120 messages/s) race a 0.25 s lifetime
    faults = FaultConfig(seed=5, drop_after=30, drop_jitter=0.5)
    async with _replay(
        list(csvs.values()),
        speed=2000.0,
        updates_per_candle=1,
        faults=faults,
        max_connection_seconds=0.25,
        connection_clock="wall",
    ) as ex:
        cfg = _settings(settings, ex, [s.key for s in series], stale_factor=3.0)
        storage = Storage.from_settings(redis, cfg)
        store = storage.candles
        service = IngestService(cfg, storage, expected_interval_s=0.05)
        async with _running(service):
            src = service.sources[0]
            await _until(
                lambda: _caught_up(service, store, rows),
                within=live * 60 / 2000.0 + 60,
                what="every series stored up to its last CSV row",
            )
        stats = ex.stats
        assert stats.drops >= 50, stats
        assert stats.limit_closes >= 10, stats
        assert isinstance(src, BinanceKlineSource)
        assert src.stats.reconnects >= 55
        assert max(src.stats.reconnect_delays) <= cfg.ingest.reconnect_max_s
    for s, r in rows.items():
        await _assert_exact(store, s, r)
    assert service.sink.stored_by_via["rest"] > 0  # the outages were filled over REST


async def test_healthy_feed_every_live_candle_over_websocket(
    tmp_path: Path, settings: Settings, redis: Redis
) -> None:
    """Faults off: after the initial history, every candle comes over the websocket, and REST
    kline calls per series stay within reconnects + 1 (the first connect's gap fill)."""
    live = 200
    csvs = {sym: _slice(tmp_path, name, HISTORY + live) for sym, name in FILES.items()}
    series = {SeriesId.parse(f"binance:{sym}/USDT:1m"): p for sym, p in csvs.items()}
    rows = {s: _rows(p) for s, p in series.items()}
    # 600× real time: fast, yet slow enough that the exchange clock does not run many candles
    # ahead while one REST page is in flight (at 2000× on a loaded CI machine the start-up
    # history fill and the first connect's fill could each need a page).
    async with _replay(list(csvs.values()), speed=600.0, updates_per_candle=1) as ex:
        cfg = _settings(settings, ex, [s.key for s in series])
        storage = Storage.from_settings(redis, cfg)
        store = storage.candles
        # Generous stale limit: a healthy feed must not be mistaken for a stalled one.
        service = IngestService(cfg, storage, expected_interval_s=0.5)
        offered = _record_offers(service)
        async with _running(service):
            await _until(
                lambda: _caught_up(service, store, rows),
                within=live * 60 / 600.0 + 30,
                what="every series stored up to its last CSV row",
            )
            src = service.sources[0]
            assert isinstance(src, BinanceKlineSource)
            reconnects = src.stats.reconnects
            calls = Counter(service.fetchers["binance"].calls_by_series)
        assert ex.stats.drops == 0 and ex.stats.malformed_sent == 0
    for s, r in rows.items():
        await _assert_exact(store, s, r)
        via_ws = offered[s.key, "ws"]
        assert via_ws, f"{s}: nothing over the websocket"
        # From the first candle the websocket delivered to the end: all of them, none missing.
        live_times = {t for t in r if t >= min(via_ws)}
        assert live_times <= via_ws, f"{s}: {sorted(live_times - via_ws)[:5]} not over the ws"
        assert len(live_times) >= live - 5
        assert 1 <= calls[s.key] <= reconnects + 1, (s.key, calls[s.key], reconnects)
    # REST brought the history and little else: about HISTORY candles per series.
    assert service.sink.stored_by_via["rest"] <= 4 * (HISTORY + 5)
    assert service.sink.stored_by_via["ws"] >= 4 * (live - 5)
    assert service.sink.rejects.by_reason() == {}


async def test_candles_closed_early_and_flat_outage_candles_are_stored(
    tmp_path: Path, settings: Settings, redis: Redis
) -> None:
    """Real LINK rows changed minimally into what Binance publishes around a halt: a candle
    closed 30 s into its minute and a flat zero-volume one after it, once in the history (over
    REST) and once live (over the websocket, final at the early close). All stored, none
    rejected, no hole."""
    live = 40
    path = _slice(tmp_path, FILES["LINK"], HISTORY + live)
    lines = path.read_text().splitlines(keepends=True)
    for i in (HISTORY - 20, HISTORY + 10):  # data row i is line i + 1
        short = lines[i + 1].split(",")
        short[6] = str(int(short[0]) + 29_999)
        lines[i + 1] = ",".join(short)
        flat = lines[i + 2].split(",")
        prev_close = short[4]
        flat[1:6] = [prev_close] * 4 + ["0"]
        flat[7:11] = ["0"] * 4
        lines[i + 2] = ",".join(flat)
    path.write_text("".join(lines))
    series = SeriesId.parse("binance:LINK/USDT:1m")
    rows = _rows(path)
    async with _replay([path], speed=600.0, updates_per_candle=1) as ex:
        cfg = _settings(settings, ex, [series.key])
        storage = Storage.from_settings(redis, cfg)
        store = storage.candles
        service = IngestService(cfg, storage, expected_interval_s=0.5)
        offered = _record_offers(service)
        async with _running(service):
            await _until(
                lambda: _caught_up(service, store, {series: rows}),
                within=live * 60 / 600.0 + 30,
                what="every candle stored up to the last CSV row",
            )
    await _assert_exact(store, series, rows)
    assert await store.holes(series) == []
    assert service.sink.rejects.by_reason() == {}
    early = int(lines[HISTORY + 11].split(",")[0])
    assert early in offered[series.key, "ws"]


@pytest.mark.parametrize("mode", ["watch", "poll"])
async def test_ccxt_sources_store_closed_candles_only(
    mode: str, tmp_path: Path, settings: Settings, redis: Redis
) -> None:
    """The ccxt sources (what other exchanges use), driven with ccxt's ``binance`` class against
    the replay: ``watch`` (ccxt.pro watch_ohlcv, with dropped connections) and ``poll`` (REST
    fetch_ohlcv) store exactly the CSV's closed candles, never a still-open one."""
    live = 150
    csvs = [_slice(tmp_path, FILES[s], HISTORY + live) for s in ("LINK", "LTC")]
    keys = ["binance:LINK/USDT:1m", "binance:LTC/USDT:1m"]
    rows = {SeriesId.parse(k): _rows(p) for k, p in zip(keys, csvs, strict=True)}
    faults = FaultConfig(seed=5, drop_after=60, drop_jitter=0.3) if mode == "watch" else None
    async with _replay(
        csvs, speed=1000.0, updates_per_candle=3, faults=faults or FaultConfig()
    ) as ex:
        cfg = _settings(settings, ex, keys, mode=mode, poll_interval_s=0.05, stale_factor=4.0)
        storage = Storage.from_settings(redis, cfg)
        store = storage.candles
        service = IngestService(cfg, storage, expected_interval_s=0.1)
        offered = _record_offers(service)
        async with _running(service):
            src = service.sources[0]
            assert isinstance(src, CcxtWatchSource if mode == "watch" else CcxtPollSource)
            await _until(
                lambda: _caught_up(service, store, rows),
                within=live * 60 / 1000.0 + 30,
                what=f"{mode}: every series stored up to its last CSV row",
            )
        if mode == "watch":
            assert ex.stats.drops >= 3 and isinstance(src, CcxtWatchSource)
            assert src.stats.reconnects >= 3
    for s, r in rows.items():
        await _assert_exact(store, s, r)
        if mode == "watch":
            assert offered[s.key, "watch"], f"{s}: nothing came through watch_ohlcv"
    if mode == "watch":
        assert service.sink.stored_by_via["watch"] >= 2 * live // 2
    else:
        assert service.sink.stored_by_via["rest"] == 0
        assert service.sink.stored_by_via["poll"] >= 2 * (HISTORY + live) * 0.95
    assert service.sink.rejects.by_reason() == {}


async def test_cli_ingest_stores_and_stops_on_sigterm(
    tmp_path: Path, settings: Settings, redis: Redis, redis_server: RedisServer
) -> None:
    """``cryptocast ingest`` as a real process: it stores candles, and SIGTERM stops it
    promptly with exit code 0 and an ``ingest.stopped`` log line."""
    csv = _slice(tmp_path, FILES["LINK"], HISTORY + 400)
    series = SeriesId.parse("binance:LINK/USDT:1m")
    async with _replay([csv], speed=600.0) as ex:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOCAST_")}
        env.update(
            CRYPTOCAST_REDIS_URL=redis_server.url,
            CRYPTOCAST_SERIES=series.key,
            CRYPTOCAST_CLOCK="exchange",
            CRYPTOCAST_BINANCE_WS_URL=f"ws://{ex.base_url}",
            CRYPTOCAST_BINANCE_REST_URL=ex.rest_url,
            CRYPTOCAST_LOG_FORMAT="json",
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cryptocast",
            "ingest",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        # Read its output all along: a full pipe would block the service's logging.
        done = asyncio.ensure_future(proc.communicate())
        try:
            store = CandleStore(redis, Keys())

            async def history_and_live_stored() -> bool:
                assert proc.returncode is None, "cryptocast ingest exited early"
                last = await store.last_open_time(series)
                live = last is not None and last > ex.histories[0].open_times[HISTORY]
                return live and await store.count(series) >= HISTORY

            await _until(history_and_live_stored, within=30, what="history and live candles")
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            finished, _ = await asyncio.wait([done], timeout=10)
            stop_s = time.monotonic() - t0
            if not finished:
                proc.kill()
            out, err = await done
            assert finished, f"no exit 10 s after SIGTERM: {(out + err).decode()[-3000:]}"
        finally:
            if proc.returncode is None:
                proc.kill()
            await done
    logs = (out + err).decode()
    assert proc.returncode == 0, logs[-2000:]
    assert stop_s < 5, stop_s
    assert '"ingest.stopped"' in logs, logs[-2000:]
    assert "Traceback" not in logs
