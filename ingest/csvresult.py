"""What reading a candle CSV yields: the layout detected, each row, and a whole file's result.

The readers are in :mod:`ingest.csvfiles`, which exports these types too.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np

from core.schemas import Candle
from core.series import Timeframe
from storage.columns import F64, I64, CandleColumns, floor_indexes, open_times

__all__ = ["CsvFormat", "CsvInfo", "CsvResult", "CsvRow"]


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
    """A whole file read: the accepted candles in file order (as columns and as rows) and the
    rejects."""

    info: CsvInfo
    columns: CandleColumns
    lines: I64
    """Line number in the file of each accepted candle."""
    close_times: I64
    """Close time (ms) of each accepted candle: the file's own, which for a candle the exchange
    closed early falls before the end of its interval; the nominal one where the file has none."""
    quote_volume: F64 | None = None
    taker_buy_volume: F64 | None = None
    taker_buy_quote_volume: F64 | None = None
    rejects: list[CsvRow] = field(default_factory=list)
    _rows: list[CsvRow] | None = field(default=None, repr=False)

    @property
    def rows(self) -> list[CsvRow]:
        """The accepted rows as :class:`CsvRow` objects (built on first use)."""
        if self._rows is None:
            extras = [
                [None] * len(self.lines)
                if a is None
                else [None if math.isnan(v) else v for v in a.tolist()]
                for a in (self.quote_volume, self.taker_buy_volume, self.taker_buy_quote_volume)
            ]
            self._rows = [
                CsvRow(line, c, None, None, close, q, tb, tq)
                for line, c, close, q, tb, tq in zip(
                    self.lines.tolist(),
                    self.columns.candles(),
                    self.close_times.tolist(),
                    *extras,
                    strict=True,
                )
            ]
        return self._rows

    @property
    def candles(self) -> list[Candle]:
        """The accepted candles as objects (built on every call: keep the list)."""
        return self.columns.candles()

    @property
    def reject_counts(self) -> dict[str, int]:
        """Number of rejected rows per reason code."""
        return dict(Counter(r.reason or "malformed" for r in self.rejects))

    @property
    def short_closes(self) -> list[tuple[int, int]]:
        """``(open_time, close_time)`` of the accepted candles that closed before the end of
        their interval (the exchange halted mid-candle)."""
        tf = self.info.timeframe
        nominal = open_times(tf, floor_indexes(tf, self.columns.open_time) + 1) - 1
        short = np.flatnonzero(self.close_times < nominal)
        return [(int(self.columns.open_time[i]), int(self.close_times[i])) for i in short.tolist()]
