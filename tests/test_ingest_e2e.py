"""The ingest service end to end: the real IngestService against the local replay exchange.

The replayed candles are real: slices of the four one-month 1m Binance USDⓈ-M futures dumps in
``shared/data`` (AVAX, LINK, LTC, NEAR), one series each. The replay exchange speaks Binance's
*spot* protocol, so these futures candles are relabelled as spot series (``binance:AVAX/USDT:1m``
...) for the replay; the tests are about delivery, not about which market the prices are from.
Everything runs over loopback: real websockets, real REST through ccxt, the real redis-server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from config.settings import Settings
from core.series import SeriesId
from cryptocast.redis_server import RedisServer
from ingest.binance_ws import BinanceKlineSource
from ingest.ccxt_source import CcxtPollSource, CcxtWatchSource
from replay import FaultConfig
from storage.candles import CandleStore
from storage.client import Redis
from storage.keys import Keys
from tests.e2e_support import wait_for
from tests.ingest_support import (
    FILES,
    HISTORY,
    assert_events_in_order,
    assert_exact,
    caught_up,
    csv_candles,
    csv_slice,
    ingest_service,
    ingest_settings,
    record_offers,
    replay,
    running,
)


async def test_faulty_feed_every_candle_exactly_once(
    tmp_path: Path, settings: Settings, redis: Redis
) -> None:
    """Four real series, 3,200 live candles plus 4,000 of history, through ≥ 20 dropped
    connections, silent stalls and 5 % malformed messages: Redis ends up with every closed
    candle of the replayed range exactly once, equal to the CSV, and nothing malformed."""
    live = 800
    csvs = {sym: csv_slice(tmp_path, name, HISTORY + live) for sym, name in FILES.items()}
    series = {SeriesId.parse(f"binance:{sym}/USDT:1m"): p for sym, p in csvs.items()}
    rows = {s: csv_candles(p) for s, p in series.items()}
    faults = FaultConfig(
        seed=11,
        drop_after=150,
        drop_jitter=0.5,  # each connection drops after 75..225 messages...
        stall_after=190,  # ...unless it stalls first, after 190: then ingest must notice
        stall_seconds=0.6,
        malformed_rate=0.05,
    )
    async with replay(list(csvs.values()), speed=2000.0, updates_per_candle=1, faults=faults) as ex:
        cfg = ingest_settings(settings, ex, [s.key for s in series], stale_factor=3.0)
        # Four streams at 2000x send a message every ~4 ms: 0.15 s of silence is a stall.
        store, service = ingest_service(redis, cfg, expected_interval_s=0.05)
        async with running(service):
            src = service.sources[0]
            replay_s = live * 60 / 2000.0
            await wait_for(
                lambda: caught_up(service, store, rows),
                replay_s + 40,
                "every series stored up to its last CSV row",
            )
            assert ex._hub is not None and len(ex._hub.ended) == 4  # the CSVs have run out
        stats = ex.stats
        assert stats.drops >= 20, stats
        assert stats.stalls >= 3, stats
        assert isinstance(src, BinanceKlineSource) and src.stats.stale_reconnects >= 3
        assert stats.malformed_sent >= 0.04 * (stats.finals_sent + stats.partials_sent), stats
    total = 0
    for s, r in rows.items():
        total += await assert_exact(store, s, r)
        await assert_events_in_order(redis, store, s)
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
    csvs = {sym: csv_slice(tmp_path, name, HISTORY + live) for sym, name in picked.items()}
    series = {SeriesId.parse(f"binance:{sym}/USDT:1m"): p for sym, p in csvs.items()}
    rows = {s: csv_candles(p) for s, p in series.items()}
    # drops after 15..45 messages (~0.12..0.37 s at ~120 messages/s) race a 0.25 s lifetime
    faults = FaultConfig(seed=5, drop_after=30, drop_jitter=0.5)
    async with replay(
        list(csvs.values()),
        speed=2000.0,
        updates_per_candle=1,
        faults=faults,
        max_connection_seconds=0.25,
        connection_clock="wall",
    ) as ex:
        cfg = ingest_settings(settings, ex, [s.key for s in series], stale_factor=3.0)
        store, service = ingest_service(redis, cfg, expected_interval_s=0.05)
        async with running(service):
            src = service.sources[0]
            await wait_for(
                lambda: caught_up(service, store, rows),
                live * 60 / 2000.0 + 60,
                "every series stored up to its last CSV row",
            )
        stats = ex.stats
        assert stats.drops >= 50, stats
        assert stats.limit_closes >= 10, stats
        assert isinstance(src, BinanceKlineSource)
        assert src.stats.reconnects >= 55
        assert max(src.stats.reconnect_delays) <= cfg.ingest.reconnect_max_s
    for s, r in rows.items():
        await assert_exact(store, s, r)
    assert service.sink.stored_by_via["rest"] > 0  # the outages were filled over REST


async def test_healthy_feed_every_live_candle_over_websocket(
    tmp_path: Path, settings: Settings, redis: Redis
) -> None:
    """Faults off: after the initial history, every candle comes over the websocket, and REST
    kline calls per series stay within reconnects + 1 (the first connect's gap fill)."""
    live = 200
    csvs = {sym: csv_slice(tmp_path, name, HISTORY + live) for sym, name in FILES.items()}
    series = {SeriesId.parse(f"binance:{sym}/USDT:1m"): p for sym, p in csvs.items()}
    rows = {s: csv_candles(p) for s, p in series.items()}
    # 600× real time: fast, yet slow enough that the exchange clock does not run many candles
    # ahead while one REST page is in flight (at 2000× on a loaded CI machine the start-up
    # history fill and the first connect's fill could each need a page).
    async with replay(list(csvs.values()), speed=600.0, updates_per_candle=1) as ex:
        cfg = ingest_settings(settings, ex, [s.key for s in series])
        # Generous stale limit: a healthy feed must not be mistaken for a stalled one.
        store, service = ingest_service(redis, cfg, expected_interval_s=0.5)
        offered = record_offers(service)
        async with running(service):
            await wait_for(
                lambda: caught_up(service, store, rows),
                live * 60 / 600.0 + 30,
                "every series stored up to its last CSV row",
            )
            src = service.sources[0]
            assert isinstance(src, BinanceKlineSource)
            reconnects = src.stats.reconnects
            calls = Counter(service.fetchers["binance"].calls_by_series)
        assert ex.stats.drops == 0 and ex.stats.malformed_sent == 0
    for s, r in rows.items():
        await assert_exact(store, s, r)
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
    path = csv_slice(tmp_path, FILES["LINK"], HISTORY + live)
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
    rows = csv_candles(path)
    async with replay([path], speed=600.0, updates_per_candle=1) as ex:
        cfg = ingest_settings(settings, ex, [series.key])
        store, service = ingest_service(redis, cfg, expected_interval_s=0.5)
        offered = record_offers(service)
        async with running(service):
            await wait_for(
                lambda: caught_up(service, store, {series: rows}),
                live * 60 / 600.0 + 30,
                "every candle stored up to the last CSV row",
            )
    await assert_exact(store, series, rows)
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
    csvs = [csv_slice(tmp_path, FILES[s], HISTORY + live) for s in ("LINK", "LTC")]
    keys = ["binance:LINK/USDT:1m", "binance:LTC/USDT:1m"]
    rows = {SeriesId.parse(k): csv_candles(p) for k, p in zip(keys, csvs, strict=True)}
    faults = FaultConfig(seed=5, drop_after=60, drop_jitter=0.3) if mode == "watch" else None
    async with replay(
        csvs, speed=1000.0, updates_per_candle=3, faults=faults or FaultConfig()
    ) as ex:
        cfg = ingest_settings(settings, ex, keys, mode=mode, poll_interval_s=0.05, stale_factor=4.0)
        store, service = ingest_service(redis, cfg, expected_interval_s=0.1)
        offered = record_offers(service)
        async with running(service):
            src = service.sources[0]
            assert isinstance(src, CcxtWatchSource if mode == "watch" else CcxtPollSource)
            await wait_for(
                lambda: caught_up(service, store, rows),
                live * 60 / 1000.0 + 30,
                f"{mode}: every series stored up to its last CSV row",
            )
        if mode == "watch":
            assert ex.stats.drops >= 3 and isinstance(src, CcxtWatchSource)
            assert src.stats.reconnects >= 3
    for s, r in rows.items():
        await assert_exact(store, s, r)
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
    csv = csv_slice(tmp_path, FILES["LINK"], HISTORY + 400)
    series = SeriesId.parse("binance:LINK/USDT:1m")
    async with replay([csv], speed=600.0) as ex:
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

            await wait_for(history_and_live_stored, 30, "history and live candles")
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
