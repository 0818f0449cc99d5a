"""The metadata of a stored model version: one typed, versioned schema every reader uses.

A version in the registry is the ``.keras`` bytes plus this JSON (docs/architecture.md, "Model
registry"). The training run writes it; the registry parses it on every read (metadata that does
not parse is an integrity error, like a wrong sha256) and hands out a :class:`ModelMeta`; serving,
scheduling, training, evaluation, health and the web read its fields instead of string keys.

``schema`` versions the content (:data:`META_SCHEMA_VERSION`; schema 1 models still load). Every
model allows extra fields, so what newer code writes (a global model's ``members``, per-series
scores) survives a round trip through older readers. Fields are optional where some writer
(an older schema, a hand-made test version) leaves them out; what a model needs to be *served*
(architecture, scaler, interval) is checked by the loader, ``forecaster.meta_check.check_meta``.

A model's age is the number of candles closed since the last one it was trained on,
:meth:`ModelMeta.age_at`; expiry compares it with ``schedule.max_model_age``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.series import Timeframe

__all__ = [
    "META_KIND",
    "META_SCHEMA_VERSION",
    "SUPPORTED_META_SCHEMAS",
    "Architecture",
    "Champion",
    "EconometricEntry",
    "HeadParams",
    "Holdout",
    "Interval",
    "ModelMeta",
    "ModelMetaError",
    "Promotion",
    "ScalerParams",
    "Scores",
    "SliceInfo",
    "Slices",
    "TrainingRange",
]

META_SCHEMA_VERSION = 2
SUPPORTED_META_SCHEMAS = (1, 2)
META_KIND = "lstm-returns"


class ModelMetaError(ValueError):
    """Metadata that does not fit the schema (the message names the first wrong field)."""


class _Meta(BaseModel):
    # Frozen: a record read from the registry is immutable. Extra: newer writers' fields survive.
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


class TrainingRange(_Meta):
    """The candles the model was trained on (open times, UTC ms)."""

    last_open_time: int
    first_open_time: int | None = None
    candles: int | None = None
    holes: list[list[int]] | None = None


class Architecture(_Meta):
    """What the ``.keras`` file was built from; a warm start needs the same."""

    window: int
    features: list[str]
    units: int | None = None
    layers: int | None = None
    dropout: float | None = None
    head: str = "mse"
    normalisation: str = "none"


class ScalerParams(_Meta):
    """Feature and target scaling fitted on the training slice (plain numbers, never a pickle)."""

    features: list[str]
    mean: list[float]
    std: list[float]
    target_mean: float
    target_std: float


class Interval(_Meta):
    """The static holdout interval (schema 1) and the level calibrated on the holdout."""

    level: float
    q_low: float
    q_high: float
    calibrated_level: float | None = None
    calibrated_on: str | None = None
    coverage_early_stop: float | None = None


class HeadParams(_Meta):
    mse_scale: float | None = None


class Scores(_Meta):
    """One candidate's scores on the holdout (price space; ``None`` where not finite)."""

    n: int | None = None
    mae: float | None = None
    rmse: float | None = None
    mape: float | None = None
    mase: float | None = None
    direction: float | None = None
    coverage: float | None = None
    width: float | None = None
    crps: float | None = None
    calibrated_level: float | None = None
    coverage_nominal: float | None = None
    sigma_mean: float | None = None
    point: str | None = None
    fitted: str | None = None


class Holdout(_Meta):
    """Every candidate, the baselines and the serving version, scored on the same holdout.

    ``candidate`` is the LSTM; the econometric candidates and the point baselines (``drift``,
    ``ar<lags>``) are keyed by kind: read any of them with :meth:`scores`.
    """

    n: int | None = None
    metric: str | None = None
    champion: str = "lstm"
    mase_scale: float | None = None
    n_dropped_for_current: int | None = None
    candidate: Scores | None = None
    naive: Scores | None = None
    current: Scores | None = None
    current_kind: str | None = None
    current_sha256: str | None = None
    current_overlaps_holdout: bool | None = None

    def scores(self, kind: str) -> Scores | None:
        """The scores of candidate ``kind`` (``lstm`` is the ``candidate``), if recorded."""
        if kind in ("lstm", "candidate"):
            return self.candidate
        if kind in ("naive", "current"):
            return self.naive if kind == "naive" else self.current
        raw = (self.model_extra or {}).get(kind)
        return Scores.model_validate(raw) if isinstance(raw, Mapping) else None


class EconometricEntry(_Meta):
    """What serving needs to filter an econometric model forward: parameters and state."""

    params: dict[str, Any]
    state: dict[str, Any]
    state_time: int
    point: str = "model"
    calibrated_level: float | None = None


