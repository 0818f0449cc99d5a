"""Yahoo Finance history through yfinance, as validated :class:`Candle` objects.

``cryptocast backfill --source yahoo`` calls :func:`fetch_yahoo`. Yahoo's history is its own
series (``yahoo:BTC-USD:1d``, Yahoo's aggregated price), never merged into an exchange's.

The fetch goes through yfinance's own code path (``yf.Ticker(symbol, session=...).history``):
its cookie and crumb handshake (``fc.yahoo.com``, ``/v1/test/getcrumb``), its timezone lookup and
its chart request (``/v8/finance/chart/{symbol}?period1=&period2=&interval=``), so Yahoo sees the
client it expects. yfinance's own "repairs" and adjustments are switched off: we want Yahoo's
rows as sent, and judge them ourselves.

Ranges are planned by :mod:`ingest.yahoo_limits` (Yahoo keeps 1m candles for 30 days, at most 7
days per request, and so on); a range Yahoo no longer keeps raises
:class:`~ingest.yahoo_limits.YahooRangeError`. Open times are the rows' timestamps in UTC; Yahoo's
crypto rows open at 00:00 UTC for 1d. Symbols quoted on an exchange in another timezone (stocks)
have daily rows at the exchange's midnight: those are rejected as ``misaligned``.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import structlog
import yfinance as yf
from yfinance.exceptions import YFException, YFPricesMissingError, YFRateLimitError

from core.schemas import Candle, candle_problem
from core.series import SeriesId, Timeframe
from ingest.yahoo_limits import (
    YAHOO_INTERVALS,
    RangePlan,
    YahooInterval,
    YahooRangeError,
    fmt_ms,
    plan_range,
    yahoo_interval,
)

__all__ = [
    "VOLUME_OUTLIER_FACTOR",
    "VOLUME_OUTLIER_NEIGHBOURS",
    "YAHOO_INTERVALS",
    "YahooError",
    "YahooFetchError",
    "YahooInterval",
    "YahooRangeError",
    "YahooResult",
    "fetch_yahoo",
    "plan_range",
    "volume_outliers",
    "yahoo_interval",
]

log = structlog.get_logger(__name__)

VOLUME_OUTLIER_FACTOR = 1_000.0
VOLUME_OUTLIER_NEIGHBOURS = 10
"""Neighbours looked at on each side of a candle by the volume-outlier rule."""
_MIN_NEIGHBOURS = 3
_REQUEST_TIMEOUT_S = 30
_COLUMNS = ("Open", "High", "Low", "Close", "Volume")


class YahooError(RuntimeError):
    """Base of the errors this module raises (besides :class:`YahooRangeError`)."""


class YahooFetchError(YahooError):
    """Yahoo could not be reached, refused a request, or rate-limited us."""


@dataclass(frozen=True, slots=True)
class YahooResult:
    """What one :func:`fetch_yahoo` call got."""

    symbol: str
    timeframe: Timeframe
    interval: str
    """Yahoo's interval name (``1d``, ``1wk``, ``1h``...)."""
    candles: list[Candle]
    """Valid, closed candles, ordered by open time, one per open time."""
    rejected: dict[str, int]
    """Rows rejected, per reason code from :data:`core.schemas.REJECT_REASONS`."""
    forming_dropped: int
    """Rows of the still-forming candle (the one containing ``now_ms``), left out, not rejects."""
    rows: int
    """Rows Yahoo returned inside the range (valid + rejected + forming + duplicates)."""
    requests: int
    """Chart requests made (one per chunk; the cookie/crumb/timezone calls are not counted)."""
    start_ms: int
    end_ms: int
    """The range fetched, ``[start_ms, end_ms)``, after alignment and clipping."""
    clipped_from: int | None = None
    """The requested start when Yahoo no longer keeps it and the range was moved up."""
    warnings: list[str] = field(default_factory=list)

    @property
    def series(self) -> SeriesId:
        """``yahoo:{symbol}:{timeframe}``: Yahoo history is a series of its own."""
        return SeriesId("yahoo", self.symbol, self.timeframe)


