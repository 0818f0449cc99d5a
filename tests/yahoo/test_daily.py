"""ingest.yahoo on the real daily BTC-USD history, through yfinance's real code path against
the fake Yahoo of :mod:`tests.yahoo.fake`."""

from __future__ import annotations

import itertools
import math

import pytest

from core.series import Timeframe
from ingest.yahoo import (
    fetch_yahoo,
)
from tests.yahoo.fake import CRUMB, DAY_MS, SYMBOL, FakeYahooSession, Row, close_on, ms

# --- daily history --------------------------------------------------------------------------


# The last row's real volume is 32479047645. With the file's line count (2723) glued on, as
# `wc -l` on a file without a final newline can show it, it reads 324790476452723, ~10,000× its
# neighbours: that corruption is injected on purpose below to test the outlier rule.
REAL_LAST_VOLUME = 32_479_047_645
QUOTED_CORRUPT_VOLUME = 324_790_476_452_723


def test_daily_file_through_yfinance(daily: list[Row]) -> None:
    now = ms("2022-03-02 06:00")  # 2022-03-01 has closed
    session = FakeYahooSession({"1d": daily}, now)
    seen: list[int] = []
    result = fetch_yahoo(
        SYMBOL, Timeframe("1d"), None, None, now_ms=now, session=session, progress=seen.append
    )

    assert len(daily) == 2723
    assert daily[-1][6] == REAL_LAST_VOLUME
    assert result.rows == 2723
    assert len(result.candles) == 2723
    assert result.rejected == {}
    assert result.forming_dropped == 0
    assert result.candles[0].open_time == ms("2014-09-17")
    assert result.candles[-1].open_time == ms("2022-03-01")
    assert result.candles[-1].volume == float(REAL_LAST_VOLUME)
    times = [c.open_time for c in result.candles]
    assert all(b - a == DAY_MS for a, b in itertools.pairwise(times))
    assert close_on(result.candles, "2020-12-31") == pytest.approx(29001.72, abs=0.005)
    assert close_on(result.candles, "2021-12-31") == pytest.approx(46306.45, abs=0.005)
    first = result.candles[0]
    assert (first.open, first.volume, first.trades) == (pytest.approx(465.864014), 21056800.0, None)
    assert isinstance(first.volume, float)
    assert seen == [2723]
    assert result.requests == 1
    assert str(result.series) == "yahoo:BTC-USD:1d"

    # yfinance's real path: cookie from fc.yahoo.com, crumb with that cookie, then the chart API.
    hosts = [(r.host, r.path) for r in session.log]
    assert hosts[0] == ("fc.yahoo.com", "/")
    assert hosts[1] == ("query1.finance.yahoo.com", "/v1/test/getcrumb")
    assert "A3=" in session.log[1].cookie
    tz_lookup = [r for r in session.log if r.params.get("range") == "1d"]
    assert len(tz_lookup) == 1
    (chart,) = session.chart_requests()
    assert chart.host in ("query1.finance.yahoo.com", "query2.finance.yahoo.com")
    assert chart.path == "/v8/finance/chart/BTC-USD"
    assert chart.params["interval"] == "1d"
    assert chart.params["crumb"] == CRUMB
    assert "A3=" in chart.cookie
    assert int(chart.params["period1"]) == 86_400
    assert int(chart.params["period2"]) == now // 1000
    assert len(session.log) == 4


def test_daily_corrupt_last_volume_is_rejected_out_of_range(daily: list[Row]) -> None:
    corrupt = [*daily[:-1], (*daily[-1][:6], QUOTED_CORRUPT_VOLUME)]
    now = ms("2022-03-02 06:00")
    session = FakeYahooSession({"1d": corrupt}, now)
    result = fetch_yahoo(SYMBOL, "1d", None, None, now_ms=now, session=session)

    assert result.rows == 2723
    assert len(result.candles) == 2722
    assert result.rejected == {"out_of_range": 1}
    assert result.forming_dropped == 0
    assert result.candles[-1].open_time == ms("2022-02-28")
    assert close_on(result.candles, "2020-12-31") == pytest.approx(29001.72, abs=0.005)
    assert close_on(result.candles, "2021-12-31") == pytest.approx(46306.45, abs=0.005)


@pytest.mark.parametrize("corrupt_volume", [False, True], ids=["clean", "corrupt-volume"])
def test_daily_last_row_still_forming_is_dropped_not_rejected(
    daily: list[Row], corrupt_volume: bool
) -> None:
    rows = [*daily[:-1], (*daily[-1][:6], QUOTED_CORRUPT_VOLUME)] if corrupt_volume else daily
    now = ms("2022-03-01 12:00")  # inside the last row's day
    session = FakeYahooSession({"1d": rows}, now)
    result = fetch_yahoo(SYMBOL, "1d", None, None, now_ms=now, session=session)

    assert result.rows == 2723
    assert result.forming_dropped == 1
    assert result.rejected == {}
    assert len(result.candles) == 2722
    assert result.candles[-1].open_time == ms("2022-02-28")


def test_daily_range_is_sent_as_period1_period2(daily: list[Row]) -> None:
    now = ms("2022-03-02")
    session = FakeYahooSession({"1d": daily}, now)
    result = fetch_yahoo(
        SYMBOL, "1d", ms("2021-12-01"), ms("2022-01-01"), now_ms=now, session=session
    )

    assert [c.open_time for c in result.candles] == [
        ms("2021-12-01") + i * DAY_MS for i in range(31)
    ]
    (chart,) = session.chart_requests()
    assert (int(chart.params["period1"]), int(chart.params["period2"])) == (
        ms("2021-12-01") // 1000,
        ms("2022-01-01") // 1000,
    )


def test_null_row_from_yahoo_is_rejected_and_counted(daily: list[Row]) -> None:
    nulled = [
        (r[0], None, None, None, None, None, None) if r[0] == ms("2021-12-15") // 1000 else r
        for r in daily
    ]
    now = ms("2022-03-02")
    session = FakeYahooSession({"1d": nulled}, now)
    result = fetch_yahoo(
        SYMBOL, "1d", ms("2021-12-01"), ms("2022-01-01"), now_ms=now, session=session
    )

    assert result.rows == 31
    assert result.rejected == {"not_finite": 1}
    assert len(result.candles) == 30
    assert ms("2021-12-15") not in {c.open_time for c in result.candles}
    assert all(math.isfinite(c.close) for c in result.candles)


def test_empty_range_returns_nothing(daily: list[Row]) -> None:
    now = ms("2022-03-02")
    session = FakeYahooSession({"1d": daily}, now)
    result = fetch_yahoo(
        SYMBOL, "1d", ms("2010-01-01"), ms("2011-01-01"), now_ms=now, session=session
    )
    assert (result.candles, result.rows, result.rejected) == ([], 0, {})
    assert result.requests == 1
