"""Reconnect pacing: exponential backoff with full jitter, and log-once state transitions."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Backoff:
    """Delays ``uniform(min, min(max, min * 2**attempt))``: spread out so that many clients
    dropped at once do not reconnect in lockstep, and bounded by ``max_s``."""

    min_s: float
    max_s: float
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.min_s * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return self.rng.uniform(self.min_s / 2, max(self.min_s / 2, ceiling))

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class StateLog:
    """Logs a connection's state only when it changes, so a flapping link does not flood logs
    with identical lines; the number of repeats is reported with the next change."""

    log: Any
    state: str = "init"
    repeats: int = 0

    def enter(self, state: str, **fields: Any) -> None:
        if state == self.state:
            self.repeats += 1
            return
        level = "warning" if state in ("disconnected", "stale", "failed") else "info"
        extra = {"repeats": self.repeats} if self.repeats else {}
        getattr(self.log, level)(f"connection.{state}", previous=self.state, **extra, **fields)
        self.state = state
        self.repeats = 0
