"""ingest.yahoo through yfinance's real code path, against a fake Yahoo behind a requests session.

Yahoo cannot be reached from the test machines, so :class:`FakeYahooSession` is a real
``requests.Session`` whose transport adapter answers as Yahoo does: ``fc.yahoo.com`` sets the A3
cookie, ``/v1/test/getcrumb`` hands out a crumb to a client that has it, and
``/v8/finance/chart/{symbol}`` returns chart JSON in Yahoo's format built from the real daily
BTC-USD file in ``cryptocast/data`` (and 1m rows synthesised from it), honouring ``period1``,
``period2``, ``interval`` and ``range`` and enforcing Yahoo's intraday limits (1m: 7 days per
request, within the last 30 days of the fake's clock). Everything above the socket (yfinance's
cookie/crumb handshake, its timezone lookup, request building, JSON parsing, requests' cookie
handling) is the real code. Every request is logged so tests can assert what yfinance asked.
"""

from __future__ import annotations

import csv
import email.utils
import http.client
import io
import itertools
import json
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import urllib3
import yfinance as yf
from requests.adapters import HTTPAdapter
from yfinance import cache as yf_cache
from yfinance.data import SingletonMeta, YfData

from core.series import Timeframe
from ingest.yahoo import (
    YahooFetchError,
    YahooRangeError,
    fetch_yahoo,
    plan_range,
    volume_outliers,
)

DATA = Path(__file__).resolve().parents[1] / "cryptocast" / "data" / "btc-usd_yahoo_1d.csv"
DAY_S = 86_400
DAY_MS = DAY_S * 1000
CRUMB = "Xq7fAkEcRuMb"
SYMBOL = "BTC-USD"


def ms(text: str) -> int:
    """``2022-03-01`` or ``2022-03-01 12:00`` (UTC) in epoch ms."""
    fmt = "%Y-%m-%d %H:%M" if " " in text else "%Y-%m-%d"
    return int(datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp() * 1000)


# --- the fake Yahoo -------------------------------------------------------------------------


Row = tuple[int, float | None, float | None, float | None, float | None, float | None, int | None]
"""ts (s), open, high, low, close, adj close, volume; ``None`` where Yahoo sends ``null``."""


def load_daily() -> list[Row]:
    rows: list[Row] = []
    with DATA.open(newline="") as f:
        for r in csv.DictReader(f):
            rows.append(
                (
                    ms(r["Date"]) // 1000,
                    float(r["Open"]),
                    float(r["High"]),
                    float(r["Low"]),
                    float(r["Close"]),
                    float(r["Adj Close"]),
                    int(r["Volume"]),
                )
            )
    return rows


