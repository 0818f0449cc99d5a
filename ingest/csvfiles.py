"""Readers that turn candle CSV files into candles (numpy columns, or :class:`Candle` objects).

Three layouts are recognised from the header (or the first row when there is none):

* ``binance_klines``: Binance's 12-column kline dumps (data.binance.vision): open_time, open,
  high, low, close, volume, close_time, quote_volume, count, taker_buy_volume,
  taker_buy_quote_volume, ignore; with or without a header row; times in milliseconds or, for
  spot dumps since 2025, microseconds (told apart per row by magnitude).
* ``binance_table``: symbol, interval, timestamp (``2023-01-01 00:00:00+00:00``), open, high, low,
  close, volume, quote_volume, trade_count.
* ``yahoo``: what yfinance writes: Date, Open, High, Low, Close, Adj Close, Volume (the newer
  three-line header, ``Price``/``Ticker``/``Date``, is accepted too).

A bad row never stops a read: it comes out as a reject with a reason code from
:data:`core.schemas.REJECT_REASONS` and its line number, so a backfill can count rejects per
reason. Only the row's own validity is judged here; whether the last row of a file is a
still-forming candle is for the caller to decide.

Real exchange data is taken as the exchange gives it. A candle is identified by its aligned open
time: a Binance candle whose close time falls before the end of its interval (the exchange
halted mid-candle) is a real candle and is kept, with its short close time; so is a flat
zero-volume candle across an outage. Only what is truly invalid is rejected (see
:func:`core.schemas.candle_problem`). Files are parsed and judged as columns
(:mod:`ingest.csvread`, :mod:`storage.columns`): about 1 µs of CPU a row, gzip included,
where reading row by row (:mod:`ingest.csvrows`, kept for malformed rows) costs 10 µs.
"""

from __future__ import annotations

import csv
import re
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from core.schemas import REJECT_REASONS
from core.series import SeriesError, Timeframe
from ingest import csvread, csvrows
from ingest.csvread import (
    BINANCE_HEADER,
    MICROS_THRESHOLD,
    TABLE_HEADER,
    YAHOO_REQUIRED,
    CsvFormatError,
    Parsed,
)
from ingest.csvresult import CsvFormat, CsvInfo, CsvResult, CsvRow
from storage.columns import (
    F64,
    OK,
    candle_problems,
    floor_indexes,
    open_times,
)

__all__ = [
    "CsvFile",
    "CsvFormat",
    "CsvFormatError",
    "CsvInfo",
    "CsvResult",
    "CsvRow",
    "open_csv",
    "read_csv",
    "symbol_from_filename",
    "timeframe_from_close",
]

# Timeframes a Binance dump can carry that storage.Timeframe understands, shortest first.
_BINANCE_TIMEFRAMES = (
    "1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "1w", "1M",
)  # fmt: skip

_KNOWN_QUOTES = (
    "USDT", "USDC", "FDUSD", "BUSD", "TUSD", "DAI", "BTC", "ETH", "BNB", "EUR", "TRY", "BRL",
)  # fmt: skip
_SYMBOL_TOKEN_RE = re.compile(r"^[A-Za-z0-9]{4,20}$")


def symbol_from_filename(path: str | Path) -> str | None:
    """Binance market id from a file name: ``linkusdt_binance_futures_1m_2026-02.csv`` → LINKUSDT.

    Also understands data.binance.vision names (``BTCUSDT-1m-2025-01.csv``). Returns ``None``
    when the first token of the name does not end in a known quote asset.
    """
    token = re.split(r"[-_.]", Path(path).name, maxsplit=1)[0]
    if not _SYMBOL_TOKEN_RE.match(token):
        return None
    upper = token.upper()
    for quote in _KNOWN_QUOTES:
        if upper.endswith(quote) and len(upper) > len(quote):
            return upper
    return None


