"""Parsing of candle CSV files into columns, for :mod:`ingest.csvfiles`.

A file is read in pieces of whole lines (:func:`pieces`, ``.gz`` inflated on the way), and each
piece by one of two readers that give the same result:

* the vectorised one here: pyarrow's CSV reader (C++) with every column typed, for a piece that
  is exactly what exchanges publish: no quotes, no blank lines, every cell a number where a
  number belongs. Real Binance dumps and tables take this path.
* the row-by-row one (:mod:`ingest.csvrows`, about 10 µs a row) for anything else: a piece with
  a malformed cell or a short row, where each bad row must be reported as such with its line
  number, and Yahoo files (a few thousand daily rows, three header layouts).

Neither judges a candle's values: that is :func:`storage.columns.candle_problems`, for all.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from storage.columns import BAD_TRADES, F64, I64, UNKNOWN_TRADES, CandleColumns

# Times above this are microseconds: 1e14 ms is the year 5138, 1e14 µs is 1973.
MICROS_THRESHOLD = 100_000_000_000_000

BINANCE_HEADER = (
    "open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "count",
    "taker_buy_volume", "taker_buy_quote_volume", "ignore",
)  # fmt: skip
TABLE_HEADER = (
    "symbol", "interval", "timestamp", "open", "high", "low", "close", "volume", "quote_volume",
    "trade_count",
)  # fmt: skip
YAHOO_REQUIRED = ("open", "high", "low", "close", "volume")


class CsvFormatError(ValueError):
    """The file is not one of the recognised CSV layouts (the message names the file)."""


@dataclass(frozen=True, slots=True)
class Reject:
    """A row refused before its values were judged (it could not be read as a candle)."""

    line: int
    reason: str
    detail: str


@dataclass(slots=True)
class Parsed:
    """Every row that could be read as a candle, as columns, and the rows that could not.

    ``close_time`` is the file's own (ms) where it has one, ``None`` for layouts that identify a
    candle by its open time only; the extra Binance columns are ``None`` where absent, NaN for a
    row that lacks them."""

    cols: CandleColumns
    lines: I64
    close_time: I64 | None = None
    quote_volume: F64 | None = None
    taker_buy_volume: F64 | None = None
    taker_buy_quote_volume: F64 | None = None
    rejects: list[Reject] = field(default_factory=list)
    vectorised: bool = False


def concat(parts: list[Parsed]) -> Parsed:
    """The pieces of one file as one."""
    if len(parts) == 1:
        return parts[0]

    def cat(arrays: list[Any]) -> Any:
        return None if arrays[0] is None else np.concatenate(arrays)

    cols = CandleColumns(
        *(np.concatenate([getattr(p.cols, n) for p in parts]) for n in CandleColumns.__slots__)
    )
    return Parsed(
        cols,
        np.concatenate([p.lines for p in parts]),
        cat([p.close_time for p in parts]),
        cat([p.quote_volume for p in parts]),
        cat([p.taker_buy_volume for p in parts]),
        cat([p.taker_buy_quote_volume for p in parts]),
        [r for p in parts for r in p.rejects],
        all(p.vectorised for p in parts),
    )


def to_ms(t: I64) -> I64:
    """Epoch times in ms, whether each was written in ms or µs (spot dumps since 2025)."""
    return np.where(t > MICROS_THRESHOLD, t // 1000, t)


def parse_utc(text: str) -> int:
    dt = datetime.fromisoformat(text.strip())
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def open_text(path: Path) -> IO[str]:
    """Open a CSV as text; a ``.gz`` file (how large data ships) is read through gzip."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", newline="", encoding="utf-8-sig")
    return path.open(newline="", encoding="utf-8-sig")


@dataclass(frozen=True, slots=True)
class Piece:
    """Consecutive whole lines of a file (decompressed), from line ``first_line`` on."""

    data: bytes
    first_line: int
    header: bool
    """Whether the piece starts with the file's header row."""
    newlines: int
    quoted: bool
    """Whether a ``"`` occurs in it (then it is read row by row, as csv.reader reads it)."""

    @classmethod
    def of(cls, data: bytes, first_line: int, header: bool) -> Piece:
        return cls(data, first_line, header, data.count(b"\n"), data.find(b'"') >= 0)


