"""The ingest end-to-end tests' own parts: real CSV slices replayed, an IngestService run
against them, and what every delivered candle must satisfy."""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from config.settings import Settings, load_settings
from core.lifecycle import with_timeout
from core.schemas import Candle
from core.series import SeriesId
from ingest.csvfiles import read_csv
from ingest.service import IngestService
from replay import ReplayConfig, ReplayExchange, ReplaySource
from storage.candles import CandleStore
from storage.client import Redis
from storage.facade import Storage
from tests.market_data import market_file

FILES = {
    "AVAX": "avaxusdt_binance_futures_1m_2026-02.csv",
    "LINK": "linkusdt_binance_futures_1m_2026-02.csv",
    "LTC": "ltcusdt_binance_futures_1m_2026-02.csv",
    "NEAR": "nearusdt_binance_futures_1m_2026-02.csv",
}
HISTORY = 1000  # candles behind the replay's start: the ingester's initial history comes from them


def csv_slice(tmp_path: Path, name: str, rows: int) -> Path:
    """The first ``rows`` rows of the market file ``name``, as a CSV in ``tmp_path``."""
    out = tmp_path / name
    with market_file(name).open() as src:
        out.write_text("".join(next(src) for _ in range(rows + 1)))  # + the header row
    return out


def csv_candles(path: Path) -> dict[int, Candle]:
    """The valid candles of a CSV by open time."""
    return {r.candle.open_time: r.candle for r in read_csv(path).rows if r.candle}


@asynccontextmanager
async def replay(csvs: list[Path], **kw: Any) -> AsyncIterator[ReplayExchange]:
    """A started replay exchange over ``csvs`` (``HISTORY`` candles behind its start)."""
    kw.setdefault("exchange_info_symbols", "replayed")
    ex = ReplayExchange(
        ReplayConfig([ReplaySource(p) for p in csvs], history_candles=HISTORY, **kw)
    )
    await ex.start()
    try:
        yield ex
    finally:
        await ex.stop()


def ingest_settings(
    base: Settings, ex: ReplayExchange, series: list[str], **ingest: Any
) -> Settings:
    """``base``'s Redis, ``series`` from ``ex``, fast reconnects; ``ingest`` overrides."""
    return load_settings(
        redis_url=base.redis_url.get_secret_value(),
        series=series,
        clock="exchange",
        binance_ws_url=f"ws://{ex.base_url}",
        binance_rest_url=ex.rest_url,
        ingest={"reconnect_min_s": 0.02, "reconnect_max_s": 0.2, **ingest},
    )


def ingest_service(
    redis: Redis, cfg: Settings, expected_interval_s: float
) -> tuple[CandleStore, IngestService]:
    """A candle store under ``cfg``'s key prefix and an ingest service writing to it."""
    storage = Storage.from_settings(redis, cfg)
    return storage.candles, IngestService(cfg, storage, expected_interval_s=expected_interval_s)


@asynccontextmanager
async def running(service: IngestService) -> AsyncIterator[asyncio.Task[None]]:
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


async def assert_events_in_order(redis: Redis, store: CandleStore, series: SeriesId) -> None:
    """Closed-candle events in open-time order, through every reconnect: live candles that close
    while a gap fill runs wait for it, so the forecaster never gets a candle before the ones its
    window needs (it would skip it as an incomplete window and never predict it)."""
    entries = await redis.xrange(store.keys.events(series))
    firsts = [int(f[b"i"]) for _id, f in entries if f.get(b"r") != b"1"]
    assert firsts, f"no events for {series}"
    late = [(a, b) for a, b in itertools.pairwise(firsts) if b <= a]
    assert not late, f"{series}: {len(late)} events before an older candle's, e.g. {late[:3]}"


def record_offers(service: IngestService) -> dict[tuple[str, str], set[int]]:
    """Spy on the sink: open times offered per (series, via), accepted or not."""
    offered: dict[tuple[str, str], set[int]] = defaultdict(set)
    real = service.sink.offer
    signature = inspect.signature(real)

    def offer(*args: Any, **kwargs: Any) -> bool:
        call = signature.bind(*args, **kwargs)
        call.apply_defaults()
        a = call.arguments
        offered[a["series"].key, a["via"]].add(a["candle"].open_time)
        return real(*args, **kwargs)

    service.sink.offer = offer  # type: ignore[method-assign]
    return offered


async def assert_exact(store: CandleStore, series: SeriesId, rows: dict[int, Candle]) -> int:
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


async def caught_up(service: IngestService, store: CandleStore, rows: dict[SeriesId, Any]) -> bool:
    """Every series stored up to its last row, from its first stored candle, and the sink idle."""
    for s, r in rows.items():
        if await store.last_open_time(s) != max(r):
            return False
        first = await store.first_open_time(s)
        assert first is not None
        if await store.count(s) != sum(1 for t in r if t >= first):
            return False
    return service.sink._queue.empty() and service.sink._idle.is_set()
