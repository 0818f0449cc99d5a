"""Where every source's candles go: validation, reject accounting, batched atomic writes.

Sources hand over closed candles with their arrival time; the sink validates them against the
series' timeframe and the service clock (no candle that has not closed yet by that clock), counts
rejects per reason (logged at a bounded rate), and a single writer task stores whatever has
queued up in one pipelined round trip, with the closed-candle events in the same Lua step. When
Redis is down the writer keeps its batch and retries with backoff: nothing accepted is dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import structlog
from redis.exceptions import RedisError

from core.backoff import Backoff
from core.clock import Clock, ExchangeClock
from core.schemas import Candle, candle_problem
from core.series import SeriesId
from ingest.prom import CANDLES_REJECTED, CANDLES_STORED, INGEST_LAG
from storage.candles import CandleStore

log = structlog.get_logger(__name__)


@dataclass
class RejectLog:
    """Counts rejects per (series, reason) and logs at most one line per interval per key."""

    interval_s: float = 10.0
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    _last_logged: dict[tuple[str, str], float] = field(default_factory=dict)

    def reject(self, series: SeriesId | None, reason: str, detail: str) -> None:
        key = (series.key if series else "-", reason)
        self.counts[key] += 1
        CANDLES_REJECTED.labels(key[0], reason).inc()
        now = time.monotonic()
        if now - self._last_logged.get(key, -1e9) >= self.interval_s:
            self._last_logged[key] = now
            fields = series.log_fields() if series else {}
            log.warning(
                "candle.rejected",
                reason=reason,
                detail=detail[:200],
                total=self.counts[key],
                **fields,
            )

    def by_reason(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (_series, reason), n in self.counts.items():
            out[reason] += n
        return dict(out)


@dataclass
class _Pending:
    candle: Candle
    arrived_ms: int
    via: str


class CandleSink:
    """Validate and store closed candles from any source."""

    def __init__(
        self,
        store: CandleStore,
        clock: Clock,
        *,
        max_queue: int = 200_000,
        retry_min_s: float = 0.1,
        retry_max_s: float = 5.0,
        clock_margin_s: float = 0.5,
    ) -> None:
        self.store = store
        self.clock = clock
        self.clock_margin_s = clock_margin_s
        self.rejects = RejectLog()
        self.stored = 0
        self.unchanged = 0
        # Per source kind ("ws", "rest", "watch", "poll"): candles new or revised / unchanged.
        self.stored_by_via: Counter[str] = Counter()
        self.unchanged_by_via: Counter[str] = Counter()
        self._queue: asyncio.Queue[tuple[SeriesId, _Pending]] = asyncio.Queue(max_queue)
        self._retry = (retry_min_s, retry_max_s)
        self._idle = asyncio.Event()
        self._idle.set()
        # Live candles kept back per series while a gap fill brings the ones before them.
        self._held: dict[SeriesId, list[_Pending]] = {}

    def offer(
        self,
        series: SeriesId,
        candle: Candle,
        arrived_ms: int,
        via: str = "ws",
        close_time: int | None = None,
    ) -> bool:
        """Validate and queue one candle its source saw close; returns False when rejected.

        The source's evidence (Binance's ``x: true``, the next candle appearing) outranks our
        reading of the exchange clock, which may lag it a little: "future" is judged with
        :func:`clock_margin_ms` of slack, so a final arriving right at the close is kept. A
        ``close_time`` the source gives (Binance's ``T``) is when the candle closed: before the
        end of its interval when the exchange halted mid-candle, and that candle is stored.
        """
        now = self.clock.now_ms() + clock_margin_ms(self.clock, self.clock_margin_s)
        reason = candle_problem(candle, series.timeframe, now, close_time)
        if reason is not None:
            self.rejects.reject(series, reason, repr(candle))
            return False
        self._idle.clear()
        pending = _Pending(candle, arrived_ms, via)
        held = self._held.get(series)
        if held is not None:
            held.append(pending)
        else:
            self._queue.put_nowait((series, pending))
        return True

    def hold(self, series: SeriesId) -> None:
        """Keep ``series``' live candles back until :meth:`release`: a gap fill is fetching the
        candles before them, and a live candle stored first would reach the forecaster with a
        hole in its window (and be skipped there, never predicted)."""
        self._held.setdefault(series, [])

    def release(self, series: SeriesId) -> None:
        """Queue what :meth:`hold` kept back, in arrival order, after the gap fill's candles."""
        for pending in self._held.pop(series, []):
            self._queue.put_nowait((series, pending))
        if self._queue.empty() and not self._held:
            self._idle.set()

    async def write_now(self, series: SeriesId, candles: list[Candle], via: str) -> int:
        """Validate and store a batch directly (gap fill): returns how many were new/revised."""
        now = self.clock.now_ms()
        good = []
        for c in candles:
            reason = candle_problem(c, series.timeframe, now)
            if reason is None:
                good.append(c)
            else:
                self.rejects.reject(series, reason, repr(c))
        if not good:
            return 0
        res = await self.store.upsert(series, good, emit_events=True, arrived_ms=_now_ms())
        self._account(series, res.new + res.replaced, res.unchanged, via, res.last_open_time)
        return res.new + res.replaced

    async def drained(self) -> None:
        """Wait until everything offered so far is stored (what is held, once released)."""
        await self._idle.wait()

    async def run(self) -> None:
        """The writer loop: drain the queue, group by series, store, repeat."""
        while True:
            first = await self._queue.get()
            batch = [first]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            grouped: dict[tuple[SeriesId, str], list[_Pending]] = defaultdict(list)
            for series, p in batch:
                grouped[series, p.via].append(p)
            await self._store_with_retry(grouped)
            if self._queue.empty() and not any(self._held.values()):
                self._idle.set()

    async def _store_with_retry(self, grouped: dict[tuple[SeriesId, str], list[_Pending]]) -> None:
        backoff = Backoff(*self._retry)
        while True:
            try:
                # One round trip for every series in the batch, not one per series.
                results = await self.store.upsert_many(
                    [(series, [p.candle for p in items]) for (series, _), items in grouped.items()],
                    emit_events=True,
                    arrived_ms=[min(p.arrived_ms for p in items) for items in grouped.values()],
                )
                for ((series, via), _items), res in zip(grouped.items(), results, strict=True):
                    self._account(
                        series, res.new + res.replaced, res.unchanged, via, res.last_open_time
                    )
                return
            except (RedisError, OSError) as e:
                # Upserts are idempotent, so retrying a partly applied batch is safe.
                delay = backoff.next_delay()
                log.warning(
                    "sink.redis_unavailable",
                    error=str(e).splitlines()[0][:200],
                    retry_in_s=round(delay, 2),
                    queued=self._queue.qsize(),
                )
                await asyncio.sleep(delay)

    def _account(
        self, series: SeriesId, written: int, unchanged: int, via: str, last_open_time: int | None
    ) -> None:
        self.stored += written
        self.unchanged += unchanged
        self.stored_by_via[via] += written
        self.unchanged_by_via[via] += unchanged
        if written:
            CANDLES_STORED.labels(series.key, via).inc(written)
        if last_open_time is not None:
            close = series.timeframe.next_open(last_open_time)
            INGEST_LAG.labels(series.key).set(max(0.0, (self.clock.now_ms() - close) / 1000))


def clock_margin_ms(clock: Clock, seconds: float) -> int:
    """``seconds`` of wall time on ``clock``: how far our reading of the exchange's time may be
    off. The exchange clock runs ``speed`` times faster against the replay exchange, and so does
    its error (half a round trip of the sync), hence the scaling."""
    speed = clock.sync.speed if isinstance(clock, ExchangeClock) and clock.sync else 1.0
    return int(seconds * 1000 * speed)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
