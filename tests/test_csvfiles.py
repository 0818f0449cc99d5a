"""The CSV readers on every file layout in the shared data, and on bad rows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.schemas import REJECT_REASONS
from core.series import Timeframe
from ingest.csvfiles import (
    CsvFormat,
    CsvFormatError,
    open_csv,
    read_csv,
    symbol_from_filename,
    timeframe_from_close,
)
from tests.conftest import PROJECT_DATA
from tests.market_data import futures_files, market_file

FUTURES = futures_files()


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def _lines(path: Path, n: int) -> list[str]:
    with path.open() as fh:
        return [next(fh) for _ in range(n)]


def test_btcusdt_table_file() -> None:
    result = read_csv(market_file("btcusdt_binance_1h.csv"))
    assert result.info.format is CsvFormat.BINANCE_TABLE
    assert result.info.timeframe == Timeframe("1h")
    assert result.info.symbol == "BTCUSDT"
    assert len(result.candles) == 27_083
    assert result.rejects == []
    first = result.candles[0]
    assert first.open_time == _ms("2023-01-01T00:00:00")
    assert (first.open, first.close, first.trades) == (16541.77, 16529.67, 149854)
    assert result.rows[0].line == 2 and result.rows[0].close_time == first.open_time + 3_599_999
    assert result.rows[0].quote_volume == pytest.approx(72146293.5867229)
    # The real hole of 2023-03-24 13:00 stays a hole.
    opens = {c.open_time for c in result.candles}
    assert _ms("2023-03-24T13:00:00") not in opens
    assert _ms("2023-03-24T12:00:00") in opens and _ms("2023-03-24T14:00:00") in opens


def test_yahoo_file() -> None:
    result = read_csv(PROJECT_DATA / "btc-usd_yahoo_1d.csv")
    assert result.info.format is CsvFormat.YAHOO
    assert result.info.timeframe == Timeframe("1d")
    assert len(result.candles) == 2_723 and not result.rejects
    closes = {c.open_time: c.close for c in result.candles}
    assert closes[_ms("2020-12-31T00:00:00")] == pytest.approx(29_001.72, abs=0.01)
    assert closes[_ms("2021-12-31T00:00:00")] == pytest.approx(46_306.45, abs=0.01)


@pytest.mark.parametrize("path", FUTURES, ids=lambda p: p.name[:8])
def test_binance_futures_dumps(path: Path) -> None:
    # How fast this is belongs to the benchmarks (bench/storage_bench.py reads these files), not
    # to a timed test that fails on a busy machine.
    result = read_csv(path)
    assert result.info.format is CsvFormat.BINANCE_KLINES and result.info.has_header
    assert result.info.timeframe == Timeframe("1m")
    assert result.info.symbol == path.name.split("_")[0].upper()
    assert len(result.candles) == 40_320 and not result.rejects
    assert result.candles[0].open_time == _ms("2026-02-01T00:00:00")
    row = result.rows[0]
    assert row.close_time == row.candle.open_time + 59_999 if row.candle else False
    assert row.taker_buy_volume is not None and row.taker_buy_quote_volume is not None


def test_headerless_and_microsecond_variants(tmp_path: Path) -> None:
    src = market_file("linkusdt_binance_futures_1m_2026-02.csv")
    lines = _lines(src, 21)
    reference = read_csv(src).rows[:20]

    headerless = tmp_path / "LINKUSDT-1m-2026-02.csv"
    headerless.write_text("".join(lines[1:]))
    micro = tmp_path / "linkusdt-1m-micro.csv"
    micro_rows = []
    for line in lines[1:]:
        cells = line.rstrip("\n").split(",")
        cells[0] = str(int(cells[0]) * 1000)
        cells[6] = str(int(cells[6]) * 1000 + 999)
        micro_rows.append(",".join(cells) + "\n")
    micro.write_text("".join(micro_rows))

    for path, unit in ((headerless, "ms"), (micro, "us")):
        result = read_csv(path)
        assert result.info.format is CsvFormat.BINANCE_KLINES
        assert not result.info.has_header and result.info.time_unit == unit
        assert result.info.timeframe == Timeframe("1m")
        assert result.info.symbol == "LINKUSDT"
        assert not result.rejects
        assert [r.candle for r in result.rows] == [r.candle for r in reference]
        assert [r.close_time for r in result.rows] == [r.close_time for r in reference]
        assert [r.line for r in result.rows] == list(range(1, 21))


def test_bad_binance_rows_counted_per_reason(tmp_path: Path) -> None:
    lines = _lines(market_file("avaxusdt_binance_futures_1m_2026-02.csv"), 4)
    header, good = lines[0], [ln.rstrip("\n").split(",") for ln in lines[1:]]

    def variant(**changes: str) -> str:
        cells = list(good[0])
        for idx, value in changes.items():
            cells[int(idx[1:])] = value
        return ",".join(cells) + "\n"

    bad = [
        "1769904180000,10.1,10.2\n",  # too few columns
        variant(c1="abc"),  # not a number
        variant(c4="nan"),
        variant(c1="-10.1130"),
        variant(c2="10.0000"),  # high below open and close
        variant(c5="-5"),
        variant(c0="1769904000001", c6="1769904060000"),  # off the minute grid
        variant(c6="1769904119999"),  # a 2-minute close time in a 1m file
    ]
    path = tmp_path / "avaxusdt_bad.csv"
    path.write_text(header + "".join(",".join(g) + "\n" for g in good) + "".join(bad))
    result = read_csv(path)
    assert len(result.candles) == 3
    assert result.reject_counts == {
        "malformed": 2,
        "not_finite": 1,
        "non_positive_price": 1,
        "high_low": 1,
        "negative_volume": 1,
        "misaligned": 1,
        "wrong_interval": 1,
    }
    assert set(result.reject_counts) <= set(REJECT_REASONS)
    assert [r.line for r in result.rejects] == list(range(5, 13))
    assert all(r.detail for r in result.rejects)

    # "future": a candle that has not closed by the given now.
    late = read_csv(path, now_ms=int(good[1][0]) + 60_000)
    assert late.reject_counts.get("future") == 1


def test_bad_table_and_yahoo_rows(tmp_path: Path) -> None:
    lines = _lines(market_file("btcusdt_binance_1h.csv"), 4)
    table = tmp_path / "btc_table.csv"
    table.write_text(
        "".join(lines)
        + lines[3].replace("BTCUSDT", "ETHUSDT").replace("02:00", "03:00")
        + lines[3].replace(",1h,", ",4h,").replace("02:00", "04:00")
        + "BTCUSDT,1h,not a date,1,1,1,1,1,1,1\n"
        + "BTCUSDT,1h,2023-01-01 05:00:00+00:00,1,1\n"
    )
    result = read_csv(table)
    assert len(result.candles) == 3
    assert result.reject_counts == {"wrong_symbol": 1, "wrong_interval": 1, "malformed": 2}

    ylines = _lines(PROJECT_DATA / "btc-usd_yahoo_1d.csv", 4)
    yahoo = tmp_path / "btc-usd.csv"
    yahoo.write_text("".join(ylines) + "2014-09-20,null,null,null,null,null,null\n")
    result = read_csv(yahoo)
    assert len(result.candles) == 3 and result.reject_counts == {"malformed": 1}
    assert result.rejects[0].line == 5

    # The three-line header newer yfinance releases write.
    new = tmp_path / "btc-usd-new.csv"
    new.write_text(
        "Price,Adj Close,Close,High,Low,Open,Volume\nTicker,BTC-USD,BTC-USD,BTC-USD,BTC-USD,"
        "BTC-USD,BTC-USD\nDate,,,,,,\n2024-01-01 00:00:00+00:00,44167.3,44167.3,44175.4,42214.0,"
        "42280.2,18426978443\n"
    )
    result = read_csv(new)
    assert result.info.format is CsvFormat.YAHOO and not result.rejects
    assert result.candles[0].open == 42280.2 and result.candles[0].close == 44167.3


def test_unknown_layout_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "weird.csv"
    path.write_text("when,price\n2024-01-01,1\n")
    with pytest.raises(CsvFormatError, match=r"weird\.csv.*expected"):
        open_csv(path)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(CsvFormatError, match="empty"):
        open_csv(empty)


def test_names_and_timeframes() -> None:
    assert symbol_from_filename("linkusdt_binance_futures_1m_2026-02.csv") == "LINKUSDT"
    assert symbol_from_filename("BTCUSDT-1m-2025-01.csv") == "BTCUSDT"
    assert symbol_from_filename("btc-usd_yahoo_1d.csv") is None
    assert timeframe_from_close(1769904000000, 1769904059999) == Timeframe("1m")
    assert timeframe_from_close(1672531200000, 1672534799999) == Timeframe("1h")
    assert timeframe_from_close(1769904000000, 1769904000999) == Timeframe("1s")
    assert timeframe_from_close(1769904000000, 1769904000998) is None
    assert open_csv(market_file("btcusdt_binance_1h.csv"), timeframe="1h").info.symbol == "BTCUSDT"
