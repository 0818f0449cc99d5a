"""The replayed candle timelines and the accelerated replay clock.

A candle's state at any replay instant is a pure function of the CSV row and the instant: before
its close it is an in-progress kline whose price walks open → low → high → close (or open → high
→ low → close for a falling candle) and whose volume and trade count grow linearly; once the
clock passes its close it is final and carries exactly the CSV values. The websocket streams and
REST ``klines`` both read candles through :meth:`SymbolHistory.kline`, so they always agree.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from core.lifecycle import with_timeout
from core.schemas import Candle
from core.series import Timeframe
from ingest.csvfiles import CsvRow, read_csv
from replay.config import ReplaySource

log = structlog.get_logger(__name__)


class ReplayClock:
    """Replay time in epoch ms: ``start`` at :meth:`begin`, then ``speed`` × wall time.

    :meth:`jump_to` moves it forward at once (tests, fast-forward); sleepers notice.
    """

    def __init__(self, start_ms: int, speed: float) -> None:
        self.speed = speed
        self._origin_ms = float(start_ms)
        self._wall0 = time.monotonic()
        self._changed = asyncio.Event()

    def begin(self) -> None:
        """Restart the wall reference so the clock reads ``start`` now."""
        self._wall0 = time.monotonic()

    def now_ms(self) -> int:
        return int(self._origin_ms + (time.monotonic() - self._wall0) * 1000.0 * self.speed)

    def jump_to(self, t_ms: int) -> None:
        """Move the clock forward to ``t_ms`` (never backward: streams only go forward)."""
        now = self.now_ms()
        if t_ms <= now:
            return
        self._origin_ms += t_ms - now
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def wall_seconds_until(self, t_ms: int) -> float:
        return max(0.0, (t_ms - self.now_ms()) / 1000.0 / self.speed)

    async def sleep_until(self, t_ms: int) -> None:
        """Sleep until the replay clock reaches ``t_ms`` (returns early on a jump past it)."""
        while (delay := self.wall_seconds_until(t_ms)) > 0:
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await with_timeout(changed.wait(), delay)


@dataclass(frozen=True, slots=True)
class Kline:
    """A kline as Binance describes it, final or in progress."""

    open_time: int
    close_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    trades: int
    quote_volume: float
    taker_buy_volume: float
    taker_buy_quote_volume: float
    first_trade_id: int
    last_trade_id: int
    closed: bool


def _decimals(x: float) -> int:
    text = repr(x)
    if "e" in text or "." not in text:
        return 0 if "e" not in text else 8
    return len(text.split(".", 1)[1].rstrip("0"))


class SymbolHistory:
    """All candles of one market at one timeframe, sorted by open time, with their extras."""

    def __init__(
        self,
        symbol: str,
        timeframe: Timeframe,
        candles: list[Candle],
        *,
        close_times: list[int],
        quote_volumes: list[float | None],
        taker_base: list[float | None],
        taker_quote: list[float | None],
    ) -> None:
        self.symbol = symbol
        self.timeframe = timeframe
        self.candles = candles
        self.open_times = [c.open_time for c in candles]
        self.close_times = close_times
        self._quote = quote_volumes
        self._taker_base = taker_base
        self._taker_quote = taker_quote
        # Synthetic but consistent trade ids: each candle's first id follows the previous last.
        counts = [c.trades or 0 for c in candles]
        self._first_ids = [0, *itertools.accumulate(counts)][:-1] if candles else []
        sample = candles[:200]
        self.price_decimals = min(
            8, max((max(_decimals(c.open), _decimals(c.close)) for c in sample), default=2)
        )

    @property
    def stream_name(self) -> str:
        return f"{self.symbol.lower()}@kline_{self.timeframe.text}"

    def __len__(self) -> int:
        return len(self.candles)

    @property
    def first_open(self) -> int:
        return self.open_times[0]

    @property
    def last_close(self) -> int:
        return self.close_times[-1]

    def index_at_or_after(self, t_ms: int) -> int:
        """Index of the first candle that opens at or after ``t_ms`` (``len`` if none)."""
        return bisect.bisect_left(self.open_times, t_ms)

    def index_containing(self, t_ms: int) -> int:
        """Index of the last candle opening at or before ``t_ms`` (-1 if none)."""
        return bisect.bisect_right(self.open_times, t_ms) - 1

    def kline(self, i: int, now_ms: int) -> Kline:
        """Candle ``i`` as it stands at replay time ``now_ms`` (final once ``now > close``)."""
        c = self.candles[i]
        close_time = self.close_times[i]
        quote = self._quote[i]
        if quote is None:
            quote = c.volume * (c.open + c.high + c.low + c.close) / 4.0
        tb_base = self._taker_base[i] or 0.0
        tb_quote = self._taker_quote[i] or 0.0
        trades = c.trades or 0
        first_id = self._first_ids[i]
        if now_ms > close_time:
            return Kline(
                c.open_time, close_time, c.open, c.high, c.low, c.close, c.volume, trades,
                quote, tb_base, tb_quote,
                first_id if trades else -1, first_id + trades - 1 if trades else -1, True,
            )  # fmt: skip
        span = close_time + 1 - c.open_time
        frac = min(1.0, max(0.0, (now_ms - c.open_time) / span))
        o, h, lo, cl = self._partial_prices(c, frac)
        n = int(trades * frac)
        return Kline(
            c.open_time, close_time, o, h, lo, cl,
            round(c.volume * frac, 8), n, round(quote * frac, 8),
            round(tb_base * frac, 8), round(tb_quote * frac, 8),
            first_id if n else -1, first_id + n - 1 if n else -1, False,
        )  # fmt: skip

    def _partial_prices(self, c: Candle, frac: float) -> tuple[float, float, float, float]:
        # The path visits the farther-from-close extreme first, as most candles do.
        waypoints = (
            (c.open, c.low, c.high, c.close)
            if c.close >= c.open
            else (c.open, c.high, c.low, c.close)
        )
        pos = frac * 3.0
        seg = min(2, int(pos))
        a, b = waypoints[seg], waypoints[seg + 1]
        # Rounding to the file's tick keeps the price inside [a, b] and looking like a real one.
        price = round(a + (b - a) * (pos - seg), self.price_decimals)
        seen = [*waypoints[: seg + 1], price]
        return c.open, max(seen), min(seen), price

    def range_indexes(self, start: int | None, end: int | None, limit: int, now_ms: int) -> range:
        """Indexes of the candles REST ``klines`` returns, as Binance selects them.

        Only candles open by ``now_ms`` exist. With ``start``: the first ``limit`` from it; else
        the last ``limit`` up to ``end`` (or now).
        """
        hi = self.index_containing(now_ms) + 1
        if end is not None:
            hi = min(hi, self.index_containing(end) + 1)
        if start is not None:
            lo = self.index_at_or_after(start)
            return range(lo, max(lo, min(hi, lo + limit)))
        return range(max(0, hi - limit), hi)


def load_history(source: ReplaySource) -> SymbolHistory:
    """Read a source CSV into a :class:`SymbolHistory` (rejected rows are logged and skipped)."""
    result = read_csv(source.csv, timeframe=source.timeframe)
    symbol = market_id(source.symbol) if source.symbol else result.info.symbol
    if not symbol:
        raise ValueError(f"{source.csv}: cannot infer the symbol from the file; give it explicitly")
    if result.rejects:
        log.warning("replay.csv_rejects", path=str(source.csv), rejected=result.reject_counts)
    rows = sorted(result.rows, key=lambda r: r.candle.open_time if r.candle else 0)
    deduped: list[CsvRow] = []
    for r in rows:
        if (
            deduped
            and deduped[-1].candle
            and r.candle
            and (deduped[-1].candle.open_time == r.candle.open_time)
        ):
            deduped[-1] = r
        else:
            deduped.append(r)
    if not deduped:
        raise ValueError(f"{source.csv}: no valid candle to replay")
    tf = result.info.timeframe
    candles = [r.candle for r in deduped if r.candle is not None]
    history = SymbolHistory(
        symbol,
        tf,
        candles,
        close_times=[
            r.close_time if r.close_time is not None else tf.close_time(c.open_time)
            for r, c in zip(deduped, candles, strict=True)
        ],
        quote_volumes=[r.quote_volume for r in deduped],
        taker_base=[r.taker_buy_volume for r in deduped],
        taker_quote=[r.taker_buy_quote_volume for r in deduped],
    )
    log.info(
        "replay.history_loaded",
        path=str(Path(source.csv)),
        symbol=symbol,
        timeframe=tf.text,
        candles=len(candles),
        first_open=history.first_open,
        last_close=history.last_close,
    )
    return history


def market_id(symbol: str) -> str:
    """``BTC/USDT`` / ``LINK/USDT:USDT`` / ``btcusdt`` → ``BTCUSDT``."""
    return symbol.split(":", 1)[0].replace("/", "").replace("-", "").upper()
