"""ingest.yahoo's intraday plans: 7-day chunks, the 30-day window, Yahoo's refusals, timeframes
Yahoo lacks, the volume rule and resampling."""

from __future__ import annotations

import pytest

from core.series import Timeframe
from ingest.yahoo import (
    YahooFetchError,
    YahooRangeError,
    fetch_yahoo,
    plan_range,
    volume_outliers,
)
from tests.yahoo.fake import CRUMB, DAY_MS, SYMBOL, FakeYahooSession, Row, ms

# --- intraday: chunking and limits ----------------------------------------------------------


def test_1m_range_is_chunked_to_7_day_requests(minutes: list[Row]) -> None:
    now = ms("2022-03-01 06:00")
    session = FakeYahooSession({"1m": minutes, "1d": minutes[-1:]}, now)
    seen: list[int] = []
    start, end = ms("2022-02-08"), ms("2022-02-28")  # 20 days
    result = fetch_yahoo(
        SYMBOL, "1m", start, end, now_ms=now, session=session, progress=seen.append
    )

    charts = session.chart_requests()
    assert len(charts) == 3 == result.requests
    spans = [(int(r.params["period1"]) * 1000, int(r.params["period2"]) * 1000) for r in charts]
    assert spans == [
        (start, start + 7 * DAY_MS),
        (start + 7 * DAY_MS, start + 14 * DAY_MS),
        (start + 14 * DAY_MS, end),
    ]
    assert all(r.params["interval"] == "1m" and r.params["crumb"] == CRUMB for r in charts)
    assert seen == [7 * 1440, 7 * 1440, 6 * 1440]
    assert len(result.candles) == 20 * 1440
    assert result.rejected == {}
    assert [c.open_time for c in result.candles[:2]] == [start, start + 60_000]
    assert result.candles[-1].open_time == end - 60_000
    # The synthesised minutes carry the real day's high and close.
    day = [c for c in result.candles if ms("2022-02-10") <= c.open_time < ms("2022-02-11")]
    real = next(r for r in minutes if r[0] == ms("2022-02-10 23:59") // 1000)
    assert day[-1].close == pytest.approx(real[4])


def test_1m_start_before_the_30_day_window_is_clipped(minutes: list[Row]) -> None:
    now = ms("2022-03-01 06:00")
    session = FakeYahooSession({"1m": minutes, "1d": minutes[-1:]}, now)
    result = fetch_yahoo(
        SYMBOL, "1m", ms("2022-01-01"), ms("2022-02-10"), now_ms=now, session=session
    )

    assert result.clipped_from == ms("2022-01-01")
    assert result.start_ms == ms("2022-01-30 06:10")  # now - 30 days + 10 min margin
    assert "last 30 days" in result.warnings[0] and "--source ccxt" in result.warnings[0]
    # Rows only exist from 2022-02-05 in the fake; Yahoo accepted every clipped request.
    assert len(result.candles) == 5 * 1440
    assert len(session.chart_requests()) == 2


def test_yahoo_refusal_surfaces_yahoos_reason(minutes: list[Row]) -> None:
    # Our clock says the range is reachable; Yahoo's clock (a day later) disagrees.
    now = ms("2022-03-01 06:00")
    session = FakeYahooSession({"1m": minutes, "1d": minutes[-1:]}, now + DAY_MS)
    with pytest.raises(YahooFetchError, match="within the last 30 days"):
        fetch_yahoo(
            SYMBOL, "1m", ms("2022-01-30 12:00"), ms("2022-02-02"), now_ms=now, session=session
        )


@pytest.mark.parametrize(
    ("tf", "start", "window"),
    [
        ("1m", "2024-01-01", "the last 30 days"),
        ("5m", "2024-03-01", "the last 60 days"),
        ("15m", "2024-03-01", "the last 60 days"),
        ("30m", "2024-03-01", "the last 60 days"),
        ("1h", "2022-01-01", "the last 730 days"),
    ],
)
def test_range_wholly_before_the_window_raises(
    tf: str, start: str, window: str, daily: list[Row]
) -> None:
    now = ms("2024-06-01")
    session = FakeYahooSession({"1d": daily}, now)
    with pytest.raises(YahooRangeError) as err:
        fetch_yahoo(SYMBOL, tf, ms(start), ms(start) + DAY_MS, now_ms=now, session=session)
    text = str(err.value)
    assert f"Yahoo keeps {tf} candles for {window} only" in text
    assert f"requested {start}" in text
    assert f"use --source ccxt for older {tf} history" in text
    assert session.log == []  # refused before asking Yahoo


@pytest.mark.parametrize("tf", ["3m", "4h", "2h", "12h"])
def test_timeframe_yahoo_does_not_offer(tf: str) -> None:
    with pytest.raises(YahooRangeError) as err:
        fetch_yahoo(SYMBOL, tf, None, None, now_ms=ms("2024-06-01"))
    text = str(err.value)
    assert f"does not offer {tf} candles" in text
    assert "1m, 2m, 5m, 15m, 30m, 90m, 1h, 1d, 1w, 1M" in text


def test_plan_limits_per_timeframe() -> None:
    now = ms("2024-06-01")
    # 1m: 7 days per request; 20 days -> 3 chunks
    plan = plan_range(Timeframe("1m"), now - 20 * DAY_MS, now, now)
    assert [b - a for a, b in plan.chunks] == [7 * DAY_MS, 7 * DAY_MS, 6 * DAY_MS]
    # 5m: whole 60-day window in one request; start defaults to the window
    plan = plan_range(Timeframe("5m"), None, None, now)
    assert len(plan.chunks) == 1 and plan.clipped_from is None
    assert plan.start_ms == now - 60 * DAY_MS + 10 * 60_000
    # 1h: clipped at 730 days
    plan = plan_range(Timeframe("1h"), ms("2020-01-01"), None, now)
    assert plan.clipped_from == ms("2020-01-01")
    assert plan.start_ms == now - 730 * DAY_MS + 3_600_000  # 10 min margin, aligned up to 1h
    assert plan.interval.interval == "1h"
    # daily, weekly, monthly: unlimited, one request, start aligned to the frame
    for tf, yahoo in (("1d", "1d"), ("1w", "1wk"), ("1M", "1mo")):
        plan = plan_range(Timeframe(tf), ms("2015-01-01 05:00"), None, now)
        assert plan.interval.interval == yahoo and len(plan.chunks) == 1
        assert plan.clipped_from is None
    assert plan_range(Timeframe("1w"), ms("2015-01-01"), None, now).start_ms == ms("2015-01-05")
    assert plan_range(Timeframe("1M"), ms("2015-01-02"), None, now).start_ms == ms("2015-02-01")
    # end is capped at now; a reversed range is refused
    assert plan_range(Timeframe("1d"), None, now + 5 * DAY_MS, now).end_ms == now
    with pytest.raises(YahooRangeError, match="not before end"):
        plan_range(Timeframe("1d"), ms("2020-01-02"), ms("2020-01-01"), now)


def test_volume_outlier_rule() -> None:
    vols = [100.0, 120.0, 90.0, 110.0, 105.0, 95.0, 200_000.0]
    assert volume_outliers(vols) == [6]  # ~1,900× the neighbours' median
    assert volume_outliers([100.0, 120.0, 90.0, 110.0, 50_000.0]) == []  # 450×: a real spike
    assert volume_outliers([0.0, 0.0, 0.0, 5.0]) == []  # nothing to judge against
    assert volume_outliers([1.0, 1e9]) == []  # too few neighbours


def aggregate(rows: list[Row], step_s: int) -> list[Row]:
    """Yahoo-style coarser rows from 1m rows (first open, max high, min low, last close, sum)."""
    out: list[Row] = []
    for i in range(0, len(rows), step_s // 60):
        grp = rows[i : i + step_s // 60]
        highs = [r[2] for r in grp if r[2] is not None]
        lows = [r[3] for r in grp if r[3] is not None]
        vol = sum(r[6] or 0 for r in grp)
        out.append((grp[0][0], grp[0][1], max(highs), min(lows), grp[-1][4], grp[-1][5], vol))
    return out


def test_30m_is_fetched_as_15m_and_resampled_by_yfinance(minutes: list[Row]) -> None:
    now = ms("2022-03-01 06:00")
    session = FakeYahooSession({"15m": aggregate(minutes, 900), "1d": minutes[-1:]}, now)
    result = fetch_yahoo(
        SYMBOL, "30m", ms("2022-02-10"), ms("2022-02-12"), now_ms=now, session=session
    )

    (chart,) = session.chart_requests()
    assert chart.params["interval"] == "15m"  # yfinance works around Yahoo's 30m bug
    assert len(result.candles) == 96 and result.rejected == {}
    assert all(c.open_time % (30 * 60_000) == 0 for c in result.candles)
    real_30m = aggregate(minutes, 1800)
    first = next(r for r in real_30m if r[0] == ms("2022-02-10") // 1000)
    c0 = result.candles[0]
    assert (c0.open, c0.high, c0.low, c0.close) == pytest.approx(first[1:5])
    assert c0.volume == pytest.approx(first[6])
