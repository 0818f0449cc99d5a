"""The row-by-row CSV readers: for pieces the vectorised reader (:mod:`ingest.csvread`) does not
take (a malformed cell, a short row, quotes, blank lines) and for Yahoo files. Every row becomes
values or a :class:`~ingest.csvread.Reject` with its line number; nothing here judges values."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ingest.csvread import (
    MICROS_THRESHOLD,
    TABLE_HEADER,
    YAHOO_REQUIRED,
    Parsed,
    Piece,
    Reject,
    open_text,
    parse_utc,
)
from storage.columns import BAD_TRADES, F64, UNKNOWN_TRADES, CandleColumns


class _Rows:
    """Accumulates rows read one by one into the columns of a :class:`Parsed`."""

    def __init__(self, extras: int) -> None:
        self.values: list[tuple[Any, ...]] = []
        self.lines: list[int] = []
        self.extras = extras
        self.rejects: list[Reject] = []

    def add(self, line: int, values: tuple[Any, ...]) -> None:
        self.values.append(values)
        self.lines.append(line)

    def reject(self, line: int, reason: str, detail: str) -> None:
        self.rejects.append(Reject(line, reason, detail))

    def parsed(self, with_close: bool) -> Parsed:
        n = len(self.values)
        width = 7 + (1 if with_close else 0) + self.extras
        cols = list(zip(*self.values, strict=True)) if n else [()] * width
        trades = np.array(
            [UNKNOWN_TRADES if t is None else BAD_TRADES if t < 0 else t for t in cols[6]],
            dtype=np.int64,
        )
        f = [np.array(cols[k], dtype=np.float64) for k in range(1, 6)]
        candles = CandleColumns(
            np.array(cols[0], dtype=np.int64), f[0], f[1], f[2], f[3], f[4], trades
        )
        k = 7
        close = None
        if with_close:
            close, k = np.array(cols[7], dtype=np.int64), 8
        extra: list[F64 | None] = [
            np.array(cols[k + j], dtype=np.float64) for j in range(self.extras)
        ]
        extra += [None] * (3 - len(extra))
        return Parsed(
            candles,
            np.array(self.lines, dtype=np.int64),
            close,
            extra[0],
            extra[1],
            extra[2],
            rejects=self.rejects,
        )


def _records(piece: Piece) -> Iterator[tuple[int, list[str]]]:
    """``(line number, cells)`` of every CSV record of the piece, as ``csv.reader`` reads them
    (a quoted field may span lines: its record is numbered by its first line); a piece without
    quotes is split by hand, at a third of csv.reader's cost. Undecodable bytes become U+FFFD:
    such a row is then malformed, not the end of the read."""
    text = piece.data.decode("utf-8", errors="replace")
    first = piece.first_line
    if '"' not in text:
        for i, line in enumerate(io.StringIO(text, newline="")):
            cells = line.rstrip("\r\n")
            yield first + i, cells.split(",") if cells else []
        return
    reader = csv.reader(io.StringIO(text, newline=""))
    before = 0
    for row in reader:
        yield first + before, row
        before = reader.line_num


def _big_int(text: str) -> int:
    """``int`` that refuses what int64 columns cannot hold (a corrupt time or count)."""
    n = int(text)
    if not -(2**63) <= n < 2**63:
        raise ValueError(f"{text[:30]} is out of range")
    return n


def binance_rows(piece: Piece) -> Parsed:
    """A piece of a Binance kline dump read row by row."""
    acc = _Rows(3)
    for line, row in _records(piece):
        if (line == piece.first_line and piece.header) or not row:
            continue
        if len(row) < 11:
            acc.reject(line, "malformed", f"{len(row)} columns, expected 12")
            continue
        try:
            open_raw, close_raw = _big_int(row[0]), _big_int(row[6])
            values = (
                open_raw // 1000 if open_raw > MICROS_THRESHOLD else open_raw,
                *(float(row[k]) for k in range(1, 6)),
                _big_int(row[8]),
                close_raw // 1000 if close_raw > MICROS_THRESHOLD else close_raw,
                float(row[7]),
                float(row[9]),
                float(row[10]),
            )
        except ValueError as e:
            acc.reject(line, "malformed", str(e))
            continue
        acc.add(line, values)
    return acc.parsed(with_close=True)


def table_rows(piece: Piece, symbol: str | None, interval: str) -> Parsed:
    """A piece of a Binance table file read row by row."""
    acc = _Rows(1)
    for line, row in _records(piece):
        if (line == piece.first_line and piece.header) or not row:
            continue
        if len(row) != len(TABLE_HEADER):
            acc.reject(line, "malformed", f"{len(row)} columns, expected 10")
        elif symbol is not None and row[0].strip().upper() != symbol:
            acc.reject(line, "wrong_symbol", f"{row[0]!r}, file is {symbol}")
        elif row[1].strip() != interval:
            acc.reject(line, "wrong_interval", f"{row[1]!r}, file is {interval}")
        else:
            try:
                values = (
                    parse_utc(row[2]),
                    *(float(row[k]) for k in range(3, 8)),
                    _big_int(row[9]) if row[9].strip() else None,
                    float(row[8]) if row[8].strip() else float("nan"),
                )
            except ValueError as e:
                acc.reject(line, "malformed", str(e))
                continue
            acc.add(line, values)
    return acc.parsed(with_close=False)


def yahoo_rows(path: Path) -> Parsed:
    """A Yahoo / yfinance file (any of its header layouts) read row by row."""
    acc = _Rows(0)
    with open_text(path) as fh:
        reader = csv.reader(fh)
        header = [c.strip().lower() for c in next(reader, [])]
        idx = [header.index(name) for name in YAHOO_REQUIRED]
        line = 1
        for row in reader:
            line += 1
            if not row:
                continue
            # yfinance >= 0.2.5x writes extra "Ticker,..." and "Date,,,," header lines.
            if row[0].strip().lower() in ("ticker", "date", "datetime"):
                continue
            try:
                values = (parse_utc(row[0]), *(float(row[k]) for k in idx), None)
            except (ValueError, IndexError) as e:
                acc.reject(line, "malformed", str(e))
                continue
            acc.add(line, values)
    return acc.parsed(with_close=False)
