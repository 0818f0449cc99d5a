"""REST access to exchanges through ccxt: closed candles, paging, and the exchange clock.

ccxt's exchange classes are used unchanged, rate limits on. For Binance the public API base can
be pointed elsewhere (``CRYPTOCAST_BINANCE_REST_URL``: the local replay exchange, a testnet);
markets are then loaded for spot only, the part of Binance such a server speaks.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import aiohttp
import ccxt.async_support as ccxt_async
import structlog

from core.clock import ClockSync
from core.schemas import Candle
from core.series import SeriesId
from ingest.prom import REST_CALLS

log = structlog.get_logger(__name__)

BINANCE_DEFAULT_REST = "https://api.binance.com"
BINANCE_DEFAULT_WS = "wss://stream.binance.com:9443"
PAGE_LIMIT = 1000


def make_exchange(exchange_id: str, binance_rest_url: str = BINANCE_DEFAULT_REST) -> Any:
    """A ccxt async exchange instance (rate limits on); Binance's public URLs rebased."""
    cls = getattr(ccxt_async, exchange_id, None)
    if cls is None:
        raise ValueError(f"unknown ccxt exchange id {exchange_id!r}")
    options: dict[str, Any] = {"enableRateLimit": True, "timeout": 10_000}
    ex = cls(options)
    if exchange_id == "binance" and binance_rest_url.rstrip("/") != BINANCE_DEFAULT_REST:
        base = binance_rest_url.rstrip("/")
        for name, url in list(ex.urls["api"].items()):
            if isinstance(url, str) and url.startswith(BINANCE_DEFAULT_REST):
                ex.urls["api"][name] = base + url[len(BINANCE_DEFAULT_REST) :]
        ex.options["fetchMarkets"] = {"types": ["spot"]}
    return ex


def make_pro_exchange(
    exchange_id: str,
    binance_rest_url: str = BINANCE_DEFAULT_REST,
    binance_ws_url: str = BINANCE_DEFAULT_WS,
) -> Any:
    """A ccxt.pro (websocket) exchange instance, or ``None`` when ccxt.pro has no such class;
    Binance's public REST and websocket URLs rebased as in :func:`make_exchange`."""
    import ccxt.pro as ccxt_pro  # noqa: PLC0415 (ccxt.pro loads only for watch mode)

    cls = getattr(ccxt_pro, exchange_id, None)
    if cls is None:
        return None
    ex = cls({"enableRateLimit": True, "timeout": 10_000})
    if exchange_id == "binance":
        rest = binance_rest_url.rstrip("/")
        ws = binance_ws_url.rstrip("/")
        api = ex.urls["api"]
        if rest != BINANCE_DEFAULT_REST:
            for name, url in list(api.items()):
                if isinstance(url, str) and url.startswith(BINANCE_DEFAULT_REST):
                    api[name] = rest + url[len(BINANCE_DEFAULT_REST) :]
            # A Binance-compatible server (replay exchange, testnet) speaks spot only.
            ex.options["fetchMarkets"] = {"types": ["spot"]}
            ex.options["fetchCurrencies"] = False
        spot = api.get("ws", {}).get("spot")
        if isinstance(spot, str) and spot.startswith(BINANCE_DEFAULT_WS):
            api["ws"]["spot"] = ws + spot[len(BINANCE_DEFAULT_WS) :]
    return ex


class CcxtKlineFetcher:
    """Pages of candles for one exchange over REST (``fetch_ohlcv``), counted per call."""

    def __init__(self, exchange: Any) -> None:
        self.exchange = exchange
        self.calls = 0
        self.calls_by_series: Counter[str] = Counter()

    async def fetch(self, series: SeriesId, since_ms: int, limit: int = PAGE_LIMIT) -> list[Candle]:
        """Candles from ``since_ms`` on, oldest first. May include the still-open candle last:
        the caller decides what has closed, by the exchange's clock."""
        self.calls += 1
        self.calls_by_series[series.key] += 1
        REST_CALLS.labels(series.exchange).inc()
        rows = await self.exchange.fetch_ohlcv(
            series.symbol, series.timeframe.text, since=since_ms, limit=limit
        )
        return [
            Candle(
                int(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5] or 0.0)
            )
            for r in rows
        ]

    async def close(self) -> None:
        await self.exchange.close()


async def binance_server_time(rest_url: str, session: aiohttp.ClientSession) -> ClockSync:
    """Read ``/api/v3/time``: the server time, taken at the midpoint of the round trip, and the
    clock speed the local replay exchange reports beside it (1 for a real exchange)."""
    t0 = time.time_ns() // 1_000_000
    async with session.get(
        f"{rest_url.rstrip('/')}/api/v3/time", timeout=aiohttp.ClientTimeout(total=10)
    ) as resp:
        resp.raise_for_status()
        body = await resp.json(content_type=None)
    t1 = time.time_ns() // 1_000_000
    return ClockSync(int(body["serverTime"]), (t0 + t1) // 2, float(body.get("speed", 1.0)))
