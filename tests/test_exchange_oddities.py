"""Real exchange data as the exchange gives it: the candles that look odd but are real, and the
rows that are truly invalid, in every Binance dump format, over the websocket and in a backfill.

What the shipped files hold (searched row by row, see ``test_shipped_files_as_they_are``): the
BTC/USDT 1h table has one flat zero-volume candle, 2023-03-24 12:00 (line 1982), in the Binance
spot halt of that day, and the real hole right after it (13:00); the four 1m futures dumps have
no close time short of its interval, no zero-volume candle, and a few flat candles (high = low)
that traded. No shipped file has a short close time, so the dumps below are built from real
LINKUSDT rows with the fewest changes that make one: the third row closes 25.5 s into its
minute, the fifth is flat at the previous close with zero volume and trades (an outage), and the
first closes after one second (it must not make the file look like a 1s dump).
"""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from config.settings import IngestSettings
from core.clock import WallClock
from core.series import SeriesId, Timeframe
from ingest import csvread, csvrows
from ingest.backfill import backfill_csv
from ingest.binance_ws import BinanceKlineSource
from ingest.csvfiles import CsvFile, read_csv
from ingest.sink import CandleSink
from storage.candles import CandleStore
from storage.client import Redis
from storage.keys import Keys
from tests.market_data import FUTURES_1M, market_file

LINK = market_file(FUTURES_1M["LINK"])
MIN = 60_000
HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
    "taker_buy_quote_volume,ignore\n"
)
SHORT = {0: 999, 2: 25_499}  # row → close_time - open_time
FLAT = 4


def _real_rows(n: int = 20) -> list[list[str]]:
    with LINK.open() as fh:
        next(fh)
        return [next(fh).rstrip("\n").split(",") for _ in range(n)]


def _odd_rows() -> list[list[str]]:
    rows = _real_rows()
    for i, span in SHORT.items():
        rows[i][6] = str(int(rows[i][0]) + span)
    prev_close = rows[FLAT - 1][4]
    rows[FLAT][1:6] = [prev_close] * 4 + ["0"]
    rows[FLAT][7:11] = ["0", "0", "0", "0"]
    return rows


def _write(path: Path, rows: list[list[str]], header: bool, unit: str) -> Path:
    out = []
    for r in rows:
        cells = list(r)
        if unit == "us" and len(cells) > 6:  # spot dumps since 2025: times in µs
            cells[0] = str(int(cells[0]) * 1000)
            cells[6] = str(int(cells[6]) * 1000 + 999)
        out.append(",".join(cells) + "\n")
    path.write_text((HEADER if header else "") + "".join(out))
    return path


# futures dumps (header, ms); spot dumps and old futures (no header, ms); spot since 2025 (µs)
FORMATS = [(True, "ms"), (False, "ms"), (False, "us"), (True, "us")]


def test_shipped_files_as_they_are() -> None:
    btc = read_csv(market_file("btcusdt_binance_1h.csv"))
    assert len(btc.columns) == 27_083 and not btc.rejects and btc.short_closes == []
    halt = 1679659200000  # 2023-03-24 12:00 UTC
    i = int(np.flatnonzero(btc.columns.open_time == halt)[0])
    row = btc.rows[i]
    assert row.line == 1982 and row.candle is not None
    c = row.candle
    assert (c.open, c.high, c.low, c.close, c.volume, c.trades) == (28080.0,) * 4 + (0.0, 0)
    assert halt + 3_600_000 not in set(btc.columns.open_time.tolist())  # the real hole
    flats = {"AVAX": 1, "LINK": 1, "LTC": 2, "NEAR": 39}
    for sym, name in FUTURES_1M.items():
        r = read_csv(market_file(name))
        assert len(r.columns) == 40_320 and not r.rejects and r.short_closes == []
        assert int(np.sum(r.columns.high == r.columns.low)) == flats[sym]
        assert int(np.sum(r.columns.volume == 0)) == 0
        # and every shipped file parses the same vectorised as row by row
        _assert_same(*_both_ways(market_file(name), True))
    _assert_same(*_both_ways(market_file("btcusdt_binance_1h.csv"), True, ("BTCUSDT", "1h")))


def _both_ways(
    path: Path, header: bool, table: tuple[str, str] | None = None
) -> tuple[csvread.Parsed, csvread.Parsed]:
    """The file read vectorised (every piece must take that path) and row by row."""
    fast, slow = [], []
    for piece in csvread.pieces(path, header):
        f = csvread.binance_fast(piece) if table is None else csvread.table_fast(piece, *table)
        assert f is not None, f"line {piece.first_line}: not vectorised"
        fast.append(f)
        slow.append(
            csvrows.binance_rows(piece) if table is None else csvrows.table_rows(piece, *table)
        )
    return csvread.concat(fast), csvread.concat(slow)


def _assert_same(a: csvread.Parsed, b: csvread.Parsed) -> None:
    for name in ("open_time", "open", "high", "low", "close", "volume", "trades"):
        assert np.array_equal(getattr(a.cols, name), getattr(b.cols, name)), name
    assert np.array_equal(a.lines, b.lines)
    for name in ("close_time", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None and y is None) or np.array_equal(x, y, equal_nan=True), name
    assert a.rejects == b.rejects


