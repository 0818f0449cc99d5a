"""Whether a freshly trained model replaces the serving one (docs/architecture.md, decision 2).

Pure functions over the metadata dicts :func:`forecaster.training.train.train` writes, so the
serving side can decide without importing TensorFlow.

Rules, with MAE in price space on the candidate's holdout as the score ("better" is strict; see
the end for the CRPS of distributions that newer metadata is judged by):

1. No current model: promote the candidate if its holdout score is valid, whether or not it
   beats the naive forecast: a deployment that publishes nothing until some model beats naive
   (at short horizons that may be never) serves no one, while every message carries the model's
   validation skill vs naive, so a bot sees a first model that is worse than naive for what it is.
2. A current model that was scored on the *same* holdout (the candidate's metadata records the
   current's artifact sha256): promote if the candidate beats it.
3. Otherwise, if the current model is expired: promote if the candidate beats naive.
4. Otherwise keep the current model (a candidate never scored against it cannot prove it is
   better, however good it looks against naive).

Metadata that records ``holdout.metric = "crps"`` (every version trained since the models publish
distributions) is judged by the same rules with the holdout CRPS of distributions instead of MAE:
the candidate's score is its *champion*'s (the best of the LSTM, GARCH-t, EWMA and static on that
holdout, :mod:`forecaster.training.holdout`), the current one's is the serving version's champion
scored on the same points, and "beats naive" means beating the static interval around the last close
(the naive forecast as a distribution). So a new LSTM is promoted only by beating what serves now.
The published point never loses to naive there: :mod:`forecaster.training.holdout` falls it back to
the last close when it would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["PromotionDecision", "decide_promotion", "should_promote"]


@dataclass(frozen=True, slots=True)
class PromotionDecision:
    """The decision and a short machine-friendly reason (for logs and status)."""

    promote: bool
    reason: str


def _get(scores: Any, metric: str) -> float:
    if not isinstance(scores, dict):
        return math.nan
    v = scores.get(metric)
    return float(v) if isinstance(v, int | float) else math.nan


def _scores(holdout: dict[str, Any]) -> tuple[float, float, float]:
    """``(candidate, naive, current)`` scores of one holdout (lower is better)."""
    if holdout.get("metric") == "crps":
        champ = holdout.get("champion", "lstm")
        cand = holdout.get("candidate") if champ == "lstm" else holdout.get(champ)
        return (
            _get(cand, "crps"),
            _get(holdout.get("static"), "crps"),
            _get(holdout.get("current"), "crps"),
        )
    return (
        _get(holdout.get("candidate"), "mae"),
        _get(holdout.get("naive"), "mae"),
        _get(holdout.get("current"), "mae"),
    )


def _better(a: float, b: float) -> bool:
    return math.isfinite(a) and math.isfinite(b) and a < b


def decide_promotion(
    meta: dict[str, Any], current_meta: dict[str, Any] | None, current_expired: bool
) -> PromotionDecision:
    """Apply the promotion rules to a candidate's metadata (see the module docstring)."""
    holdout = meta.get("holdout") or {}
    cand, naive, current = _scores(holdout)
    beats_naive = _better(cand, naive)
    if current_meta is None:
        if not math.isfinite(cand):
            return PromotionDecision(False, "no_valid_score")
        why = "first_model_beats_naive" if beats_naive else "first_model_worse_than_naive"
        return PromotionDecision(True, why)
    scored_sha = holdout.get("current_sha256")
    current_sha = current_meta.get("artifact_sha256")
    same_current = holdout.get("current") is not None and (
        current_sha is None or scored_sha == current_sha
    )
    if same_current and _better(cand, current):
        return PromotionDecision(True, "beats_current")
    if current_expired:
        if beats_naive:
            return PromotionDecision(True, "current_expired_beats_naive")
        return PromotionDecision(False, "current_expired_not_better_than_naive")
    if not same_current:
        return PromotionDecision(False, "not_scored_against_current")
    return PromotionDecision(False, "not_better_than_current")


def should_promote(result: Any, current_meta: dict[str, Any] | None, current_expired: bool) -> bool:
    """``True`` when ``result`` (a ``TrainingResult`` or its ``meta`` dict) should be served."""
    meta = result if isinstance(result, dict) else result.meta
    return decide_promotion(meta, current_meta, current_expired).promote
