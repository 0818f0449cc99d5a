"""Readers that turn candle CSV files into :class:`core.schemas.Candle` objects.

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
"""

from __future__ import annotations

import csv
import gzip
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import IO

from core.schemas import Candle, candle_problem
from core.series import SeriesError, Timeframe

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

# Times above this are microseconds: 1e14 ms is the year 5138, 1e14 µs is 1973.
_MICROS_THRESHOLD = 100_000_000_000_000

_BINANCE_HEADER = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)
_TABLE_HEADER = (
    "symbol",
    "interval",
    "timestamp",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trade_count",
)
_YAHOO_REQUIRED = ("open", "high", "low", "close", "volume")

# Timeframes a Binance dump can carry that storage.Timeframe understands, shortest first.
_BINANCE_TIMEFRAMES = (
    "1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "1w", "1M",
)  # fmt: skip

_KNOWN_QUOTES = (
    "USDT", "USDC", "FDUSD", "BUSD", "TUSD", "DAI", "BTC", "ETH", "BNB", "EUR", "TRY", "BRL",
)  # fmt: skip
_SYMBOL_TOKEN_RE = re.compile(r"^[A-Za-z0-9]{4,20}$")


class CsvFormatError(ValueError):
    """The file is not one of the recognised CSV layouts (the message names the file)."""


class CsvFormat(StrEnum):
    """The recognised CSV layouts."""

    BINANCE_KLINES = "binance_klines"
    BINANCE_TABLE = "binance_table"
    YAHOO = "yahoo"


@dataclass(frozen=True, slots=True)
class CsvRow:
    """One data row: ``candle`` when it is valid, else ``reason`` (a reject code) and ``detail``.

    The extra Binance fields are filled where the file has them (``None`` otherwise); times are
    always UTC epoch milliseconds, whatever unit the file used.
    """

    line: int
    candle: Candle | None
    reason: str | None = None
    detail: str | None = None
    close_time: int | None = None
    quote_volume: float | None = None
    taker_buy_volume: float | None = None
    taker_buy_quote_volume: float | None = None

    @property
    def ok(self) -> bool:
        return self.candle is not None


@dataclass(frozen=True, slots=True)
class CsvInfo:
    """What was detected about a file before reading its rows."""

    path: Path
    format: CsvFormat
    has_header: bool
    timeframe: Timeframe
    """From the file where it carries it (Binance: close - open + 1; table: ``interval``;
    Yahoo: 1d), unless the caller gave one."""
    symbol: str | None
    """Binance market id (``BTCUSDT``) from the ``symbol`` column or the file name, if known."""
    time_unit: str
    """``ms`` or ``us`` as found on the first data row (Binance dumps only; ``ms`` otherwise)."""


@dataclass(slots=True)
class CsvResult:
    """A whole file read: the accepted rows in file order and the rejects."""

    info: CsvInfo
    rows: list[CsvRow] = field(default_factory=list)
    rejects: list[CsvRow] = field(default_factory=list)

    @property
    def candles(self) -> list[Candle]:
        return [r.candle for r in self.rows if r.candle is not None]

    @property
    def reject_counts(self) -> dict[str, int]:
        """Number of rejected rows per reason code."""
        return dict(Counter(r.reason or "malformed" for r in self.rejects))


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
    return t // 1000 if t > _MICROS_THRESHOLD else t


def _parse_utc(text: str) -> int:
    dt = datetime.fromisoformat(text.strip())
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