@pytest.mark.parametrize(("header", "unit"), FORMATS)
def test_short_close_and_flat_zero_volume_candles_are_stored_as_given(
    tmp_path: Path, header: bool, unit: str
) -> None:
    path = _write(tmp_path / "LINKUSDT-1m-2026-02.csv", _odd_rows(), header, unit)
    result = read_csv(path)
    info = result.info
    assert (info.has_header, info.time_unit, info.timeframe) == (header, unit, Timeframe("1m"))
    assert not result.rejects and len(result.columns) == 20
    t = result.columns.open_time
    assert np.array_equal(t, t[0] + MIN * np.arange(20))  # every minute, no hole
    assert result.short_closes == [(int(t[i]), int(t[i]) + span) for i, span in SHORT.items()]
    assert [r.close_time for r in result.rows[:3]] == [t[0] + 999, t[1] + MIN - 1, t[2] + 25_499]
    flat = result.rows[FLAT].candle
    assert flat is not None and flat.volume == 0 and flat.trades == 0
    assert flat.open == flat.high == flat.low == flat.close == result.rows[FLAT - 1].candle.close  # type: ignore[union-attr]
    # the vectorised reader took it, and reads it as the row-by-row reader does
    assert CsvFile(path).parse().vectorised
    _assert_same(*_both_ways(path, header))


def _variant(row: list[str], **cells: Any) -> list[str]:
    out = list(row)
    for key, value in cells.items():
        out[int(key[1:])] = str(value)
    return out


def _bad_rows(good: list[list[str]]) -> tuple[list[list[str]], dict[str, int]]:
    """Rows after ``good`` that are truly invalid (each a real row changed once), and the reject
    count per reason expected for them."""
    nxt = [int(good[-1][0]) + MIN * (k + 1) for k in range(10)]
    base = [_variant(good[k % len(good)], c0=t, c6=t + MIN - 1) for k, t in enumerate(nxt)]
    o = float(base[1][1])
    rows = [
        _variant(base[0], c0=nxt[0] + 1),  # open off the minute grid
        _variant(base[1], c2=f"{o * 0.5:.4f}"),  # high below open and close
        _variant(base[2], c4="nan"),
        _variant(base[3], c5="-5"),
        _variant(base[4], c1="0"),
        _variant(base[5], c6=nxt[5] + 2 * MIN - 1),  # closes a 2-minute candle
        _variant(base[6], c6=nxt[6] - 1),  # closes before it opens
        _variant(base[7], c8="-3"),  # a negative trade count
        _variant(base[8], c3="inf"),
    ]
    expected = {
        "misaligned": 1,
        "high_low": 1,
        "not_finite": 2,
        "negative_volume": 1,
        "non_positive_price": 1,
        "wrong_interval": 2,
        "malformed": 1,
    }
    return rows, expected


@pytest.mark.parametrize(("header", "unit"), FORMATS)
def test_truly_invalid_rows_are_rejected_with_their_reason(
    tmp_path: Path, header: bool, unit: str
) -> None:
    good = _odd_rows()
    bad, expected = _bad_rows(good)
    path = _write(tmp_path / "linkusdt-bad.csv", good + bad, header, unit)
    result = read_csv(path)
    assert CsvFile(path).parse().vectorised  # every cell a number: judged as columns
    assert len(result.columns) == len(good) and result.reject_counts == expected
    first = 2 if header else 1
    assert [r.line for r in result.rejects] == list(range(first + 20, first + 20 + len(bad)))
    assert all(r.detail for r in result.rejects)
    # an unreadable cell or a short row sends the file row by row: same verdicts, plus those
    broken = [*bad, _variant(bad[0], c1="abc"), good[0][:5]]
    path = _write(tmp_path / "linkusdt-broken.csv", good + broken, header, unit)
    assert not CsvFile(path).parse().vectorised
    result = read_csv(path)
    assert len(result.columns) == len(good)
    assert result.reject_counts == {**expected, "malformed": expected["malformed"] + 2}


async def test_backfill_stores_every_real_candle_and_notes_the_early_closes(
    redis: Redis, tmp_path: Path
) -> None:
    path = _write(tmp_path / "LINKUSDT-1m-2026-02.csv", _odd_rows(), False, "us")
    series = SeriesId.parse("binance:LINK/USDT:1m")
    report = await backfill_csv(CandleStore(redis, Keys()), series, path, WallClock())
    assert (report.stored, report.rejected, report.holes) == (20, {}, [])
    assert any("2 candle(s) closed early" in n for n in report.notes), report.notes
    stored = await CandleStore(redis, Keys()).range(series)
    assert [c.open_time for c in stored] == [c.open_time for c in read_csv(path).candles]


class _At:
    """A clock standing at one instant."""

    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now


