"""Binance's public REST endpoints (what ccxt's ``binance`` class needs) over the replay."""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import structlog
from aiohttp import web

from replay.history import ReplayClock, SymbolHistory
from replay.hub import ReplayStats
from replay.protocol import BINANCE_INTERVALS, rest_error, rest_row

log = structlog.get_logger(__name__)

_QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY")
_ALWAYS_LISTED = ("BTCUSDT", "ETHUSDT")


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _bad(code: int, msg: str) -> web.Response:
    return _json(rest_error(code, msg), status=400)


def load_exchange_info(path: Path | None) -> dict[str, Any]:
    """The recorded ``exchangeInfo`` body: ``path``, or the copy bundled with cryptocast."""
    if path is not None:
        raw = Path(path).read_bytes()
    else:
        raw = resources.files("cryptocast").joinpath("data/binance_exchangeinfo.json").read_bytes()
    body = orjson.loads(raw)
    if not isinstance(body, dict) or not isinstance(body.get("symbols"), list):
        raise ValueError(f"{path or 'bundled exchangeInfo'}: not a Binance exchangeInfo body")
    return body


def _synthetic_symbol(template: dict[str, Any], symbol: str) -> dict[str, Any]:
    # A replayed market the 2021 recording lacks: BTCUSDT's entry, renamed.
    entry = copy.deepcopy(template)
    quote = next((q for q in _QUOTES if symbol.endswith(q) and len(symbol) > len(q)), "USDT")
    entry.update(symbol=symbol, status="TRADING", baseAsset=symbol[: -len(quote)], quoteAsset=quote)
    return entry


def build_exchange_info(
    recorded: dict[str, Any], replayed: set[str], only_replayed: bool
) -> dict[str, Any]:
    """The body to serve: every recorded symbol, or only the replayed ones, plus any missing."""
    symbols = recorded["symbols"]
    by_name = {s.get("symbol"): s for s in symbols}
    template = by_name.get("BTCUSDT") or symbols[0]
    missing = [_synthetic_symbol(template, s) for s in sorted(replayed) if s not in by_name]
    if only_replayed:
        keep = replayed | set(_ALWAYS_LISTED)
        symbols = [s for s in symbols if s.get("symbol") in keep]
    return {**recorded, "symbols": [*symbols, *missing]}


class RestApi:
    """Handlers of ``/api/v3/*`` and ``/_replay/stats``."""

    def __init__(
        self,
        histories: list[SymbolHistory],
        clock: ReplayClock,
        stats: ReplayStats,
        exchange_info: dict[str, Any],
    ) -> None:
        self.clock = clock
        self.stats = stats
        self.exchange_info = exchange_info
        self.by_key = {(h.symbol, h.timeframe.text): h for h in histories}
        self.symbols = {h.symbol for h in histories}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v3/ping", self.ping)
        app.router.add_get("/api/v3/time", self.time)
        app.router.add_get("/api/v3/exchangeInfo", self.exchange_info_handler)
        app.router.add_get("/api/v3/klines", self.klines)
        app.router.add_get("/api/v3/uiKlines", self.klines)
        app.router.add_get("/_replay/stats", self.stats_handler)

    async def ping(self, request: web.Request) -> web.Response:
        """``GET /api/v3/ping``."""
        return _json({})

    async def time(self, request: web.Request) -> web.Response:
        """``GET /api/v3/time``; ``speed`` lets our clients extrapolate the accelerated clock."""
        return _json({"serverTime": self.clock.now_ms(), "speed": self.clock.speed})

    async def exchange_info_handler(self, request: web.Request) -> web.Response:
        """``GET /api/v3/exchangeInfo`` with optional ``symbol`` / ``symbols`` filters."""
        body = {**self.exchange_info, "serverTime": self.clock.now_ms()}
        wanted: set[str] | None = None
        if "symbol" in request.query:
            wanted = {request.query["symbol"].upper()}
        elif "symbols" in request.query:
            try:
                listed = orjson.loads(request.query["symbols"])
            except orjson.JSONDecodeError:
                return _bad(-1100, "Illegal characters found in parameter 'symbols'.")
            if not isinstance(listed, list):
                return _bad(-1100, "Illegal characters found in parameter 'symbols'.")
            wanted = {str(s).upper() for s in listed}
        if wanted is not None:
            body["symbols"] = [s for s in body["symbols"] if s.get("symbol") in wanted]
            if not body["symbols"]:
                return _bad(-1121, "Invalid symbol.")
        return _json(body)

    async def klines(self, request: web.Request) -> web.Response:
        """``GET /api/v3/klines``: history up to now, the still-open candle last."""
        self.stats.rest_kline_calls += 1
        q = request.query
        symbol = q.get("symbol", "").upper()
        interval = q.get("interval", "")
        if not symbol:
            return _bad(
                -1102,
                "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
            )
        if not interval:
            return _bad(
                -1102,
                "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.",
            )
        if symbol not in self.symbols:
            return _bad(-1121, "Invalid symbol.")
        history = self.by_key.get((symbol, interval))
        if interval not in BINANCE_INTERVALS or history is None:
            if interval in BINANCE_INTERVALS:
                log.warning("replay.interval_not_replayed", symbol=symbol, interval=interval)
            return _bad(-1120, "Invalid interval.")
        parsed: dict[str, int | None] = {}
        for name in ("startTime", "endTime", "limit"):
            raw = q.get(name)
            if raw is None or raw == "":
                parsed[name] = None
                continue
            if not raw.lstrip("-").isdigit():
                return _bad(
                    -1100,
                    f"Illegal characters found in parameter '{name}'; "
                    "legal range is '^[0-9]{1,20}$'.",
                )
            parsed[name] = int(raw)
        limit = 500 if parsed["limit"] is None else parsed["limit"]
        if not 1 <= limit <= 1000:
            return _bad(-1130, "Invalid data sent for a parameter.")
        start, end = parsed["startTime"], parsed["endTime"]
        if start is not None and end is not None and start > end:
            return _bad(-1023, "Start time is greater than end time.")
        now = self.clock.now_ms()
        idx = history.range_indexes(start, end, limit, now)
        return _json([rest_row(history.kline(i, now)) for i in idx])

    async def stats_handler(self, request: web.Request) -> web.Response:
        """``GET /_replay/stats``: counters, replay time and the replayed streams."""
        return _json(
            {
                **self.stats.to_dict(),
                "now_ms": self.clock.now_ms(),
                "speed": self.clock.speed,
                "streams": sorted(h.stream_name for h in self.by_key.values()),
            }
        )
