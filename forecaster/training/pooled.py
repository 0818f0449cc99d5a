"""The global model: one LSTM trained across every series of a timeframe.

A global model (DeepAR, N-BEATS; Montero-Manso & Hyndman on why it matches per-series models)
learns from windows of many related series at once, and its cost does not grow with the number
of series it serves. Every input is already scale-free (log returns, log range, log volume
change, Garman-Klass volatility, time of day) and every window is divided by its own trailing
volatility (``normalisation = trailing_rms``), so series of any price level and volatility mix.

Per series, the candles are cut into the same three chronological slices as a per-series
training (train, early stop, holdout; :func:`forecaster.features.slice_bounds`). A random sample
of at most ``global_sample`` training windows is drawn across all series (early stop and holdout
sampled in proportion, with a floor per series so each has a holdout score), so memory does not
depend on how many series there are. The scaler is fit on the sampled training windows only.
The holdout is scored per series (CRPS, MAE against naive, the static interval) and pooled;
promotion (decision 2, the CRPS rule) reads the pooled figures, and a series the model serves
worse than naive is listed in ``meta["worse_than_naive"]`` and logged, not hidden.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog

from config.settings import ModelSettings
from forecaster.data import CandleArrays
from forecaster.distribution import ReturnDistribution
from forecaster.econometric import fit_model
from forecaster.features import (
    FeatureError,
    Scaler,
    WindowSet,
    _normalise,
    _raw_windows,
    build_windows,
    feature_matrix,
    log_returns,
    slice_bounds,
    target_rows,
)
from forecaster.inference import LoadedModel
from forecaster.metrics import score
from forecaster.training.fit import fit_keras, raise_if_stopped
from forecaster.training.holdout import calibrated_level, published, score_candidate
from forecaster.training.model import configure_tensorflow
from forecaster.training.train import (
    TrainingResult,
    _lstm_dist,
    _num,
    calibrate_candidate,
    finish_meta,
    model_identity,
)

__all__ = ["candles_per_series", "train_global"]

log = structlog.get_logger(__name__)

MIN_HOLDOUT_PER_SERIES = 50  # windows each series keeps for its own holdout score


def candles_per_series(settings: ModelSettings, n_series: int, min_candles: int) -> int:
    """How many of its newest candles each of ``n_series`` series contributes to one training:
    enough for its share of ``global_sample`` windows, at least ``min_candles``, at most
    ``train_candles``."""
    train_share = 1.0 - settings.early_stop_fraction - settings.holdout_fraction
    share = math.ceil(settings.global_sample / max(n_series, 1) / train_share) + settings.window
    return max(min(share, settings.train_candles), min(min_candles, settings.train_candles))


@dataclass
class _Series:
    """One member's slices: its candles, features and sampled target rows per slice."""

    arrays: CandleArrays
    feats: np.ndarray
    train_end: int
    rows: list[np.ndarray]  # train, early stop, holdout target rows (sampled)
    sets: list[WindowSet] | None = None


