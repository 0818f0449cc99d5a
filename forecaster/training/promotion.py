"""Whether a freshly trained model replaces the serving one (docs/architecture.md, decision 2).

Pure functions over the typed metadata (:class:`core.model_meta.ModelMeta`) of the candidate
:func:`forecaster.training.train.train` made and of the serving version, so the serving side can
decide without importing TensorFlow.

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
from typing import Protocol

from core.model_meta import Holdout, ModelMeta, Scores

__all__ = ["PromotionDecision", "decide_promotion", "judge", "should_promote"]


@dataclass(frozen=True, slots=True)
class PromotionDecision:
    """The decision and a short machine-friendly reason (for logs and status)."""

    promote: bool
    reason: str


class _Trained(Protocol):
    @property
    def typed_meta(self) -> ModelMeta: ...


def _get(scores: Scores | None, metric: str) -> float:
    v = None if scores is None else getattr(scores, metric)
    return float(v) if v is not None else math.nan


def _scores(holdout: Holdout) -> tuple[float, float, float]:
    """``(candidate, naive, current)`` scores of one holdout (lower is better)."""
    if holdout.metric == "crps":
        return (
            _get(holdout.scores(holdout.champion), "crps"),
            _get(holdout.scores("static"), "crps"),
            _get(holdout.current, "crps"),
        )
    return (
        _get(holdout.candidate, "mae"),
        _get(holdout.naive, "mae"),
        _get(holdout.current, "mae"),
    )


def _better(a: float, b: float) -> bool:
    return math.isfinite(a) and math.isfinite(b) and a < b


def judge(
    holdout: Holdout | None, has_current: bool, current_sha: str | None, current_expired: bool
) -> PromotionDecision:
    """The rules on a candidate's ``holdout`` against a serving version (when ``has_current``)
    whose artifact sha256 is ``current_sha`` (``None``: unknown, taken as the one scored)."""
    holdout = holdout or Holdout()
    cand, naive, current = _scores(holdout)
    beats_naive = _better(cand, naive)
    if not has_current:
        if not math.isfinite(cand):
            return PromotionDecision(False, "no_valid_score")
        why = "first_model_beats_naive" if beats_naive else "first_model_worse_than_naive"
        return PromotionDecision(True, why)
    same_current = holdout.current is not None and (
        current_sha is None or holdout.current_sha256 == current_sha
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


def decide_promotion(
    meta: ModelMeta, current_meta: ModelMeta | None, current_expired: bool
) -> PromotionDecision:
    """Apply the promotion rules to a candidate's metadata (see the module docstring)."""
    current_sha = None if current_meta is None else current_meta.artifact_sha256
    return judge(meta.holdout, current_meta is not None, current_sha, current_expired)


def should_promote(
    result: _Trained | ModelMeta, current_meta: ModelMeta | None, current_expired: bool
) -> bool:
    """``True`` when ``result`` (a ``TrainingResult`` or its metadata) should be served."""
    meta = result if isinstance(result, ModelMeta) else result.typed_meta
    return decide_promotion(meta, current_meta, current_expired).promote
