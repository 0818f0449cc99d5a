"""Settings of the replay exchange: plain dataclasses the CLI builds from its flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

MALFORMED_KINDS = (
    "broken_json",
    "missing_field",
    "nan_price",
    "negative_price",
    "high_low",
    "wrong_interval",
    "wrong_symbol",
)
"""Kinds of malformed kline messages :class:`FaultConfig` can inject."""


@dataclass(slots=True)
class ReplaySource:
    """One CSV replayed as one market (symbol) at one timeframe."""

    csv: Path
    """A candle CSV in any layout :mod:`ingest.csvfiles` reads."""
    symbol: str | None = None
    """Market as ``BTCUSDT`` or ``BTC/USDT`` (``LINK/USDT:USDT`` works too); ``None``: from the
    file's ``symbol`` column or its name (``linkusdt_binance_futures_1m_2026-02.csv``:
    LINKUSDT)."""
    timeframe: str | None = None
    """Binance interval (``1m``, ``1h``...); ``None``: detected from the file."""


@dataclass(slots=True)
class FaultConfig:
    """Fault injection; everything off by default, every random choice drawn from ``seed``.

    Each connection gets its own generator seeded from ``seed`` and its connection number, so
    a run is reproducible as long as clients connect in the same order.
    """

    seed: int = 0
    """Seed of every random choice."""
    drop_after: int | None = None
    """Abort each connection (TCP reset, no close frame) after this many data messages."""
    drop_jitter: float = 0.0
    """Randomise ``drop_after`` per connection by up to ± this fraction (0.5 → 50%..150%)."""
    stall_after: int | None = None
    """Stop sending (socket kept open, pings still answered) after this many data messages..."""
    stall_seconds: float = 0.0
    """...for this many wall seconds; messages that fall due meanwhile are sent afterwards."""
    stall_repeat: bool = False
    """Stall again every ``stall_after`` messages (default: once per connection)."""
    malformed_rate: float = 0.0
    """Probability, per good data message, of sending one malformed message before it."""
    malformed_kinds: tuple[str, ...] = MALFORMED_KINDS
    """Which malformed kinds to draw from (see :data:`MALFORMED_KINDS`)."""
    delay_rate: float = 0.0
    """Probability that a data message is held back ``delay_seconds`` (later ones overtake it)."""
    delay_seconds: float = 0.0
    """Wall seconds a delayed message is held."""
    duplicate_rate: float = 0.0
    """Probability that a data message is sent twice."""

    def __post_init__(self) -> None:
        for name in ("malformed_rate", "delay_rate", "duplicate_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        unknown = set(self.malformed_kinds) - set(MALFORMED_KINDS)
        if unknown:
            raise ValueError(f"unknown malformed kinds {sorted(unknown)}; known: {MALFORMED_KINDS}")
        if self.drop_after is not None and self.drop_after < 1:
            raise ValueError("drop_after must be >= 1")

    @property
    def active(self) -> bool:
        return bool(
            self.drop_after
            or self.stall_after
            or self.malformed_rate
            or self.delay_rate
            or self.duplicate_rate
        )


@dataclass(slots=True)
class ReplayConfig:
    """Everything the replay exchange needs; only ``sources`` is required."""

    sources: list[ReplaySource]
    """The markets to replay (several symbols, or one symbol at several timeframes)."""
    host: str = "127.0.0.1"
    """Interface to bind."""
    port: int = 0
    """TCP port for both websocket and REST; 0 picks a free one (see ``ReplayExchange.port``)."""
    speed: float = 1.0
    """Replay seconds per wall second: 600 closes one 1m candle every 0.1 s."""
    start: int | str | None = None
    """Replay clock at start: epoch ms, or an ISO date/time (UTC unless it says otherwise).
    ``None``: the open time of candle number ``history_candles`` of the first source, so that
    REST backfill and gap fill have history behind "now"."""
    history_candles: int = 1000
    """With ``start=None``: how many candles of history lie before the starting point."""
    updates_per_candle: int = 3
    """In-progress (``x: false``) messages per candle before the final one; 0 sends finals only."""
    ping_interval: float | None = 20.0
    """Wall seconds between server ping frames (Binance: 20 s); a client that does not answer
    within half of it is disconnected. ``None`` disables pings."""
    max_message_size: int = 4096
    """Largest incoming websocket message in bytes; larger ones close the connection (1009)."""
    max_connection_seconds: float | None = None
    """Close every websocket (code 1001) this long after it opened, as Binance does at 24 h."""
    connection_clock: Literal["wall", "replay"] = "replay"
    """Which clock ``max_connection_seconds`` is counted on (``replay``: 86400 = a replayed day)."""
    exchange_info_path: Path | None = None
    """Body served by ``/api/v3/exchangeInfo``; ``None``: the recorded Binance response bundled
    in ``cryptocast/data/binance_exchangeinfo.json``."""
    exchange_info_symbols: Literal["all", "replayed"] = "all"
    """Serve every recorded symbol, or only the replayed ones (faster ccxt ``load_markets``)."""
    faults: FaultConfig = field(default_factory=FaultConfig)
    """Fault injection on the websocket streams."""

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("ReplayConfig needs at least one source CSV")
        if self.speed <= 0:
            raise ValueError(f"speed must be > 0, got {self.speed}")
        if self.updates_per_candle < 0:
            raise ValueError("updates_per_candle must be >= 0")


def parse_time(value: int | str) -> int:
    """Epoch ms from an int, a string of digits, or an ISO date/time (naive means UTC)."""
    if isinstance(value, int):
        return value
    text = value.strip()
    if text.isdigit():
        return int(text)
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)