def train_global(
    arrays_by_series: Mapping[str, CandleArrays],
    settings: ModelSettings,
    *,
    current: LoadedModel | None = None,
    warm_start: bool = True,
    stop: threading.Event | None = None,
) -> TrainingResult:
    """Train one model on windows of every series in ``arrays_by_series`` (see the module doc).

    ``current`` (the serving global model, if any) is scored on the same holdout points and,
    when its architecture matches, seeds the weights. Series too short for three slices are left
    out (logged); :class:`FeatureError` when none is left or the normalisation is ``none``.
    Once ``stop`` is set the run ends with ``TrainingStopped`` and stores nothing.
    """
    t0 = time.perf_counter()
    if settings.normalisation == "none":
        raise FeatureError("a global model needs per-window normalisation (trailing_rms)")
    configure_tensorflow(settings.threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    names: list[str] = [str(f) for f in settings.features]
    window, norm = settings.window, settings.normalisation
    members = _slice_members(arrays_by_series, settings)
    rng = np.random.default_rng(settings.seed)
    _sample(members, settings.global_sample, rng)
    raws = {
        key: [_window_parts(m.arrays, m.feats, rows, window, names, norm) for rows in m.rows]
        for key, m in members.items()
    }
    train_x = np.concatenate([r[0][0] for r in raws.values()])
    train_y = np.concatenate([r[0][2] for r in raws.values()])
    scaler = Scaler.fit(names, train_x.reshape(-1, len(names)), train_y)
    for key, m in members.items():
        m.sets = [
            build_windows(m.arrays, x, sig, yn, rows, scaler)
            for rows, (x, sig, yn) in zip(m.rows, raws[key], strict=True)
        ]
    del raws, train_x, train_y
    train_set = _concat([m.sets[0] for m in members.values() if m.sets])
    es_set = _concat([m.sets[1] for m in members.values() if m.sets])
    ho_set = _concat([m.sets[2] for m in members.values() if m.sets])

    fitted = fit_keras(
        settings, train_set.x, train_set.y, es_set.x, es_set.y, current, warm_start, stop=stop
    )
    model = fitted.model
    meta = _base_meta(members, scaler, settings, (len(train_set), len(es_set), len(ho_set)))
    candidate, naive_point, _ = calibrate_candidate(model, meta, settings, es_set, ho_set)
    per_series, pooled = _score(members, candidate, current, naive_point, settings)
    raise_if_stopped(stop)  # scoring every series takes a while too
    meta["per_series"] = per_series
    meta["holdout"] = pooled
    skills = [s["skill"] for s in per_series.values() if s["skill"] is not None]
    meta["skill"] = _num(float(np.mean(skills))) if skills else None
    meta["champion"] = {
        "kind": "lstm",
        "crps": pooled["candidate"]["crps"],
        "calibrated_level": pooled["candidate"]["calibrated_level"],
        "skill": meta["skill"],
    }
    meta["worse_than_naive"] = sorted(k for k, s in per_series.items() if s["worse_than_naive"])
    if meta["worse_than_naive"]:
        log.warning("global_model.worse_than_naive", series=meta["worse_than_naive"])

    artifact = finish_meta(meta, fitted, settings, warm_start, t0)
    log.info(
        "global_model_trained",
        series=len(members),
        windows=len(train_set),
        epochs=len(fitted.val),
        warm_started=fitted.warm,
        crps=pooled["candidate"]["crps"],
        static_crps=pooled["static"]["crps"],
        current_crps=(pooled["current"] or {}).get("crps"),
        duration_s=meta["duration_s"],
    )
    return TrainingResult.of(artifact, meta, candidate, fitted)


def _slice_members(
    arrays_by_series: Mapping[str, CandleArrays], settings: ModelSettings
) -> dict[str, _Series]:
    names, window = [str(f) for f in settings.features], settings.window
    members: dict[str, _Series] = {}
    for key in sorted(arrays_by_series):
        used = arrays_by_series[key].tail(settings.train_candles)
        b1, b2 = slice_bounds(len(used), settings.early_stop_fraction, settings.holdout_fraction)
        rows = [
            target_rows(used, window, 0, b1),
            target_rows(used, window, b1, b2),
            target_rows(used, window, b2),
        ]
        if any(r.size < 2 for r in rows):
            log.info("global_model.series_left_out", series=key, candles=len(used))
            continue
        members[key] = _Series(used, feature_matrix(used, names), b1, rows)
    if not members:
        raise FeatureError("no series has enough candles for three slices of windows")
    return members


def _sample(members: dict[str, _Series], budget: int, rng: np.random.Generator) -> None:
    """Keep at most ``budget`` training windows across series (uniformly), and the early-stop
    and holdout windows in the same proportion (at least a floor per series for the holdout)."""
    total = sum(m.rows[0].size for m in members.values())
    frac = min(1.0, budget / max(total, 1))
    if frac >= 1.0:
        return
    for m in members.values():
        for i, rows in enumerate(m.rows):
            floor = MIN_HOLDOUT_PER_SERIES if i == 2 else 2
            k = min(rows.size, max(floor, round(rows.size * frac)))
            m.rows[i] = np.sort(rng.choice(rows, size=k, replace=False))


def _window_parts(
    arrays: CandleArrays,
    feats: np.ndarray,
    rows: np.ndarray,
    window: int,
    names: list[str],
    norm: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, sigma, yn = _raw_windows(arrays, feats, rows, window, norm)
    return _normalise(x, sigma, names, norm), sigma, yn


def _concat(sets: list[WindowSet]) -> WindowSet:
    """Windows of several series as one set (``rows`` then index into their own series)."""
    return WindowSet(*(np.concatenate([getattr(s, f) for s in sets]) for f in WindowSet.__slots__))


def _base_meta(
    members: dict[str, _Series],
    scaler: Scaler,
    s: ModelSettings,
    windows: tuple[int, int, int],
) -> dict[str, Any]:
    firsts = [int(m.arrays.open_time[0]) for m in members.values()]
    lasts = [int(m.arrays.open_time[-1]) for m in members.values()]
    tf = next(iter(members.values())).arrays.timeframe
    return {
        **model_identity(s, tf.text),
        "scope": "global",
        "members": list(members),
        "scaler": scaler.to_json(),
        # Age is counted from the newest candle any member was trained on.
        "training_range": {
            "first_open_time": min(firsts),
            "last_open_time": max(lasts),
            "candles": sum(len(m.arrays) for m in members.values()),
            "series": len(members),
        },
        "sample": {
            "budget": s.global_sample,
            "train_windows": windows[0],
            "early_stop_windows": windows[1],
            "holdout_windows": windows[2],
        },
        "seed": s.seed,
    }


def _score(
    members: dict[str, _Series],
    candidate: LoadedModel,
    current: LoadedModel | None,
    naive_point: bool,
    settings: ModelSettings,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Per-series and pooled holdout scores of the candidate, the static interval (naive as a
    distribution), EWMA and the current model, all on the same points."""
    level = settings.interval_level
    per: dict[str, dict[str, Any]] = {}
    pooled: dict[str, list[np.ndarray]] = {"lstm": [], "static": [], "ewma": [], "current": []}
    cand_dists: list[ReturnDistribution] = []
    cand_sets: list[WindowSet] = []
    current_ok = current is not None
    for key, m in members.items():
        assert m.sets is not None
        ho = m.sets[2]
        keep = np.ones(len(ho), dtype=bool)
        cur_dist = None
        if current is not None:
            dist, ok = current.predict_distribution(m.arrays, ho.rows)
            cur_dist, keep = dist, ok
            if not ok.any():
                current_ok = False
        ws = ho.subset(keep)
        lstm = published(_lstm_dist(candidate, ho), naive_point).take(keep)
        rets = log_returns(m.arrays)
        base: dict[str, ReturnDistribution] = {}
        for kind in ("static", "ewma"):
            fitted = fit_model(kind, rets[: m.train_end], context={"series": key})
            var, _ = fitted.filter(rets)
            base[kind] = fitted.distribution(var[ws.rows])
        scale = float(np.mean(np.abs(m.sets[0].actual_close - m.sets[0].last_close)))
        cand = score_candidate(lstm, ws, level, scale)
        naive_mae = score(ws.actual_close, ws.last_close, ws.last_close, scale=scale).mae
        r = ws.target_ret
        crps = {k: lstm.crps(r) if k == "lstm" else base[k].crps(r) for k in ("lstm", *base)}
        for k, v in crps.items():
            pooled[k].append(v)
        if cur_dist is not None:
            pooled["current"].append(cur_dist.take(keep).crps(r))
        cand_dists.append(lstm)
        cand_sets.append(ws)
        static_crps = float(np.mean(crps["static"]))
        per[key] = {
            "n": len(ws),
            "crps": cand["crps"],
            "static_crps": _num(static_crps),
            "ewma_crps": _num(float(np.mean(crps["ewma"]))),
            "mae": cand["mae"],
            "naive_mae": _num(naive_mae),
            "skill": _num(1.0 - cand["mae"] / naive_mae) if naive_mae else None,
            "coverage_nominal": cand["coverage_nominal"],
            "worse_than_naive": not (cand["crps"] is not None and cand["crps"] < static_crps),
        }
    all_ws = _concat(cand_sets)
    all_dist = ReturnDistribution(
        np.concatenate([d.loc for d in cand_dists]),
        np.concatenate([d.scale for d in cand_dists]),
        np.concatenate([np.broadcast_to(d.df, d.loc.shape) for d in cand_dists]),
    )
    cal = calibrated_level(all_dist, all_ws.target_ret, level)

    def mean(kind: str) -> float | None:
        return _num(float(np.mean(np.concatenate(pooled[kind])))) if pooled[kind] else None

    holdout: dict[str, Any] = {
        "metric": "crps",
        "pooled_over": len(per),
        "n": len(all_ws),
        "candidate": {"crps": mean("lstm"), "calibrated_level": cal},
        "static": {"crps": mean("static")},
        "ewma": {"crps": mean("ewma")},
        "champion": "lstm",
        "current": {"crps": mean("current")} if current is not None and current_ok else None,
        "current_sha256": current.meta.artifact_sha256 if current is not None else None,
    }
    return per, holdout
