"""The multi-step forecast path of each series: what the dashboard's forecast line shows.

The forecaster computes it after each prediction it publishes (off its hot path, see
``forecaster.serving.paths``) and stores it as one JSON value per series under
:meth:`storage.keys.Keys.forecast_path` (in the series' hash tag), replaced whole by one ``SET``,
so a reader sees either the old path or the new one. The web only reads it and slices it to the
steps asked for: it never loads a model (docs/architecture.md, decision 13).
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.schemas import ModelInfo
from core.series import SeriesId
from storage.keys import Keys

__all__ = ["PATH_SCHEMA_VERSION", "ForecastPath", "PathPoint", "PathStore"]

PATH_SCHEMA_VERSION = 1


class PathPoint(BaseModel):
    """One predicted candle of the path."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    time: int = Field(description="Open time (UTC ms) of the predicted candle")
    predicted_close: float
    predicted_return: float = Field(description="This step's predicted log return")
    lower: float
    upper: float


class ForecastPath(BaseModel):
    """A recursive ``steps``-candle forecast made after the candle that opened at ``as_of``."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, allow_inf_nan=False)

    schema_: int = Field(PATH_SCHEMA_VERSION, alias="schema")
    series: str
    model: ModelInfo
    as_of: int = Field(description="Open time (ms) of the last candle the path starts from")
    last_close: float
    interval_level: float = Field(description="Nominal level of the one-step interval widened")
    steps: int = Field(ge=1)
    points: list[PathPoint]

    @model_validator(mode="after")
    def _steps_match(self) -> ForecastPath:
        if len(self.points) != self.steps:
            raise ValueError(f"{len(self.points)} points for {self.steps} steps")
        return self

    def to_json(self) -> bytes:
        # pydantic's own serializer: ~20x faster than model_dump + orjson for 240 points
        return self.model_dump_json(by_alias=True).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> ForecastPath:
        return cls.model_validate(orjson.loads(raw))


class PathStore:
    """Read and replace the stored path of a series."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def write(self, path: ForecastPath) -> None:
        """Replace the series' path (one ``SET``: readers never see half of one)."""
        series = SeriesId.parse(path.series)
        await self.redis.set(self.keys.forecast_path(series), path.to_json())

    async def read(self, series: SeriesId) -> ForecastPath | None:
        """The stored path, or None: none yet, or one this version cannot read (an older or
        newer schema, a damaged value), which the forecaster replaces with the next candle."""
        raw = await self.redis.get(self.keys.forecast_path(series))
        if raw is None:
            return None
        try:
            path = ForecastPath.from_json(raw)
        except (orjson.JSONDecodeError, ValidationError):
            return None
        return path if path.schema_ == PATH_SCHEMA_VERSION and path.series == series.key else None