def fetch_yahoo(
    symbol: str,
    timeframe: Timeframe | str,
    start_ms: int | None,
    end_ms: int | None,
    *,
    now_ms: int,
    session: object | None = None,
    progress: Callable[[int], None] | None = None,
) -> YahooResult:
    """Fetch ``symbol``'s candles opening in ``[start_ms, end_ms)`` from Yahoo Finance.

    ``now_ms`` is the service clock: it bounds the range, decides which candle is still forming
    and which rows are in the future. ``session`` is passed to yfinance (a ``curl_cffi`` or
    ``requests`` session; ``None`` lets yfinance make its own). ``progress(n)`` is called after
    each chunk with the number of rows that chunk brought.

    Each row becomes a :class:`Candle` (volume as float, ``trades`` None) and is judged:

    * the row of the candle containing ``now_ms`` (Yahoo's last, still-forming row) is dropped
      and counted in ``forming_dropped``;
    * rows failing :func:`core.schemas.candle_problem` are counted in ``rejected`` under its
      reason (Yahoo's ``null`` rows come out ``not_finite``);
    * volume outliers: a candle whose volume exceeds ``VOLUME_OUTLIER_FACTOR`` (1,000) × the
      median volume of its valid neighbours (up to ``VOLUME_OUTLIER_NEIGHBOURS`` = 10 on each
      side, at least 3 in all, median > 0) is rejected as ``out_of_range``. A corrupt volume
      such as 324,790,476,452,723 among daily BTC-USD volumes of ~3e10 (~10,000×) is one; the
      largest genuine daily BTC-USD spike 2014-2022 is under 7× its neighbours' median.

    Raises :class:`YahooRangeError` for a timeframe Yahoo does not offer or a range Yahoo no
    longer keeps (a range only partly out of reach is clipped: see ``clipped_from``), and
    :class:`YahooFetchError` when a request fails. A bad row never raises.
    """
    tf = timeframe if isinstance(timeframe, Timeframe) else Timeframe(timeframe)
    plan = plan_range(tf, start_ms, end_ms, now_ms)
    notes: list[str] = []
    if plan.clipped_from is not None:
        note = (
            f"Yahoo keeps {tf.text} candles for {plan.interval.window_text} only: requested from "
            f"{fmt_ms(plan.clipped_from)}, fetching from {fmt_ms(plan.start_ms)} UTC "
            f"(use --source ccxt for older {tf.text} history)"
        )
        notes.append(note)
        log.warning(
            "yahoo.range_clipped",
            symbol=symbol,
            timeframe=tf.text,
            requested_start=plan.clipped_from,
            start=plan.start_ms,
        )

    # yfinance wants a session object of its supported kinds; None means "make your own".
    ticker = yf.Ticker(symbol, session=session)
    now_index = tf.floor_index(now_ms)
    kept: dict[int, Candle] = {}
    rejected: Counter[str] = Counter()
    forming = rows = 0
    for chunk_start, chunk_end in plan.chunks:
        raw = _fetch_chunk(ticker, symbol, plan, chunk_start, chunk_end)
        in_range = [c for c in raw if plan.start_ms <= c.open_time < plan.end_ms]
        rows += len(in_range)
        for c in in_range:
            if tf.floor_index(c.open_time) == now_index:
                forming += 1
                continue
            reason = candle_problem(c, tf, now_ms)
            if reason is not None:
                rejected[reason] += 1
            elif c.open_time not in kept:
                kept[c.open_time] = c
        log.debug(
            "yahoo.chunk",
            symbol=symbol,
            interval=plan.interval.interval,
            start=chunk_start,
            end=chunk_end,
            rows=len(in_range),
        )
        if progress is not None:
            progress(len(in_range))

    ordered = [kept[t] for t in sorted(kept)]
    outliers = set(volume_outliers([c.volume for c in ordered]))
    for i in sorted(outliers):
        c = ordered[i]
        log.warning(
            "yahoo.volume_outlier",
            symbol=symbol,
            timeframe=tf.text,
            open_time=c.open_time,
            volume=c.volume,
        )
    rejected["out_of_range"] += len(outliers)
    candles = [c for i, c in enumerate(ordered) if i not in outliers]
    result = YahooResult(
        symbol=symbol,
        timeframe=tf,
        interval=plan.interval.interval,
        candles=candles,
        rejected={k: v for k, v in rejected.items() if v},
        forming_dropped=forming,
        rows=rows,
        requests=len(plan.chunks),
        start_ms=plan.start_ms,
        end_ms=plan.end_ms,
        clipped_from=plan.clipped_from,
        warnings=notes,
    )
    log.info(
        "yahoo.fetched",
        symbol=symbol,
        timeframe=tf.text,
        candles=len(candles),
        rejected=result.rejected,
        forming_dropped=forming,
        requests=result.requests,
    )
    return result


