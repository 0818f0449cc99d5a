"""Binance's public kline messages → :class:`~core.schemas.Candle`.

Binance sends kline updates as ``{"e": "kline", "E": event_ms, "s": "BTCUSDT", "k": {...}}``, or
wrapped as ``{"stream": "btcusdt@kline_1m", "data": {...}}`` on combined streams; prices are
decimal strings. Several in-progress updates (``"x": false``) precede the final one
(``"x": true``); only the final one may enter history. Anything that is not a well-formed kline
raises :class:`~core.schemas.CandleError` with reason ``malformed``; value checks (prices,
alignment, ...) are the sink's job so every source shares them.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from core.schemas import Candle, CandleError


@dataclass(frozen=True, slots=True)
class KlineUpdate:
    """One kline message: which market and interval, whether the candle is closed, its values."""

    market_id: str
    interval: str
    closed: bool
    candle: Candle
    event_time: int
    close_time: int | None = None
    """Binance's ``T``: the candle's last millisecond, earlier than the end of its interval when
    the exchange halted mid-candle (the candle is still real: it is judged by its open time)."""


def parse_kline_message(raw: str | bytes) -> KlineUpdate | None:
    """Parse one websocket frame; ``None`` for non-kline frames (subscription replies)."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise CandleError("malformed", "not JSON") from None
    if not isinstance(msg, dict):
        raise CandleError("malformed", "not a JSON object")
    if "data" in msg and "stream" in msg:
        msg = msg["data"]
        if not isinstance(msg, dict):
            raise CandleError("malformed", "combined stream data is not an object")
    if "result" in msg and "id" in msg:
        return None  # reply to SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS
    if msg.get("e") != "kline":
        raise CandleError("malformed", f"unexpected event type {msg.get('e')!r}")
    k = msg.get("k")
    if not isinstance(k, dict):
        raise CandleError("malformed", "no kline object")
    try:
        candle = Candle(
            open_time=_int(k["t"]),
            open=float(k["o"]),
            high=float(k["h"]),
            low=float(k["l"]),
            close=float(k["c"]),
            volume=float(k["v"]),
            trades=_int(k["n"]) if "n" in k else None,
        )
        closed = k["x"]
        market = k.get("s", msg.get("s"))
        interval = k["i"]
        event_time = _int(msg.get("E", 0))
        close_time = _int(k["T"]) if "T" in k else None
    except (KeyError, TypeError, ValueError) as e:
        raise CandleError("malformed", f"bad kline field: {e}") from None
    if not isinstance(closed, bool) or not isinstance(market, str) or not isinstance(interval, str):
        raise CandleError("malformed", "bad kline field types")
    return KlineUpdate(market.upper(), interval, closed, candle, event_time, close_time)


def _int(v: object) -> int:
    # bool is an int in Python; a kline's times and counts never are.
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise TypeError(f"expected an integer, got {type(v).__name__}")
    return int(v)


def stream_name(market_id: str, interval: str) -> str:
    """Binance's stream name for a market's klines: ``btcusdt@kline_1m``."""
    return f"{market_id.lower()}@kline_{interval}"
