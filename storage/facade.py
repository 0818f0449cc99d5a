"""The storage facade: every store over one Redis client and one key prefix, built once.

Each entry point (a service, the training process, a CLI command, the web app) builds one
:class:`Storage` from its settings and hands it to what it runs, so every store of a process
agrees on the prefix (``CRYPTOCAST_KEY_PREFIX``), the retention and the stream lengths. No
store has a default prefix: a store built by hand must be told its :class:`~storage.keys.Keys`,
so a forgotten argument is a ``TypeError`` rather than another deployment's keys
(docs/architecture.md, contracts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from config.settings import Settings
from storage.calibration import CalibrationStore
from storage.candles import CandleStore
from storage.events import CandleEvents
from storage.keys import Keys
from storage.leases import Leases, Replicas
from storage.paths import PathStore
from storage.predictions import PredictionBus
from storage.registry import ModelRegistry, TrainingLog
from storage.scores import LiveScores

__all__ = ["Storage"]


@dataclass(frozen=True, slots=True)
class Storage:
    """The stores one process uses, all over ``redis`` under ``keys``."""

    redis: Any
    keys: Keys
    candles: CandleStore
    events: CandleEvents
    predictions: PredictionBus
    registry: ModelRegistry
    training_log: TrainingLog
    leases: Leases
    replicas: Replicas
    scores: LiveScores
    calibration: CalibrationStore
    paths: PathStore

    @classmethod
    def build(
        cls,
        redis: Any,
        keys: Keys,
        *,
        retention: int = 100_000,
        event_stream_len: int = 100_000,
        prediction_stream_len: int = 10_000,
    ) -> Storage:
        """Every store over ``redis`` under ``keys`` (tests and tools; services use
        :meth:`from_settings`). The defaults are the settings' defaults."""
        return cls(
            redis=redis,
            keys=keys,
            candles=CandleStore(
                redis, keys, retention=retention, event_stream_len=event_stream_len
            ),
            events=CandleEvents(redis, keys),
            predictions=PredictionBus(redis, keys, prediction_stream_len),
            registry=ModelRegistry(redis, keys),
            training_log=TrainingLog(redis, keys),
            leases=Leases(redis, keys),
            replicas=Replicas(redis, keys),
            scores=LiveScores(redis, keys),
            calibration=CalibrationStore(redis, keys),
            paths=PathStore(redis, keys),
        )

    @classmethod
    def from_settings(cls, redis: Any, settings: Settings) -> Storage:
        """The process's storage: the prefix, retention and stream lengths of ``settings``."""
        return cls.build(
            redis,
            Keys(settings.key_prefix),
            retention=settings.retention,
            event_stream_len=settings.event_stream_len,
            prediction_stream_len=settings.prediction_stream_len,
        )
