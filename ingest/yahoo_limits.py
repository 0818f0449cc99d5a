"""What Yahoo Finance's chart API will serve: intervals, how far back, how much per request.

Yahoo keeps intraday candles for a limited time and refuses requests that reach further back or
span too much at once, with an error that names neither our timeframe nor a way out. This module
turns a requested range into the requests Yahoo will answer (:func:`plan_range`), or into a
:class:`YahooRangeError` that says what is out of reach and what to use instead.

===========  ==============  ====================  ==========================
timeframe    Yahoo interval  kept for              longest range per request
===========  ==============  ====================  ==========================
1m           1m              the last 30 days      7 days
2m, 5m, 15m  same            the last 60 days      60 days
30m, 90m     same            the last 60 days      60 days
1h           1h (= 60m)      the last 730 days     730 days
1d, 1w, 1M   1d, 1wk, 1mo    everything            everything
===========  ==============  ====================  ==========================
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from core.series import Timeframe

__all__ = [
    "EARLIEST_MS",
    "YAHOO_INTERVALS",
    "RangePlan",
    "YahooInterval",
    "YahooRangeError",
    "plan_range",
    "yahoo_interval",
]

DAY_MS = 86_400_000

# Requested start when none is given for a timeframe Yahoo keeps forever. Not 0: yfinance tests
# `if start:` and would silently turn an epoch-0 start into "one month before the end".
EARLIEST_MS = DAY_MS

# Yahoo judges its retention window on its own clock, a little after ours by the time a request
# (or the last chunk of a long backfill) reaches it; a start exactly on the edge gets refused.
CLOCK_MARGIN_MS = 10 * 60_000


class YahooRangeError(ValueError):
    """A timeframe Yahoo does not offer, or a range none of which Yahoo still keeps."""


@dataclass(frozen=True, slots=True)
class YahooInterval:
    """One of Yahoo's chart intervals and its limits (``None``: unlimited)."""

    interval: str
    window_ms: int | None
    """How far back from now Yahoo keeps candles of this interval."""
    span_ms: int | None
    """The longest range one chart request may cover."""

    @property
    def window_text(self) -> str:
        return (
            "all history" if self.window_ms is None else f"the last {self.window_ms // DAY_MS} days"
        )


YAHOO_INTERVALS: dict[str, YahooInterval] = {
    "1m": YahooInterval("1m", 30 * DAY_MS, 7 * DAY_MS),
    "2m": YahooInterval("2m", 60 * DAY_MS, 60 * DAY_MS),
    "5m": YahooInterval("5m", 60 * DAY_MS, 60 * DAY_MS),
    "15m": YahooInterval("15m", 60 * DAY_MS, 60 * DAY_MS),
    # yfinance fetches 30m as 15m and resamples (a Yahoo bug returns 60m bars for 30m), so 30m
    # lives under 15m's limits.
    "30m": YahooInterval("30m", 60 * DAY_MS, 60 * DAY_MS),
    "90m": YahooInterval("90m", 60 * DAY_MS, 60 * DAY_MS),
    "1h": YahooInterval("1h", 730 * DAY_MS, 730 * DAY_MS),
    "1d": YahooInterval("1d", None, None),
    "1w": YahooInterval("1wk", None, None),
    "1M": YahooInterval("1mo", None, None),
}


def yahoo_interval(timeframe: Timeframe) -> YahooInterval:
    """Yahoo's interval for ``timeframe``; :class:`YahooRangeError` when Yahoo has none."""
    spec = YAHOO_INTERVALS.get(timeframe.text)
    if spec is None:
        offered = ", ".join(YAHOO_INTERVALS)
        raise YahooRangeError(
            f"Yahoo Finance does not offer {timeframe.text} candles; it offers {offered} "
            f"(use --source ccxt for {timeframe.text})"
        )
    return spec


@dataclass(frozen=True, slots=True)
class RangePlan:
    """The requests that fetch ``[start_ms, end_ms)`` from Yahoo, in order."""

    timeframe: Timeframe
    interval: YahooInterval
    start_ms: int
    """First open time fetched (aligned to the timeframe, after any clipping)."""
    end_ms: int
    """Exclusive end of the open times fetched."""
    clipped_from: int | None
    """The requested start when it lay before Yahoo's window and was moved up to it."""
    chunks: tuple[tuple[int, int], ...]


def fmt_ms(ms: int) -> str:
    """``2024-01-01`` for a midnight, else ``2024-01-01 12:30`` (UTC)."""
    dt = datetime.fromtimestamp(ms / 1000, UTC)
    return dt.strftime("%Y-%m-%d") if ms % DAY_MS == 0 else dt.strftime("%Y-%m-%d %H:%M")


def plan_range(
    timeframe: Timeframe, start_ms: int | None, end_ms: int | None, now_ms: int
) -> RangePlan:
    """Split ``[start_ms, end_ms)`` into requests Yahoo answers, judged at ``now_ms``.

    ``end_ms`` defaults to (and is capped at) ``now_ms``. ``start_ms`` defaults to the oldest
    candle Yahoo keeps. A range that begins before Yahoo's window but reaches into it is clipped
    to the window (``clipped_from`` says so); one that lies wholly before it raises
    :class:`YahooRangeError`, as does a timeframe Yahoo does not offer or ``start >= end``.
    """
    spec = yahoo_interval(timeframe)
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        raise YahooRangeError(
            f"empty range: start {fmt_ms(start_ms)} is not before end {fmt_ms(end_ms)}"
        )
    end = now_ms if end_ms is None else min(end_ms, now_ms)
    clipped_from: int | None = None
    if spec.window_ms is None:
        start = EARLIEST_MS if start_ms is None else start_ms
    else:
        oldest = _align_up(timeframe, now_ms - spec.window_ms + CLOCK_MARGIN_MS)
        if end <= oldest:
            asked = fmt_ms(start_ms) if start_ms is not None else "?"
            raise YahooRangeError(
                f"Yahoo keeps {timeframe.text} candles for {spec.window_text} only (requested "
                f"{asked} to {fmt_ms(end)} UTC; the oldest it still has opens at "
                f"{fmt_ms(oldest)} UTC); use --source ccxt for older {timeframe.text} history"
            )
        if start_ms is None:
            start = oldest
        elif start_ms < oldest:
            start, clipped_from = oldest, start_ms
        else:
            start = start_ms
    start = _align_up(timeframe, start)
    if start >= end:
        # Nothing opens inside the range (e.g. it starts and ends within one candle).
        return RangePlan(timeframe, spec, start, max(start, end), clipped_from, ())
    chunks: list[tuple[int, int]] = []
    if spec.span_ms is None:
        chunks.append((start, end))
    else:
        a = start
        while a < end:
            b = min(a + spec.span_ms, end)
            chunks.append((a, b))
            a = b
    return RangePlan(timeframe, spec, start, end, clipped_from, tuple(chunks))


def _align_up(timeframe: Timeframe, t: int) -> int:
    """The first open time at or after ``t``."""
    floor = timeframe.open_time(timeframe.floor_index(t))
    return floor if floor == t else timeframe.next_open(floor)
