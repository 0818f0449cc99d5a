"""Local replay exchange: Binance's public websocket and REST protocols over CSV candles.

Modules: :mod:`~replay.config` (settings), :mod:`~replay.history` (candle timeline
and replay clock), :mod:`~replay.protocol` (Binance message formats),
:mod:`~replay.faults` (fault injection), :mod:`~replay.hub` (stream feeds),
:mod:`~replay.connection` (one websocket client), :mod:`~replay.rest` (REST
endpoints) and :mod:`~replay.server` (the aiohttp app and its lifecycle).
"""

from __future__ import annotations

from replay.config import MALFORMED_KINDS, FaultConfig, ReplayConfig, ReplaySource
from replay.hub import ReplayStats
from replay.server import ReplayExchange, run_replay_exchange

__all__ = [
    "MALFORMED_KINDS",
    "FaultConfig",
    "ReplayConfig",
    "ReplayExchange",
    "ReplaySource",
    "ReplayStats",
    "run_replay_exchange",
]