def _frame(row: list[str], close_time: int | None) -> str:
    k: dict[str, Any] = {
        "t": int(row[0]),
        "s": "LINKUSDT",
        "i": "1m",
        "o": row[1],
        "h": row[2],
        "l": row[3],
        "c": row[4],
        "v": row[5],
        "n": int(row[8]),
        "x": True,
    }
    if close_time is not None:
        k["T"] = close_time
    return orjson.dumps({"e": "kline", "E": int(row[0]), "s": "LINKUSDT", "k": k}).decode()


async def test_websocket_kline_closed_early_is_stored(redis: Redis) -> None:
    rows = _odd_rows()
    series = SeriesId.parse("binance:LINK/USDT:1m")
    store = CandleStore(redis, Keys())
    t2 = int(rows[2][0])
    # the exchange closed row 2's candle 25.5 s in; we are 30 s into its minute
    sink = CandleSink(store, _At(t2 + 30_000), clock_margin_s=0)
    source = BinanceKlineSource([series], "ws://127.0.0.1:1", sink, IngestSettings())
    source._handle(_frame(rows[2], t2 + 25_499))  # the exact path of every websocket frame
    source._handle(_frame(rows[1], t2 - MIN + 2 * MIN - 1))  # closes a 2-minute candle
    source._handle(_frame(rows[1], t2 - MIN - 1))  # closes before it opens
    writer = _start(sink)
    try:
        await sink.drained()
    finally:
        writer.cancel()
    assert sink.rejects.by_reason() == {"wrong_interval": 2}
    got = await store.range(series)
    assert [c.open_time for c in got] == [t2]
    # without its close time the same kline has not closed by now: the early close is the proof
    assert not sink.offer(series, got[0], 0)
    assert sink.rejects.by_reason() == {"wrong_interval": 2, "future": 1}
    sink.clock = _At(int(rows[FLAT][0]) + MIN)
    source._handle(_frame(rows[FLAT], int(rows[FLAT][0]) + MIN - 1))  # flat, zero volume: real
    writer = _start(sink)
    try:
        await sink.drained()
    finally:
        writer.cancel()
    flat = await store.get(series, int(rows[FLAT][0]))
    assert flat is not None and flat.volume == 0 and flat.high == flat.low


def _start(sink: CandleSink) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(sink.run())


def test_pieces_end_at_line_ends_and_keep_line_numbers(tmp_path: Path) -> None:
    good = _odd_rows()
    bad, expected = _bad_rows(good)
    path = _write(tmp_path / "linkusdt-pieces.csv", good + bad, True, "us")
    raw = path.read_bytes()
    gz = tmp_path / "linkusdt-pieces.csv.gz"
    gz.write_bytes(gzip.compress(raw[:500]) + gzip.compress(raw[500:]))  # two gzip members
    whole = read_csv(path)
    assert whole.reject_counts == expected
    for p in (path, gz):
        parts = list(csvread.pieces(p, True, first_size=64, size=300))
        assert len(parts) > 5 and b"".join(x.data for x in parts) == raw
        assert all(x.data.endswith(b"\n") for x in parts)
        f = CsvFile(p)
        judged = [f.judge(f._parse_piece(x)) for x in parts]
        assert [(r.line, r.reason) for j in judged for r in j.rejects] == [
            (r.line, r.reason) for r in whole.rejects
        ]
        assert np.array_equal(np.concatenate([j.lines for j in judged]), whole.lines)
        got = read_csv(p)
        assert got.candles == whole.candles and got.reject_counts == expected


def test_a_quoted_field_across_lines_is_one_record(tmp_path: Path) -> None:
    good, *later = (",".join(r) + "\n" for r in _real_rows(4))
    path = tmp_path / "LINKUSDT-1m-quoted.csv"
    path.write_text(good + '"a\n,b",x\n' + "".join(later) + '"\n,\n' + good)
    for sizes in ({}, {"first_size": 8, "size": 8}):
        parts = list(csvread.pieces(path, False, **sizes))
        assert all(p.data.count(b'"') % 2 == 0 for p in parts[:-1])
        f = CsvFile(path)
        judged = [f.judge(f._parse_piece(p)) for p in parts]
        # csv.reader's records: a good row, a quoted record over lines 2-3, three good rows,
        # then a quote never closed: the rest of the file is one record
        assert [r.line for j in judged for r in j.rejects] == [2, 7]
        assert sum(len(j.columns) for j in judged) == 4


def test_a_corrupt_gzip_is_a_clear_error(tmp_path: Path) -> None:
    from ingest.csvfiles import CsvFormatError

    head = gzip.compress(LINK.read_bytes())
    bad = tmp_path / "linkusdt-bad.csv.gz"
    bad.write_bytes(head[:20] + b"\x00" * 50)  # the gzip header, then garbage
    with pytest.raises(CsvFormatError, match="linkusdt-bad"):
        read_csv(bad)
    cut = tmp_path / "linkusdt-cut.csv.gz"
    cut.write_bytes(head[: len(head) // 2] + b"\xff" * 64 + head[len(head) // 2 + 64 :])
    with pytest.raises(CsvFormatError, match="linkusdt-cut"):
        read_csv(cut)
