"""One series' worker against a real Redis: windows across a hole are skipped, never crash it."""

from __future__ import annotations

import time

from config.settings import load_settings
from core.series import SeriesId
from forecaster.serving.worker import SeriesWorker, ServingContext
from storage.facade import Storage
from tests.forecaster_support import btc_candles, promote_trained, tiny_settings, trained_tiny

SERIES = SeriesId.parse("binance:BTC/USDT:1h")


class FixedClock:
    """'Now' is just after the last candle, so no event is judged stale."""

    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now


async def test_events_after_a_hole_are_skipped_until_the_window_is_whole(storage: Storage) -> None:
    """A candle is missing (a hole gap fill has not repaired yet). Every event whose window
    reaches back over it is skipped as ``incomplete_window``; the worker survives (it used to
    crash here: its in-memory window kept the short read across the hole and later grew to
    full length with the hole inside), and predictions resume once the window is past it."""
    window = tiny_settings().window
    candles = btc_candles(2900)
    hole = 2850
    result = trained_tiny()  # trained on the first 2,800: the hole is in its future
    registry = storage.registry
    await promote_trained(registry, SERIES, result, trained_at=1)
    store = storage.candles
    await store.upsert(SERIES, [c for c in candles[:hole]])
    settings = load_settings(schedule={"stale_after": 10**6})
    ctx = ServingContext(
        settings=settings,
        storage=storage,
        clock=FixedClock(candles[-1].open_time + 3_600_000),
        consumer="test",
    )
    worker = SeriesWorker(ctx, SERIES)
    await ctx.events.ensure_group(SERIES)
    await worker.holder.load_now()
    assert worker.holder.model is not None

    live = candles[hole + 1 :]  # the candle at ``hole`` never arrives
    for c in live:  # one event at a time, as they close
        await store.upsert(SERIES, [c], emit_events=True, arrived_ms=int(time.time() * 1000))
        batch = await ctx.events.read(SERIES, "test", block_ms=None)
        assert len(batch) == 1
        await worker.handle(batch)

    # the window of the event at index i is candles i-window .. i (window + 1 candles)
    whole = [c for i, c in enumerate(live, hole + 1) if i - window > hole]
    assert worker.stats.skipped.get("incomplete_window") == len(live) - len(whole)
    assert worker.stats.published == len(whole) > 0
    published = [p.as_of for p in await ctx.bus.recent(SERIES, count=len(live))]
    assert published == [c.open_time for c in whole]
    assert await ctx.events.pending_count(SERIES) == 0  # skipped events are acknowledged too