_BOM = b"\xef\xbb\xbf"


def pieces(
    path: Path, has_header: bool, *, first_size: int = 1 << 16, size: int = 1 << 20
) -> Iterator[Piece]:
    """The file in pieces of whole lines, ``.gz`` decompressed on the way: ``first_size`` bytes,
    then twice as many each time up to ``size``. A backfill stores each piece while a thread
    reads the next (zlib and pyarrow release the GIL): small first pieces let it start storing
    soon, and each piece is read in about the time the previous one takes to store."""
    line, want, buf = 1, first_size, b""
    with path.open("rb") as fh:
        for data in _decompressed(fh, path):
            buf += data
            if line == 1 and buf.startswith(_BOM):
                buf = buf[len(_BOM) :]
            while len(buf) >= want:
                cut = buf.rfind(b"\n", 0, want) + 1 or buf.find(b"\n", want) + 1
                # never inside a quoted field (an odd number of quotes before the cut): a
                # record spanning lines stays in one piece, as csv.reader reads it
                while cut > 0 and buf.find(b'"', 0, cut) >= 0 and buf.count(b'"', 0, cut) % 2:
                    cut = buf.find(b"\n", cut) + 1
                if cut <= 0:  # no line end yet: a very long line (or quoted field)
                    break
                piece, buf = buf[:cut], buf[cut:]
                part = Piece.of(piece, line, has_header and line == 1)
                yield part
                line += part.newlines
                want = min(size, want * 2)
    if buf or line == 1:
        yield Piece.of(buf, line, has_header and line == 1)


def _decompressed(fh: IO[bytes], path: Path, block: int = 1 << 18) -> Iterator[bytes]:
    if path.suffix != ".gz":
        while data := fh.read(block):
            yield data
        return
    d = zlib.decompressobj(wbits=31)
    try:
        while data := fh.read(block):
            while data:
                yield d.decompress(data)
                # a file of several gzip members (cat a.gz b.gz) goes on with the next member
                data = d.unused_data if d.eof else b""
                if d.eof:
                    d = zlib.decompressobj(wbits=31)
        yield d.flush()
    except zlib.error as e:
        raise CsvFormatError(f"{path}: not a valid gzip file ({e})") from None


def _arrow_table(
    piece: Piece,
    names: tuple[str, ...],
    types: dict[str, pa.DataType],
    include: list[str] | None = None,
) -> pa.Table | None:
    """The piece read by pyarrow with ``types``, or ``None`` when any cell does not convert, a
    row has another number of cells, or a line would be skipped (so that row ``i`` of the table
    is line ``i + 1 + skip`` of the file, as the row-by-row reader numbers them)."""
    raw, skip = piece.data, 1 if piece.header else 0
    if piece.quoted or not raw:
        return None
    lines = piece.newlines + (0 if raw.endswith(b"\n") else 1)
    try:
        table = pa_csv.read_csv(
            pa.BufferReader(raw),
            read_options=pa_csv.ReadOptions(column_names=list(names), skip_rows=skip),
            convert_options=pa_csv.ConvertOptions(
                column_types=types,
                null_values=[""],
                strings_can_be_null=False,
                include_columns=include or [],
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    if table.num_rows + skip != lines:
        return None
    return table


def _np(table: pa.Table, name: str, dtype: Any) -> Any:
    """A column without nulls as a numpy array, read from its Arrow buffer. (``to_numpy`` and
    ``pyarrow.compute`` would import pandas: most of a second, on every backfill.)"""
    arr = table.column(name).combine_chunks()
    np_type = np.dtype(dtype)
    data = arr.buffers()[1]
    if data is None:  # no rows
        return np.empty(0, dtype=np_type)
    return np.frombuffer(data, dtype=np_type, count=len(arr), offset=arr.offset * np_type.itemsize)


def _valid(table: pa.Table, name: str) -> Any:
    """Where a column is not null (its validity bitmap, unpacked)."""
    arr = table.column(name).combine_chunks()
    bitmap = arr.buffers()[0]
    if bitmap is None or not arr.null_count:
        return np.ones(len(arr), dtype=bool)
    bits = np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8), bitorder="little")
    return bits[arr.offset : arr.offset + len(arr)].astype(bool)


