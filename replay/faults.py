"""Deterministic fault injection for one websocket connection.

Faults never take a good message away: malformed messages come *in addition* (just before the
good one), duplicates repeat it, delays send it later. Only drops and stalls lose the live feed,
and a client recovers what it missed over REST, as it must with the real exchange.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import Any

import orjson

from replay.config import FaultConfig
from replay.protocol import combined


@dataclass(frozen=True, slots=True)
class MessagePlan:
    """What to do with one good data message."""

    malformed: str | None = None
    duplicate: bool = False
    delay: float = 0.0


_CLEAN = MessagePlan()


class ConnectionFaults:
    """The fault schedule of one connection, drawn from ``(seed, connection number)``."""

    def __init__(self, cfg: FaultConfig, connection_no: int) -> None:
        self.cfg = cfg
        self.rng = random.Random(f"{cfg.seed}:{connection_no}")
        self.drop_at: int | None = None
        if cfg.drop_after:
            spread = cfg.drop_after * max(0.0, cfg.drop_jitter)
            low = max(1, round(cfg.drop_after - spread))
            self.drop_at = self.rng.randint(low, max(low, round(cfg.drop_after + spread)))
        self._next_stall = cfg.stall_after if cfg.stall_after and cfg.stall_seconds > 0 else None

    def plan(self) -> MessagePlan:
        """Decide the faults of the next good data message."""
        cfg = self.cfg
        if not (cfg.malformed_rate or cfg.duplicate_rate or cfg.delay_rate):
            return _CLEAN
        rng = self.rng
        malformed = None
        if cfg.malformed_rate and rng.random() < cfg.malformed_rate and cfg.malformed_kinds:
            malformed = rng.choice(cfg.malformed_kinds)
        duplicate = bool(cfg.duplicate_rate) and rng.random() < cfg.duplicate_rate
        delay = cfg.delay_seconds if cfg.delay_rate and rng.random() < cfg.delay_rate else 0.0
        return MessagePlan(malformed, duplicate, delay)

    def should_drop(self, sent: int) -> bool:
        """True once ``sent`` data messages reach this connection's drop point."""
        return self.drop_at is not None and sent >= self.drop_at

    def stall_due(self, sent: int) -> float:
        """Seconds to stall now that ``sent`` data messages went out (0: no stall)."""
        if self._next_stall is None or sent < self._next_stall:
            return 0.0
        stall_after = self.cfg.stall_after or 0
        self._next_stall = self._next_stall + stall_after if self.cfg.stall_repeat else None
        return self.cfg.stall_seconds

    def malformed_text(self, kind: str, stream: str, data: dict[str, Any], wrap: bool) -> str:
        """A malformed variant of the kline payload ``data`` (left untouched)."""
        bad = copy.deepcopy(data)
        k = bad["k"]
        if kind == "missing_field":
            victim = self.rng.choice(("k", "k.c", "k.t", "k.x", "k.o", "k.h"))
            if victim == "k":
                del bad["k"]
            else:
                del k[victim[2:]]
        elif kind == "nan_price":
            k[self.rng.choice(("o", "h", "l", "c"))] = "NaN"
        elif kind == "negative_price":
            k["l"] = "-" + k["l"]
            k["c"] = "-" + k["c"]
        elif kind == "high_low":
            high, low = float(k["h"]), float(k["l"])
            k["h"], k["l"] = repr(min(high, low) * 0.99), repr(max(high, low) * 1.01)
        elif kind == "wrong_interval":
            k["i"] = "5m" if k["i"] != "5m" else "1m"
        elif kind == "wrong_symbol":
            other = "ETHBTC" if bad["s"] != "ETHBTC" else "BNBBTC"
            bad["s"] = k["s"] = other
        text = orjson.dumps(combined(stream, bad) if wrap else bad).decode()
        if kind == "broken_json":
            return text[: max(1, len(text) // 2)]
        return text
