"""Local replay exchange: Binance's public websocket and REST protocols over CSV candles.

Modules: :mod:`~ingest.replay.config` (settings), :mod:`~ingest.replay.history` (candle timeline
and replay clock), :mod:`~ingest.replay.protocol` (Binance message formats),
:mod:`~ingest.replay.faults` (fault injection), :mod:`~ingest.replay.hub` (stream feeds),
:mod:`~ingest.replay.connection` (one websocket client), :mod:`~ingest.replay.rest` (REST
endpoints) and :mod:`~ingest.replay.server` (the aiohttp app and its lifecycle).
"""

from __future__ import annotations

from ingest.replay.config import MALFORMED_KINDS, FaultConfig, ReplayConfig, ReplaySource
from ingest.replay.hub import ReplayStats
from ingest.replay.server import ReplayExchange, run_replay_exchange

__all__ = [
    "MALFORMED_KINDS",
    "FaultConfig",
    "ReplayConfig",
    "ReplayExchange",
    "ReplaySource",
    "ReplayStats",
    "run_replay_exchange",
]