class CsvFile:
    """A candle CSV whose layout has been detected; iterate :meth:`rows` or call :meth:`read`.

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
            with _open_text(self.path) as fh:
                out: list[list[str]] = []
                for row in csv.reader(fh):
                    if row and any(cell.strip() for cell in row):
                        out.append(row)
                    if len(out) >= n:
                        break
                return out
        except UnicodeDecodeError as e:
            raise CsvFormatError(f"{self.path}: not a text CSV file ({e})") from e

    def _detect(self, given: Timeframe | None) -> CsvInfo:
        head = self._head()
        if not head:
            raise CsvFormatError(f"{self.path}: empty file, expected a candle CSV")
        first = [c.strip() for c in head[0]]
        lowered = [c.lower() for c in first]
        if first[0].lstrip("-").isdigit() and len(first) >= 11:
            return self._detect_binance(head, has_header=False, given=given)
        if tuple(lowered[:11]) == _BINANCE_HEADER[:11]:
            return self._detect_binance(head[1:], has_header=True, given=given)
        if tuple(lowered) == _TABLE_HEADER:
            return self._detect_table(head[1:], given)
        if (
            lowered
            and lowered[0] in ("date", "datetime", "price")
            and all(k in lowered for k in _YAHOO_REQUIRED)
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
        tf, unit = given, "ms"
        for row in data:
            try:
                open_raw, close_raw = int(row[0]), int(row[6])
            except (ValueError, IndexError):
                continue
            unit = "us" if open_raw > _MICROS_THRESHOLD else "ms"
            if tf is None:
                tf = timeframe_from_close(_to_ms(open_raw), _to_ms(close_raw))
            if tf is not None:
                break
        if tf is None:
            raise CsvFormatError(
                f"{self.path}: cannot infer the timeframe of this Binance kline dump from "
                "close_time - open_time + 1; pass timeframe="
            )
        symbol = symbol_from_filename(self.path)
        return CsvInfo(self.path, CsvFormat.BINANCE_KLINES, has_header, tf, symbol, unit)

    def _detect_table(self, data: list[list[str]], given: Timeframe | None) -> CsvInfo:
        tf, symbol = given, None
        for row in data:
            if len(row) != len(_TABLE_HEADER):
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

    def rows(self) -> Iterator[CsvRow]:
        """Yield every data row, valid or not, in file order."""
        with _open_text(self.path) as fh:
            reader = csv.reader(fh)
            fmt = self.info.format
            if fmt is CsvFormat.BINANCE_KLINES:
                yield from self._binance_rows(_split_rows(fh))
            elif fmt is CsvFormat.BINANCE_TABLE:
                yield from self._table_rows(reader)
            else:
                yield from self._yahoo_rows(reader)

    def read(self) -> CsvResult:
        """Read the whole file into a :class:`CsvResult`."""
        result = CsvResult(self.info)
        good, bad = result.rows.append, result.rejects.append
        for row in self.rows():
            (good if row.candle is not None else bad)(row)
        return result

    def _check(
        self, line: int, candle: Candle, close_time: int, quote_volume: float | None = None
    ) -> CsvRow:
        reason = candle_problem(candle, self.info.timeframe, self.now_ms)
        if reason is not None:
            return CsvRow(line, None, reason, f"{candle}", close_time, quote_volume)
        return CsvRow(line, candle, None, None, close_time, quote_volume)

    def _binance_rows(self, reader: Iterator[list[str]]) -> Iterator[CsvRow]:
        tf, now_ms = self.info.timeframe, self.now_ms
        # Fixed frames close after exactly tf.ms; weeks and months go through Timeframe.
        fixed_ms = 0 if tf.monthly or tf.text == "1w" else tf.ms
        skip_header = self.info.has_header
        line = 0
        for row in reader:
            line += 1
            if skip_header:
                skip_header = False
                continue
            if not row:
                continue
            if len(row) < 11:
                yield CsvRow(line, None, "malformed", f"{len(row)} columns, expected 12")
                continue
            try:
                open_time = _to_ms(int(row[0]))
                close_time = _to_ms(int(row[6]))
                candle = Candle(
                    open_time,
                    float(row[1]),
                    float(row[2]),
                    float(row[3]),
                    float(row[4]),
                    float(row[5]),
                    int(row[8]),
                )
                quote, tb_base, tb_quote = float(row[7]), float(row[9]), float(row[10])
            except ValueError as e:
                yield CsvRow(line, None, "malformed", str(e))
                continue
            # A misaligned open is reported as such by candle_problem below.
            if fixed_ms:
                aligned = open_time % fixed_ms == 0
                expected = open_time + fixed_ms - 1 if aligned else close_time
            else:
                aligned = tf.is_aligned(open_time)
                expected = tf.close_time(open_time) if aligned else close_time
            if close_time != expected:
                yield CsvRow(
                    line,
                    None,
                    "wrong_interval",
                    f"close_time {close_time} does not close a {tf} candle opening at {open_time}",
                )
                continue
            reason = candle_problem(candle, tf, now_ms)
            yield CsvRow(
                line,
                None if reason else candle,
                reason,
                f"{candle}" if reason else None,
                close_time,
                quote,
                tb_base,
                tb_quote,
            )

    def _table_rows(self, reader: Iterator[list[str]]) -> Iterator[CsvRow]:
        tf, symbol = self.info.timeframe, self.info.symbol
        next(reader, None)
        line = 1
        for row in reader:
            line += 1
            if not row:
                continue
            if len(row) != len(_TABLE_HEADER):
                yield CsvRow(line, None, "malformed", f"{len(row)} columns, expected 10")
                continue
            if symbol is not None and row[0].strip().upper() != symbol:
                yield CsvRow(line, None, "wrong_symbol", f"{row[0]!r}, file is {symbol}")
                continue
            if row[1].strip() != tf.text:
                yield CsvRow(line, None, "wrong_interval", f"{row[1]!r}, file is {tf}")
                continue
            try:
                open_time = _parse_utc(row[2])
                candle = Candle(
                    open_time,
                    float(row[3]),
                    float(row[4]),
                    float(row[5]),
                    float(row[6]),
                    float(row[7]),
                    int(row[9]) if row[9].strip() else None,
                )
                quote = float(row[8]) if row[8].strip() else None
            except ValueError as e:
                yield CsvRow(line, None, "malformed", str(e))
                continue
            yield self._check(line, candle, tf.close_time(open_time), quote)

    def _yahoo_rows(self, reader: Iterator[list[str]]) -> Iterator[CsvRow]:
        tf = self.info.timeframe
        header = [c.strip().lower() for c in next(reader, [])]
        cols = {name: header.index(name) for name in _YAHOO_REQUIRED}
        line = 1
        for row in reader:
            line += 1
            if not row:
                continue
            # yfinance >= 0.2.5x writes extra "Ticker,..." and "Date,,,," header lines.
            if row[0].strip().lower() in ("ticker", "date", "datetime"):
                continue
            try:
                open_time = _parse_utc(row[0])
                candle = Candle(
                    open_time,
                    float(row[cols["open"]]),
                    float(row[cols["high"]]),
                    float(row[cols["low"]]),
                    float(row[cols["close"]]),
                    float(row[cols["volume"]]),
                )
            except (ValueError, IndexError) as e:
                yield CsvRow(line, None, "malformed", str(e))
                continue
            yield self._check(line, candle, tf.close_time(open_time))


def _open_text(path: Path) -> IO[str]:
    """Open a CSV as text; a ``.gz`` file (how large data ships) is read through gzip."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", newline="", encoding="utf-8-sig")
    return path.open(newline="", encoding="utf-8-sig")


def _split_rows(fh: Iterator[str]) -> Iterator[list[str]]:
    """What ``csv.reader`` yields for a file of unquoted rows (Binance's kline dumps), at a
    third of its cost; a line with a quote goes through ``csv.reader`` itself. (A quoted field
    spanning lines does not occur in a kline dump: such a file reads as malformed rows.)"""
    for line in fh:
        text = line.rstrip("\r\n")
        if '"' in text:
            yield from csv.reader([text])
        else:
            yield text.split(",") if text else []


def open_csv(path: str | Path, *, timeframe: Timeframe | str | None = None) -> CsvFile:
    """Detect the layout of ``path`` (raises :class:`CsvFormatError`) without reading its rows."""
    return CsvFile(path, timeframe=timeframe)


def read_csv(
    path: str | Path, *, timeframe: Timeframe | str | None = None, now_ms: int | None = None
) -> CsvResult:
    """Read a whole candle CSV (any recognised layout) into candles and counted rejects."""
    return CsvFile(path, timeframe=timeframe, now_ms=now_ms).read()