def volume_outliers(
    volumes: Sequence[float],
    factor: float = VOLUME_OUTLIER_FACTOR,
    neighbours: int = VOLUME_OUTLIER_NEIGHBOURS,
) -> list[int]:
    """Indexes of volumes above ``factor`` × the median of their neighbours.

    The neighbours of ``volumes[i]`` are up to ``neighbours`` values on each side, itself
    excluded; at least 3 are needed and their median must be positive, else ``i`` is not judged
    (a run of zero-volume candles says nothing about what a normal volume is).
    """
    out: list[int] = []
    for i, v in enumerate(volumes):
        around = [*volumes[max(0, i - neighbours) : i], *volumes[i + 1 : i + 1 + neighbours]]
        if len(around) < _MIN_NEIGHBOURS:
            continue
        median = statistics.median(around)
        if median > 0 and v > factor * median:
            out.append(i)
    return out


def _fetch_chunk(
    ticker: Any, symbol: str, plan: RangePlan, start_ms: int, end_ms: int
) -> list[Candle]:
    """One chart request through yfinance; rows as candles, not yet judged."""
    interval = plan.interval.interval
    where = f"{symbol} {interval} {fmt_ms(start_ms)} to {fmt_ms(end_ms)} UTC"
    try:
        # raise_errors is deprecated in favour of the process-wide yf.config.debug switch;
        # the per-call flag keeps other yfinance users' settings untouched. Without it yfinance
        # logs a failed request and returns an empty frame, which would pass for "no data".
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*raise_errors", category=DeprecationWarning)
            df = ticker.history(
                interval=interval,
                start=start_ms // 1000,
                end=-(-end_ms // 1000),
                # Crypto trades around the clock: no pre/post sessions to strip, and stripping
                # needs tradingPeriods metadata Yahoo may not send for crypto.
                prepost=True,
                auto_adjust=False,
                back_adjust=False,
                actions=False,
                repair=False,
                # Keep Yahoo's null rows so they are counted as rejects, not silently lost.
                keepna=True,
                rounding=False,
                timeout=_REQUEST_TIMEOUT_S,
                raise_errors=True,
            )
    except YFPricesMissingError as e:
        if e.yahoo_reason is None:
            # Yahoo answered with no rows: nothing traded in this range (e.g. before listing).
            return []
        raise YahooFetchError(f"Yahoo refused {where}: {e.yahoo_reason}") from e
    except YFRateLimitError as e:
        raise YahooFetchError(f"Yahoo rate-limited the request for {where}; retry later") from e
    except YFException as e:
        raise YahooFetchError(f"Yahoo request for {where} failed: {e}") from e
    except Exception as e:
        # Transport errors come from curl_cffi or requests, whichever backs the session.
        raise YahooFetchError(f"Yahoo request for {where} failed: {type(e).__name__}: {e}") from e
    return _frame_to_candles(df)


def _frame_to_candles(df: pd.DataFrame) -> list[Candle]:
    if df is None or df.empty:
        return []
    index = pd.DatetimeIndex(df.index)
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    times = index.as_unit("ms").asi8
    cols = [df[name].to_numpy(dtype=float, na_value=math.nan) for name in _COLUMNS]
    return [
        Candle(int(t), float(o), float(h), float(lo), float(c), float(v))
        for t, o, h, lo, c, v in zip(times, *cols, strict=True)
    ]
