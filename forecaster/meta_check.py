"""Checking a model version's metadata before serving it: what the loader relies on.

The registry's metadata is typed (:class:`core.model_meta.ModelMeta`); what it cannot say on its
own (features the forecaster knows, a scaler that matches them, a usable interval) is checked
here, so a version that cannot be served is refused at load with a reason, never mid-forecast.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from core.model_meta import (
    META_KIND,
    SUPPORTED_META_SCHEMAS,
    Architecture,
    Interval,
    ModelMeta,
    ModelMetaError,
)
from forecaster.features import FEATURE_NAMES, NORMALISATIONS, FeatureError, Scaler
from forecaster.numpy_lstm import ArtifactError

__all__ = ["check_meta"]


def check_meta(
    meta: ModelMeta | Mapping[str, Any],
) -> tuple[ModelMeta, Scaler, Architecture, Interval]:
    """Validate model metadata for serving; return it parsed with its scaler, architecture and
    interval, or raise ArtifactError."""
    try:
        meta = ModelMeta.parse(meta)
    except ModelMetaError as e:
        raise ArtifactError(str(e)) from None
    if meta.schema_ not in SUPPORTED_META_SCHEMAS or meta.kind != META_KIND:
        raise ArtifactError(
            f"model metadata schema {meta.schema_!r}/{meta.kind!r} is not "
            f"one of {SUPPORTED_META_SCHEMAS}/{META_KIND}"
        )
    arch = meta.architecture
    if arch is None:
        raise ArtifactError("model metadata has no architecture")
    feats = arch.features
    if not feats or any(f not in FEATURE_NAMES for f in feats):
        raise ArtifactError(f"model features {feats!r} are not a subset of {FEATURE_NAMES}")
    if arch.window < 2:
        raise ArtifactError(f"bad window {arch.window!r} in model metadata")
    if arch.head not in ("mse", "gaussian", "student_t"):
        raise ArtifactError(f"unknown head {arch.head!r} in model metadata")
    if arch.normalisation not in NORMALISATIONS:
        raise ArtifactError(f"unknown normalisation {arch.normalisation!r}")
    if meta.scaler is not None and meta.scaler.features != feats:
        raise ArtifactError(f"scaler features {meta.scaler.features} != model features {feats}")
    try:
        scaler = Scaler.from_json(meta.scaler.model_dump() if meta.scaler is not None else {})
    except FeatureError as e:
        raise ArtifactError(str(e)) from None
    if list(scaler.features) != feats:
        raise ArtifactError(f"scaler features {list(scaler.features)} != model features {feats}")
    iv = meta.interval
    if iv is None:
        raise ArtifactError("model metadata has no interval")
    if not all(math.isfinite(v) for v in (iv.q_low, iv.q_high, iv.level)):
        raise ArtifactError(f"bad interval {iv.model_dump()!r} in model metadata")
    if iv.q_low > iv.q_high:
        raise ArtifactError(f"bad interval {iv.model_dump()!r} in model metadata")
    return meta, scaler, arch, iv