class Champion(_Meta):
    """The candidate the version publishes (lowest holdout CRPS), with its parameters when
    econometric."""

    kind: str = "lstm"
    crps: float | None = None
    calibrated_level: float | None = None
    skill: float | None = None
    point: str | None = None
    params: dict[str, Any] | None = None
    state: dict[str, Any] | None = None
    state_time: int | None = None

    def entry(self) -> EconometricEntry | None:
        """Its econometric parameters and state, when it carries them."""
        if self.params is None or self.state is None or self.state_time is None:
            return None
        fields = self.model_dump(exclude={"kind", "crps", "skill"}, exclude_none=True)
        return EconometricEntry.model_validate(fields)


class SliceInfo(_Meta):
    windows: int | None = None
    first_target_time: int | None = None
    last_target_time: int | None = None


class Slices(_Meta):
    train: SliceInfo | None = None
    early_stop: SliceInfo | None = None
    holdout: SliceInfo | None = None


class Promotion(_Meta):
    """The decision taken when the version was stored (docs/architecture.md, decision 2)."""

    promote: bool
    reason: str
    current_expired: bool | None = None


class ModelMeta(_Meta):
    """One model version's metadata (see the module docstring)."""

    schema_: int | None = Field(default=None, alias="schema")
    kind: str | None = None
    scope: Literal["series", "global"] = "series"
    timeframe: str | None = None
    training_range: TrainingRange
    architecture: Architecture | None = None
    scaler: ScalerParams | None = None
    interval: Interval | None = None
    head_params: HeadParams | None = None
    point: str | None = None
    holdout: Holdout | None = None
    champion: Champion | None = None
    econometric: dict[str, EconometricEntry] | None = None
    slices: Slices | None = None
    skill: float | None = None
    epochs_run: int | None = None
    best_epoch: int | None = None
    warm_started: bool | None = None
    duration_s: float | None = None
    keras_version: str | None = None
    seed: int | None = None
    trained_at: int | None = None
    promotion: Promotion | None = None
    artifact_sha256: str | None = None
    npz_sha256: str | None = None  # the numpy artifact's (docs/architecture.md, decision 11)
    sha256: str | None = None
    version: str | None = None
    # A global model (scope "global"): the series it was trained on, and those its holdout
    # scored worse than naive (per-series scores are the extra field ``per_series``).
    members: list[str] | None = None
    worse_than_naive: list[str] | None = None

    @classmethod
    def parse(cls, meta: ModelMeta | Mapping[str, Any] | bytes | str) -> ModelMeta:
        """``meta`` itself, or the dict or JSON text validated; raises :class:`ModelMetaError`."""
        if isinstance(meta, ModelMeta):
            return meta
        try:
            if isinstance(meta, bytes | str):
                return cls.model_validate_json(meta)
            return cls.model_validate(meta)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "document"
            more = f" (+{e.error_count() - 1} more)" if e.error_count() > 1 else ""
            raise ModelMetaError(f"model metadata {where}: {first['msg']}{more}") from None

    def to_json(self) -> dict[str, Any]:
        """The JSON object this was read from: only the fields that were given, by their names."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    def replace(self, **changes: Any) -> ModelMeta:
        """A copy with top-level fields replaced (given as JSON values), validated again."""
        return ModelMeta.parse({**self.to_json(), **changes})

    @property
    def champion_kind(self) -> str:
        """What the version publishes: its champion (``lstm`` for versions before champions)."""
        return self.champion.kind if self.champion is not None else "lstm"

    def skill_of(self, kind: str) -> float | None:
        """Holdout skill (1 − MAE/MAE_naive) of the model ``kind`` published."""
        if kind == "lstm":
            return self.skill
        return self.champion.skill if self.champion is not None else None

    def econometric_entry(self, kind: str) -> EconometricEntry | None:
        """The stored parameters and state of econometric model ``kind``: the champion's when
        it is that kind, else the fallback copy kept for every econometric candidate."""
        champ = self.champion
        if champ is not None and champ.kind == kind and (entry := champ.entry()) is not None:
            return entry
        return (self.econometric or {}).get(kind)

    def age_at(self, open_time_ms: int, timeframe: Timeframe) -> int:
        """Candles closed from the last one trained on up to the candle containing
        ``open_time_ms`` (0 for a candle the model was trained on or an older one)."""
        last = self.training_range.last_open_time
        return max(0, timeframe.floor_index(open_time_ms) - timeframe.floor_index(last))

    def expired(self, open_time_ms: int, timeframe: Timeframe, max_age: int) -> bool:
        """Older than ``max_age`` candles at ``open_time_ms`` (docs/architecture.md, decision 2)."""
        return self.age_at(open_time_ms, timeframe) > max_age
