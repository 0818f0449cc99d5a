"""Series identity and timeframe arithmetic.

A series is ``exchange:symbol:timeframe`` with ccxt's ids and unified strings. The exchange is
the text before the first ``:``, the timeframe the text after the last one, and the symbol is
everything between, because ccxt's futures symbols carry a colon themselves
(``binanceusdm:LINK/USDT:USDT:1m``).

Every candle of a series is identified by its open time; :class:`Timeframe` maps open times to a
dense integer *index* (0 at the epoch) and back, which is what the candle store keys on. Fixed
frames (up to a day) are plain modulo arithmetic; weeks open on Monday 00:00 UTC and months on
the 1st, as ccxt and Binance define them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_TIMEFRAME_RE = re.compile(r"^(\d+)([smhdwM])$")
# 1970-01-01 was a Thursday; the first Monday 00:00 UTC is 1970-01-05.
_FIRST_MONDAY_MS = 4 * 86_400_000
_SERIES_PART_RE = re.compile(r"^[A-Za-z0-9._\-/:]+$")
_EXCHANGE_RE = re.compile(r"^[a-z0-9_]+$")


class SeriesError(ValueError):
    """A series id or timeframe that cannot be parsed."""


@dataclass(frozen=True, slots=True)
class Timeframe:
    """A candle duration such as ``1m``, ``4h``, ``1d``, ``1w`` or ``1M``."""

    text: str
    ms: int = field(init=False, repr=False, compare=False)
    """Nominal duration in milliseconds (30 days for ``1M``, used only for rates and timeouts)."""
    _kind: int = field(init=False, repr=False, compare=False)
    """0 fixed, 1 weekly, 2 monthly: read on every index computation, so a field, not a test."""

    def __post_init__(self) -> None:
        m = _TIMEFRAME_RE.match(self.text)
        if not m or int(m.group(1)) <= 0:
            raise SeriesError(
                f"unknown timeframe {self.text!r} (expected e.g. 1m, 5m, 1h, 1d, 1w, 1M)"
            )
        amount, unit = int(m.group(1)), m.group(2)
        if unit == "M" and amount != 1:
            raise SeriesError(f"unsupported timeframe {self.text!r}: only 1M is a monthly frame")
        if unit == "w" and amount != 1:
            raise SeriesError(f"unsupported timeframe {self.text!r}: only 1w is a weekly frame")
        if unit not in "wM" and amount * _UNIT_MS[unit] > 86_400_000:
            raise SeriesError(f"unsupported timeframe {self.text!r}: fixed frames go up to 1d")
        if unit not in "wM" and 86_400_000 % (amount * _UNIT_MS[unit]) != 0:
            raise SeriesError(f"unsupported timeframe {self.text!r}: it does not divide a day")
        object.__setattr__(self, "ms", 30 * 86_400_000 if unit == "M" else amount * _UNIT_MS[unit])
        object.__setattr__(self, "_kind", {"w": 1, "M": 2}.get(unit, 0))

    @property
    def monthly(self) -> bool:
        return self._kind == 2

    def index(self, open_time: int) -> int:
        """Dense index of the candle opening at ``open_time``; raises if it is not aligned."""
        idx = self.floor_index(open_time)
        if self.open_time(idx) != open_time:
            raise SeriesError(f"open time {open_time} is not aligned to {self.text}")
        return idx

    def floor_index(self, t: int) -> int:
        """Index of the candle that contains instant ``t`` (ms)."""
        kind = self._kind
        if kind == 0:
            return t // self.ms
        if kind == 2:
            days = t // 86_400_000
            y, mo = _civil_from_days(days)
            return (y - 1970) * 12 + (mo - 1)
        return (t - _FIRST_MONDAY_MS) // self.ms

    def open_time(self, index: int) -> int:
        """Open time (ms) of the candle with the given index."""
        kind = self._kind
        if kind == 0:
            return index * self.ms
        if kind == 2:
            y, mo = divmod(index, 12)
            return _days_from_civil(1970 + y, mo + 1, 1) * 86_400_000
        return index * self.ms + _FIRST_MONDAY_MS

    def is_aligned(self, open_time: int) -> bool:
        return self.open_time(self.floor_index(open_time)) == open_time

    def next_open(self, open_time: int) -> int:
        """Open time of the candle after the one opening at ``open_time``."""
        return self.open_time(self.floor_index(open_time) + 1)

    def close_time(self, open_time: int) -> int:
        """Binance-style close time: the last millisecond of the candle."""
        return self.next_open(open_time) - 1

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class SeriesId:
    """``exchange:symbol:timeframe``; see the module docstring for the parsing rule."""

    exchange: str
    symbol: str
    timeframe: Timeframe

    @classmethod
    def parse(cls, text: str) -> SeriesId:
        text = text.strip()
        first, last = text.find(":"), text.rfind(":")
        if first <= 0 or last == first or last == len(text) - 1:
            raise SeriesError(
                f"bad series {text!r}: expected exchange:symbol:timeframe, e.g. binance:BTC/USDT:1m"
            )
        exchange, symbol, tf = text[:first], text[first + 1 : last], text[last + 1 :]
        if not _EXCHANGE_RE.match(exchange):
            raise SeriesError(f"bad series {text!r}: exchange id {exchange!r} must be a ccxt id")
        if not symbol or not _SERIES_PART_RE.match(symbol) or symbol.startswith(":"):
            raise SeriesError(f"bad series {text!r}: symbol {symbol!r} has forbidden characters")
        return cls(exchange, symbol, Timeframe(tf))

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.symbol}:{self.timeframe.text}"

    @property
    def market_id(self) -> str:
        """Binance-style market id: ``BTC/USDT`` → ``BTCUSDT`` (futures settle suffix dropped)."""
        return self.symbol.split(":", 1)[0].replace("/", "").upper()

    def log_fields(self) -> dict[str, str]:
        """The fields every log event about this series carries."""
        return {"exchange": self.exchange, "symbol": self.symbol, "timeframe": self.timeframe.text}

    @property
    def is_global(self) -> bool:
        """True for the subject of a global model (:func:`global_model_id`), not a market."""
        return self.exchange == GLOBAL_EXCHANGE

    def __str__(self) -> str:
        return self.key


# The global model of a timeframe is registered, leased and logged like a series of this
# pseudo-exchange (ccxt has no exchange of that id, and settings refuse one): its keys get their
# own Redis Cluster hash tag and the registry needs no second code path.
GLOBAL_EXCHANGE = "global"
GLOBAL_SYMBOL = "ALL"


def global_model_id(timeframe: Timeframe) -> SeriesId:
    """The subject under which the global model of ``timeframe`` is registered and trained."""
    return SeriesId(GLOBAL_EXCHANGE, GLOBAL_SYMBOL, timeframe)


def model_subject(series: SeriesId, scope: str) -> SeriesId:
    """Whose model serves ``series``: the global model of its timeframe, or its own."""
    return global_model_id(series.timeframe) if scope == "global" else series


def _days_from_civil(y: int, m: int, d: int) -> int:
    # Howard Hinnant's algorithm: proleptic Gregorian date → days since 1970-01-01.
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(z: int) -> tuple[int, int]:
    z += 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    m = mp + (3 if mp < 10 else -9)
    return y + (m <= 2), m
