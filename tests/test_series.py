from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.series import SeriesError, SeriesId, Timeframe


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def test_parse_spot_and_futures_series() -> None:
    s = SeriesId.parse("binance:BTC/USDT:1m")
    assert (s.exchange, s.symbol, s.timeframe.text) == ("binance", "BTC/USDT", "1m")
    f = SeriesId.parse("binanceusdm:LINK/USDT:USDT:1m")
    assert (f.exchange, f.symbol, f.timeframe.text) == ("binanceusdm", "LINK/USDT:USDT", "1m")
    assert f.market_id == "LINKUSDT"
    assert f.key == "binanceusdm:LINK/USDT:USDT:1m"
    assert SeriesId.parse("yahoo:BTC-USD:1d").symbol == "BTC-USD"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "binance",
        "binance:BTC/USDT",
        "binance:BTC/USDT:",
        ":BTC/USDT:1m",
        "binance::1m",
        "Bin ance:BTC/USDT:1m",
        "binance:BTC USDT:1m",
        "binance:BTC/USDT:7m",
        "binance:BTC/USDT:2d",
        "binance:BTC/USDT:3M",
        "binance:BTC/USDT:0m",
        "binance:BTC/USDT:1x",
        "binance:{BTC}:1m",
    ],
)
def test_bad_series_are_refused(text: str) -> None:
    with pytest.raises(SeriesError):
        SeriesId.parse(text)


def test_weeks_open_on_monday_and_months_on_the_first() -> None:
    w = Timeframe("1w")
    t = w.open_time(w.floor_index(ms(2026, 2, 5, 13)))
    assert datetime.fromtimestamp(t / 1000, UTC) == datetime(2026, 2, 2, tzinfo=UTC)  # a Monday
    assert not w.is_aligned(ms(2026, 2, 5))
    m = Timeframe("1M")
    assert m.open_time(m.floor_index(ms(2024, 2, 29, 23))) == ms(2024, 2, 1)
    assert m.next_open(ms(2024, 12, 1)) == ms(2025, 1, 1)
    assert m.is_aligned(ms(2023, 3, 1)) and not m.is_aligned(ms(2023, 3, 2))


def test_fixed_frames_align_by_modulo() -> None:
    h = Timeframe("4h")
    assert h.is_aligned(ms(2023, 1, 1, 4)) and not h.is_aligned(ms(2023, 1, 1, 5))
    assert h.close_time(ms(2023, 1, 1, 4)) == ms(2023, 1, 1, 8) - 1
    with pytest.raises(SeriesError):
        h.index(ms(2023, 1, 1, 5))


@given(
    st.sampled_from(["1m", "3m", "15m", "1h", "6h", "1d", "1w", "1M"]),
    st.integers(min_value=0, max_value=4_000_000_000_000),
)
def test_index_round_trip(tf_text: str, t: int) -> None:
    tf = Timeframe(tf_text)
    i = tf.floor_index(t)
    start = tf.open_time(i)
    assert start <= t < tf.open_time(i + 1)
    assert tf.index(start) == i
