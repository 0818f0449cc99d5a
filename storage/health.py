"""Per-series health, as ``cryptocast status`` and the web API report it.

Read-only: candles stored, newest candle and its age, holes, the current model, the last
prediction (and how far it lags the candles, in candles and in time), the live score and the
last training attempt. A series is *stale* when its newest candle closed more than
``stale_after`` timeframes ago by the service clock, or when its last prediction is older than
its newest candle by as much. It is *degraded* (reported, not a failure) when its live relative
MAE (MAE / naive MAE, :mod:`storage.scores`) over
at least ``DEGRADED_MIN_SCORED`` scored predictions is above 1: the model does worse than the
naive "next close = last close" forecast on the candles it actually predicted.
"""

from __future__ import annotations

from typing import Any

from core.clock import Clock
from core.series import SeriesId, model_subject
from storage.calibration import levels
from storage.facade import Storage
from storage.registry import ModelIntegrityError
from storage.scores import relative_mae

# A live relative MAE over fewer scored predictions than this says nothing either way.
DEGRADED_MIN_SCORED = 30


async def series_health(
    storage: Storage,
    series: SeriesId,
    clock: Clock,
    stale_after: int,
    *,
    scope: str,
) -> dict[str, Any]:
    """One entry of ``status --json``'s ``series`` list (fields documented in the README);
    ``scope`` (``model.scope``) says whose model serves the series."""
    tf = series.timeframe
    now = clock.now_ms()
    store = storage.candles
    # The prediction first: it is published after its candle is stored, so a candle and its
    # prediction arriving while we read can make the lag look longer, never negative.
    latest = await storage.predictions.latest(series)
    count = await store.count(series)
    last = await store.last_open_time(series)
    holes = await store.holes(series) if count else []
    unfillable = set(await store.unfillable(series))
    model: dict[str, Any] | None = None
    try:
        rec = await storage.registry.current(model_subject(series, scope), with_artifact=False)
    except ModelIntegrityError as e:
        model = {"error": str(e)}
        rec = None
    if rec is not None:
        meta = rec.meta
        model = {
            "version": rec.version,
            "kind": meta.champion_kind,
            "scope": meta.scope,
            "trained_at": rec.trained_at,
            "skill": meta.skill,
            "age_candles": None if last is None else meta.age_at(last, tf),
        }
    # The training of the model that serves the series: with the global scope, its timeframe's.
    training = await storage.training_log.state(model_subject(series, scope))
    live_score = await storage.scores.read(series)
    reasons: list[str] = []
    age_ms = None if last is None else max(0, now - tf.next_open(last))
    if last is None:
        reasons.append("no candles")
    elif age_ms is not None and age_ms > stale_after * tf.ms:
        reasons.append(f"last candle closed {age_ms / 1000:.0f}s ago")
    if (
        latest is not None
        and last is not None
        and tf.floor_index(last) - tf.floor_index(latest.as_of) > stale_after
    ):
        reasons.append("predictions lag the candles")
    degraded: list[str] = []
    rel = relative_mae(live_score)
    if rel is not None and (live_score or {}).get("n", 0) >= DEGRADED_MIN_SCORED and rel > 1:
        degraded.append(f"live MAE / naive MAE {rel:.3f} > 1 (worse than naive)")
    return {
        "series": series.key,
        "candles": count,
        "first_open_time": await store.first_open_time(series) if count else None,
        "last_open_time": last,
        "last_candle_age_ms": age_ms,
        "holes": [{**h.to_dict(), "unfillable": h.first in unfillable} for h in holes],
        "stale": bool(reasons),
        "stale_reasons": reasons,
        "degraded": bool(degraded),
        "degraded_reasons": degraded,
        "model": model,
        "last_prediction": None if latest is None else latest.model_dump(by_alias=True),
        "prediction_lag_candles": None
        if latest is None or last is None
        else tf.floor_index(last) - tf.floor_index(latest.as_of),
        "last_prediction_age_ms": None if latest is None else max(0, now - latest.published_at),
        "live_score": live_score,
        "calibration": levels(await storage.calibration.read(series)),
        "last_training": {
            k: training.get(k)
            for k in ("outcome", "version", "started_at", "finished_at", "duration_s", "skill")
        }
        if training
        else None,
    }