def timeframe_from_close(open_ms: int, close_ms: int) -> Timeframe | None:
    """The timeframe whose Binance close time (last ms) for ``open_ms`` is ``close_ms``."""
    for text in _BINANCE_TIMEFRAMES:
        tf = Timeframe(text)
        if tf.is_aligned(open_ms) and tf.close_time(open_ms) == close_ms:
            return tf
    return None


def _to_ms(t: int) -> int:
    return t // 1000 if t > MICROS_THRESHOLD else t


class CsvFile:
    """A candle CSV whose layout has been detected; call :meth:`read` (or iterate :meth:`rows`).

    ``timeframe`` overrides the detected one (required only when it cannot be detected, e.g. a
    Binance dump without a single parseable row). ``now_ms``, when given, rejects candles that
    have not closed by then (reason ``future``).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        timeframe: Timeframe | str | None = None,
        now_ms: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.now_ms = now_ms
        given = Timeframe(timeframe) if isinstance(timeframe, str) else timeframe
        self.info = self._detect(given)

    # -- detection -------------------------------------------------------------------------

    def _head(self, n: int = 8) -> list[list[str]]:
        try:
            with csvread.open_text(self.path) as fh:
                out: list[list[str]] = []
                for row in csv.reader(fh):
                    if row and any(cell.strip() for cell in row):
                        out.append(row)
                    if len(out) >= n:
                        break
                return out
        except (UnicodeDecodeError, OSError, EOFError, zlib.error) as e:
            raise CsvFormatError(f"{self.path}: not a readable text CSV file ({e})") from e

    def _detect(self, given: Timeframe | None) -> CsvInfo:
        head = self._head()
        if not head:
            raise CsvFormatError(f"{self.path}: empty file, expected a candle CSV")
        first = [c.strip() for c in head[0]]
        lowered = [c.lower() for c in first]
        if first[0].lstrip("-").isdigit() and len(first) >= 11:
            return self._detect_binance(head, has_header=False, given=given)
        if tuple(lowered[:11]) == BINANCE_HEADER[:11]:
            return self._detect_binance(head[1:], has_header=True, given=given)
        if tuple(lowered) == TABLE_HEADER:
            return self._detect_table(head[1:], given)
        if (
            lowered
            and lowered[0] in ("date", "datetime", "price")
            and all(k in lowered for k in YAHOO_REQUIRED)
        ):
            return CsvInfo(self.path, CsvFormat.YAHOO, True, given or Timeframe("1d"), None, "ms")
        raise CsvFormatError(
            f"{self.path}: unrecognised CSV layout (first row {','.join(first)[:120]!r}); expected "
            "a Binance kline dump (open_time,open,high,low,close,volume,close_time,... with or "
            "without header), the Binance table (symbol,interval,timestamp,open,...,trade_count) "
            "or a Yahoo/yfinance file (Date,Open,High,Low,Close,Adj Close,Volume)"
        )

    def _detect_binance(
        self, data: list[list[str]], *, has_header: bool, given: Timeframe | None
    ) -> CsvInfo:
        # The timeframe most first rows close exactly; a row the exchange closed early looks
        # shorter than it is, so on a tie the longer frame wins.
        votes: Counter[Timeframe] = Counter()
        unit: str | None = None
        for row in data:
            try:
                open_raw, close_raw = int(row[0]), int(row[6])
            except (ValueError, IndexError):
                continue
            unit = unit or ("us" if open_raw > MICROS_THRESHOLD else "ms")
            tf = timeframe_from_close(_to_ms(open_raw), _to_ms(close_raw))
            if tf is not None:
                votes[tf] += 1
        found = max(votes, key=lambda t: (votes[t], t.ms)) if votes else None
        tf = given or found
        if tf is None:
            raise CsvFormatError(
                f"{self.path}: cannot infer the timeframe of this Binance kline dump from "
                "close_time - open_time + 1; pass timeframe="
            )
        symbol = symbol_from_filename(self.path)
        return CsvInfo(self.path, CsvFormat.BINANCE_KLINES, has_header, tf, symbol, unit or "ms")

    def _detect_table(self, data: list[list[str]], given: Timeframe | None) -> CsvInfo:
        tf, symbol = given, None
        for row in data:
            if len(row) != len(TABLE_HEADER):
                continue
            symbol = row[0].strip().upper() or None
            if tf is None:
                try:
                    tf = Timeframe(row[1].strip())
                except SeriesError:
                    continue
            break
        if tf is None:
            raise CsvFormatError(f"{self.path}: no valid interval found in the first rows")
        return CsvInfo(
            self.path,
            CsvFormat.BINANCE_TABLE,
            True,
            tf,
            symbol or symbol_from_filename(self.path),
            "ms",
        )

    # -- reading ---------------------------------------------------------------------------

    def parse(self) -> Parsed:
        """The file's rows as columns, not yet judged (vectorised where the file allows)."""
        if self.info.format is CsvFormat.YAHOO:
            return csvrows.yahoo_rows(self.path)
        return csvread.concat([self._parse_piece(p) for p in self._pieces()])

    def _pieces(self) -> Iterator[csvread.Piece]:
        return csvread.pieces(self.path, self.info.has_header)

    def _parse_piece(self, piece: csvread.Piece) -> Parsed:
        info = self.info
        if info.format is CsvFormat.BINANCE_KLINES:
            return csvread.binance_fast(piece) or csvrows.binance_rows(piece)
        tf = info.timeframe.text
        return csvread.table_fast(piece, info.symbol, tf) or csvrows.table_rows(
            piece, info.symbol, tf
        )

    def results(self) -> Iterator[CsvResult]:
        """The file judged piece by piece (about 1 MB each), in file order: what a backfill
        stores while the next piece is read."""
        if self.info.format is CsvFormat.YAHOO:
            yield self.read()
            return
        for piece in self._pieces():
            yield self.judge(self._parse_piece(piece))

    def read(self) -> CsvResult:
        """Read the whole file into a :class:`CsvResult`."""
        return self.judge(self.parse())

    def judge(self, p: Parsed) -> CsvResult:
        """Rows read from this file, judged: accepted candles and rejects with their reasons."""
        tf = self.info.timeframe
        codes = candle_problems(p.cols, tf, self.now_ms, p.close_time)
        ok = codes == OK
        nominal = open_times(tf, floor_indexes(tf, p.cols.open_time) + 1) - 1
        close = nominal if p.close_time is None else p.close_time
        rejects = [CsvRow(r.line, None, r.reason, r.detail) for r in p.rejects]
        for i in np.flatnonzero(~ok).tolist():
            reason = REJECT_REASONS[codes[i]]
            candle = p.cols.take(slice(i, i + 1)).candles()[0]
            detail = f"{candle}"
            if reason == "wrong_interval":
                detail = (
                    f"close_time {int(close[i])} is outside the {tf} candle opening at "
                    f"{candle.open_time}"
                )
            rejects.append(CsvRow(int(p.lines[i]), None, reason, detail, int(close[i])))
        rejects.sort(key=lambda r: r.line)

        def kept(a: F64 | None) -> F64 | None:
            return None if a is None else a[ok]

        return CsvResult(
            self.info,
            p.cols.take(ok),
            p.lines[ok],
            close[ok],
            kept(p.quote_volume),
            kept(p.taker_buy_volume),
            kept(p.taker_buy_quote_volume),
            rejects,
        )

    def rows(self) -> Iterator[CsvRow]:
        """Every data row, valid or not, in file order."""
        result = self.read()
        yield from sorted([*result.rows, *result.rejects], key=lambda r: r.line)


def open_csv(path: str | Path, *, timeframe: Timeframe | str | None = None) -> CsvFile:
    """Detect the layout of ``path`` (raises :class:`CsvFormatError`) without reading its rows."""
    return CsvFile(path, timeframe=timeframe)


def read_csv(
    path: str | Path, *, timeframe: Timeframe | str | None = None, now_ms: int | None = None
) -> CsvResult:
    """Read a whole candle CSV (any recognised layout) into candles and counted rejects."""
    return CsvFile(path, timeframe=timeframe, now_ms=now_ms).read()