def synth_minutes(daily: list[Row], first_day: str, days: int) -> list[Row]:
    """1m rows for ``days`` days from ``first_day``: each day's real open→close path, a minute
    at a time, with its real high/low touched once and its real volume spread evenly."""
    by_ts = {r[0]: r for r in daily}
    out: list[Row] = []
    start = ms(first_day) // 1000
    for d in range(days):
        day_ts = start + d * DAY_S
        _, o, h, lo, c, _, v = by_ts[day_ts]
        assert o is not None and h is not None and lo is not None and c is not None
        assert v is not None
        prev = o
        for m in range(1440):
            close = o + (c - o) * (m + 1) / 1440
            high, low = max(prev, close), min(prev, close)
            if m == 600:
                high = h
            if m == 900:
                low = lo
            out.append((day_ts + m * 60, prev, high, low, close, close, v // 1440))
            prev = close
    return out


@dataclass
class Logged:
    method: str
    url: str
    host: str
    path: str
    params: dict[str, str]
    cookie: str


class FakeYahooAdapter(HTTPAdapter):
    """Answers Yahoo's hosts from in-memory rows instead of the network."""

    def __init__(self, rows: Mapping[str, list[Row]], now_s: int) -> None:
        super().__init__()
        self.rows = rows
        self.now_s = now_s
        self.log: list[Logged] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        url = request.url or ""
        parts = urlsplit(url)
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        cookie = str(request.headers.get("Cookie", ""))
        self.log.append(
            Logged(request.method or "", url, parts.hostname or "", parts.path, params, cookie)
        )
        headers: list[tuple[str, str]] = []
        if parts.hostname == "fc.yahoo.com":
            # Yahoo answers 404 but sets the A3 session cookie that the crumb is tied to.
            expires = email.utils.formatdate(time.time() + 365 * DAY_S, usegmt=True)
            headers.append(
                (
                    "Set-Cookie",
                    f"A3=d=AQABBfAkE&S=AQAAAfAkE; Expires={expires}; Max-Age=31557600; "
                    "Domain=.yahoo.com; Path=/; Secure; HttpOnly; SameSite=None",
                )
            )
            status, body, ctype = 404, b"<html><body>Not found</body></html>", "text/html"
        elif parts.path == "/v1/test/getcrumb":
            if "A3=" in cookie:
                status, body, ctype = 200, CRUMB.encode(), "text/plain"
            else:
                status, body, ctype = 401, b'{"finance":{"error":"Unauthorized"}}', "text/plain"
        elif parts.path.startswith("/v8/finance/chart/"):
            status, payload = self.chart(parts.path.rsplit("/", 1)[1], params)
            body, ctype = json.dumps(payload).encode(), "application/json;charset=utf-8"
        else:
            status, body, ctype = 404, b"Not Found", "text/plain"
        headers.append(("Content-Type", ctype))
        return self.build_response(request, _raw_response(status, headers, body))

    def chart(self, symbol: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        interval = params.get("interval", "1d")
        if symbol != SYMBOL or interval not in self.rows:
            return 404, _chart_error("Not Found", "No data found, symbol may be delisted")
        rows = self.rows[interval]
        if "range" in params:  # yfinance's timezone lookup asks range=1d
            picked = rows[-1:]
        else:
            p1, p2 = int(params["period1"]), int(params["period2"])
            if interval == "1m":
                # Yahoo's own refusals, in its words.
                if p2 - p1 > 7 * DAY_S:  # Yahoo says 8 days; the contract is 7
                    return 422, _chart_error(
                        "Unprocessable Entity",
                        f"1m data not available for startTime={p1} and endTime={p2}. Only 7 "
                        "days worth of 1m granularity data are allowed to be fetched per request.",
                    )
                if p1 < self.now_s - 30 * DAY_S:
                    return 422, _chart_error(
                        "Unprocessable Entity",
                        f"1m data not available for startTime={p1} and endTime={p2}. The "
                        "requested range must be within the last 30 days.",
                    )
            picked = [r for r in rows if p1 <= r[0] < p2]
        return 200, {"chart": {"result": [self.result(symbol, interval, picked)], "error": None}}

    def result(self, symbol: str, interval: str, rows: list[Row]) -> dict[str, Any]:
        last = self.rows[interval][-1]
        day0 = self.now_s - self.now_s % DAY_S
        period = {"timezone": "UTC", "start": day0, "end": day0 + DAY_S, "gmtoffset": 0}
        meta: dict[str, Any] = {
            "currency": "USD",
            "symbol": symbol,
            "exchangeName": "CCC",
            "fullExchangeName": "CCC",
            "instrumentType": "CRYPTOCURRENCY",
            "firstTradeDate": 1410912000,
            "regularMarketTime": last[0],
            "hasPrePostMarketData": False,
            "gmtoffset": 0,
            "timezone": "UTC",
            "exchangeTimezoneName": "UTC",
            "regularMarketPrice": last[4],
            "chartPreviousClose": rows[0][4] if rows else last[4],
            "priceHint": 2,
            "currentTradingPeriod": {"pre": period, "regular": period, "post": period},
            "dataGranularity": interval,
            "range": "",
            "validRanges": ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"],
        }
        if not rows:
            # What Yahoo sends for a range with no rows: no timestamps, an empty quote.
            return {"meta": meta, "indicators": {"quote": [{}], "adjclose": [{}]}}
        return {
            "meta": meta,
            "timestamp": [r[0] for r in rows],
            "indicators": {
                "quote": [
                    {
                        "open": [r[1] for r in rows],
                        "high": [r[2] for r in rows],
                        "low": [r[3] for r in rows],
                        "close": [r[4] for r in rows],
                        "volume": [r[6] for r in rows],
                    }
                ],
                "adjclose": [{"adjclose": [r[5] for r in rows]}],
            },
        }


def _chart_error(code: str, description: str) -> dict[str, Any]:
    return {"chart": {"result": None, "error": {"code": code, "description": description}}}


class _OriginalResponse:
    """What requests reads Set-Cookie headers from (``http.client.HTTPResponse.msg``)."""

    def __init__(self, msg: http.client.HTTPMessage) -> None:
        self.msg = msg

    def isclosed(self) -> bool:
        return True

    def close(self) -> None:
        pass


def _raw_response(status: int, headers: list[tuple[str, str]], body: bytes) -> Any:
    msg = http.client.HTTPMessage()
    for k, v in headers:
        msg[k] = v
    return urllib3.HTTPResponse(
        body=io.BytesIO(body),
        headers=urllib3.HTTPHeaderDict(headers),
        status=status,
        reason=http.client.responses.get(status, ""),
        preload_content=False,
        original_response=_OriginalResponse(msg),  # type: ignore[arg-type]
    )


class FakeYahooSession(requests.Session):
    """A real ``requests.Session`` (yfinance accepts those) whose transport is the fake Yahoo."""

    def __init__(self, rows: Mapping[str, list[Row]], now_ms: int) -> None:
        super().__init__()
        self.adapter = FakeYahooAdapter(rows, now_ms // 1000)
        self.mount("https://", self.adapter)
        self.mount("http://", self.adapter)

    @property
    def log(self) -> list[Logged]:
        return self.adapter.log

    def chart_requests(self) -> list[Logged]:
        """The history requests (not the ``range=1d`` timezone lookup)."""
        return [r for r in self.log if "/v8/finance/chart/" in r.path and "period1" in r.params]


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def yf_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Before yfinance first opens its caches: the tz/cookie databases go to a temp dir, not ~.
    path = tmp_path_factory.mktemp("yfinance-cache")
    yf.set_tz_cache_location(str(path))
    return path


@pytest.fixture(autouse=True)
def fresh_yfinance() -> Iterator[None]:
    """Each test starts like a fresh process: no cookie, crumb, timezone or response cached."""

    def reset() -> None:
        yf_cache.get_cookie_cache().store("curlCffi", None)
        yf_cache.get_tz_cache().store(SYMBOL, None)
        SingletonMeta._instances.pop(YfData, None)  # the process-wide cookie/crumb holder
        YfData.cache_get.cache_clear()

    reset()
    yield
    reset()


@pytest.fixture(scope="module")
def daily() -> list[Row]:
    return load_daily()


@pytest.fixture(scope="module")
def minutes(daily: list[Row]) -> list[Row]:
    return synth_minutes(daily, "2022-02-05", 24)  # 2022-02-05 .. 2022-02-28


def close_on(candles: list[Any], day: str) -> float:
    return next(c.close for c in candles if c.open_time == ms(day))


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


def test_daily_corrupt_last_row_still_forming_is_dropped_not_rejected(daily: list[Row]) -> None:
    corrupt = [*daily[:-1], (*daily[-1][:6], QUOTED_CORRUPT_VOLUME)]
    now = ms("2022-03-01 12:00")  # inside the last row's day
    session = FakeYahooSession({"1d": corrupt}, now)
    result = fetch_yahoo(SYMBOL, "1d", None, None, now_ms=now, session=session)

    assert result.rows == 2723
    assert result.forming_dropped == 1
    assert result.rejected == {}
    assert len(result.candles) == 2722
    assert result.candles[-1].open_time == ms("2022-02-28")


def test_daily_last_row_still_forming_is_dropped_not_rejected(daily: list[Row]) -> None:
    now = ms("2022-03-01 12:00")  # inside the last row's day
    session = FakeYahooSession({"1d": daily}, now)
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
