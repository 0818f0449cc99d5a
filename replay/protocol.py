"""Binance's public market-data formats: kline stream messages, REST rows, errors, requests."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from replay.history import Kline

# Binance's intervals; a stream or REST call naming anything else is invalid.
BINANCE_INTERVALS = frozenset(
    ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w",
     "1M")
)  # fmt: skip
_STREAM_RE = re.compile(r"^([a-z0-9]+)@kline_([0-9]+[smhdwM])(?:@[+\-0-9:]+)?$")
WS_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")


def fmt_num(x: float) -> str:
    """A number as Binance writes it (8 decimals), unless that would change its value."""
    text = f"{x:.8f}"
    if float(text) == x:
        return text
    return repr(x)


@dataclass(frozen=True, slots=True)
class StreamName:
    """A parsed ``<symbol>@kline_<interval>`` stream name."""

    symbol: str
    """Upper-case market id, e.g. ``BTCUSDT``."""
    interval: str

    @property
    def name(self) -> str:
        return f"{self.symbol.lower()}@kline_{self.interval}"


def parse_stream(name: str) -> StreamName | None:
    """Parse a kline stream name; ``None`` when it is not one (or its interval is unknown)."""
    m = _STREAM_RE.match(name)
    if not m or m.group(2) not in BINANCE_INTERVALS:
        return None
    return StreamName(m.group(1).upper(), m.group(2))


def kline_payload(symbol: str, interval: str, k: Kline, event_ms: int) -> dict[str, Any]:
    """The ``data`` of a kline stream message, field for field as Binance sends it."""
    return {
        "e": "kline",
        "E": event_ms,
        "s": symbol,
        "k": {
            "t": k.open_time,
            "T": k.close_time,
            "s": symbol,
            "i": interval,
            "f": k.first_trade_id,
            "L": k.last_trade_id,
            "o": fmt_num(k.open),
            "c": fmt_num(k.close),
            "h": fmt_num(k.high),
            "l": fmt_num(k.low),
            "v": fmt_num(k.volume),
            "n": k.trades,
            "x": k.closed,
            "q": fmt_num(k.quote_volume),
            "V": fmt_num(k.taker_buy_volume),
            "Q": fmt_num(k.taker_buy_quote_volume),
            "B": "0",
        },
    }


def combined(stream: str, data: dict[str, Any]) -> dict[str, Any]:
    """Wrap a payload as the combined ``/stream`` endpoint does."""
    return {"stream": stream, "data": data}


def rest_row(k: Kline) -> list[Any]:
    """One row of ``GET /api/v3/klines``."""
    return [
        k.open_time,
        fmt_num(k.open),
        fmt_num(k.high),
        fmt_num(k.low),
        fmt_num(k.close),
        fmt_num(k.volume),
        k.close_time,
        fmt_num(k.quote_volume),
        k.trades,
        fmt_num(k.taker_buy_volume),
        fmt_num(k.taker_buy_quote_volume),
        "0",
    ]


def rest_error(code: int, msg: str) -> dict[str, Any]:
    """Binance's REST error body (sent with HTTP 400)."""
    return {"code": code, "msg": msg}


def ws_error(code: int, msg: str, request_id: Any) -> dict[str, Any]:
    """Binance's answer to a bad websocket request."""
    return {"error": {"code": code, "msg": msg}, "id": request_id}


def ws_result(result: Any, request_id: Any) -> dict[str, Any]:
    """Binance's answer to a good websocket request."""
    return {"result": result, "id": request_id}