def _all_equal(table: pa.Table, name: str, value: str) -> bool:
    """Whether every cell of a string column is exactly ``value``."""
    arr = table.column(name).combine_chunks()
    want = np.frombuffer(value.encode(), dtype=np.uint8)
    if not len(arr):
        return True
    offsets = np.frombuffer(
        arr.buffers()[1], dtype=np.int32, count=len(arr) + 1, offset=arr.offset * 4
    )
    if np.any(np.diff(offsets) != len(want)):
        return False
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
    cells = data[offsets[:-1, None] + np.arange(len(want))]
    return bool(np.all(cells == want))


def _columns(table: pa.Table, open_time: I64, trades: I64) -> CandleColumns:
    """The candle columns of a table read with numeric open..volume columns."""
    return CandleColumns(
        open_time,
        _np(table, "open", np.float64),
        _np(table, "high", np.float64),
        _np(table, "low", np.float64),
        _np(table, "close", np.float64),
        _np(table, "volume", np.float64),
        trades,
    )


def _counts(raw: I64) -> I64:
    """Trade counts as read; a negative one is kept as BAD_TRADES (rejected), never read as
    "unknown"."""
    return np.where(raw < 0, BAD_TRADES, raw)


def binance_fast(piece: Piece) -> Parsed | None:
    """A piece of a Binance kline dump, vectorised; ``None`` when it needs the row-by-row
    reader."""
    f64, i64 = pa.float64(), pa.int64()
    types = {n: f64 for n in BINANCE_HEADER}
    types.update(open_time=i64, close_time=i64, count=i64)
    del types["ignore"]
    # the last column ("ignore") is not read, as the row-by-row reader does not read it
    table = _arrow_table(piece, BINANCE_HEADER, types, list(BINANCE_HEADER[:11]))
    if table is None or any(table.column(n).null_count for n in BINANCE_HEADER[:11]):
        return None
    trades = _np(table, "count", np.int64)
    cols = _columns(table, to_ms(_np(table, "open_time", np.int64)), _counts(trades))
    first = piece.first_line + (1 if piece.header else 0)
    return Parsed(
        cols,
        np.arange(first, first + len(cols), dtype=np.int64),
        to_ms(_np(table, "close_time", np.int64)),
        _np(table, "quote_volume", np.float64),
        _np(table, "taker_buy_volume", np.float64),
        _np(table, "taker_buy_quote_volume", np.float64),
        vectorised=True,
    )


def table_fast(piece: Piece, symbol: str | None, interval: str) -> Parsed | None:
    """A Binance table file, vectorised; ``None`` when it needs the row-by-row reader (which
    also reports rows of another symbol or interval one by one)."""
    f64 = pa.float64()
    types = {n: f64 for n in TABLE_HEADER[3:9]}
    types.update(
        symbol=pa.string(),
        interval=pa.string(),
        timestamp=pa.timestamp("ms", tz="UTC"),
        trade_count=pa.int64(),
    )
    table = _arrow_table(piece, TABLE_HEADER, types)
    if table is None or any(table.column(n).null_count for n in TABLE_HEADER[:8]):
        return None
    if symbol is None or not (
        _all_equal(table, "symbol", symbol) and _all_equal(table, "interval", interval)
    ):
        return None
    trades = np.where(
        _valid(table, "trade_count"), _counts(_np(table, "trade_count", np.int64)), UNKNOWN_TRADES
    )
    quote = np.where(_valid(table, "quote_volume"), _np(table, "quote_volume", np.float64), np.nan)
    cols = _columns(table, _np(table, "timestamp", np.int64), trades)
    first = piece.first_line + (1 if piece.header else 0)
    lines = np.arange(first, first + table.num_rows, dtype=np.int64)
    return Parsed(cols, lines, None, quote, vectorised=True)
