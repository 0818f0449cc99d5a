"""A fake Yahoo behind a requests session, for testing ingest.yahoo through yfinance's real code.

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
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

DATA = Path(__file__).resolve().parents[2] / "cryptocast" / "data" / "btc-usd_yahoo_1d.csv"
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


def close_on(candles: list[Any], day: str) -> float:
    return next(c.close for c in candles if c.open_time == ms(day))
