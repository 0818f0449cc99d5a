"""One training run: windows → Keras fit with early stopping → holdout scoring → artifact + meta.

Runs in the training process, never in the serving path (docs/architecture.md, decision 3). The
holdout is the most recent slice; the LSTM, the econometric candidates (EWMA, GARCH-t, static), the
naive forecast, simple point baselines and the current version's champion (when given) are all
scored on the same holdout target candles (:mod:`forecaster.training.holdout`): point metrics in
price space and the CRPS of each distribution. The champion by CRPS is recorded in
``meta["champion"]`` (with its fitted parameters and filter state when econometric) and is what the
version publishes.

Interval: the published interval is the champion's distribution's central interval, read at a
level calibrated on the holdout (``interval.calibrated_level``, split conformal) and adapted live
(:mod:`forecaster.calibration`). ``interval.coverage_early_stop`` reports the LSTM's interval at
that level on the (earlier, not used for calibration) early-stop slice as an honest check.
``interval.q_low``/``q_high`` keep the static residual quantiles of the LSTM's point on the
holdout, for reference and for schema-1 readers.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import structlog

from config.settings import ModelSettings
from core.model_meta import META_KIND, META_SCHEMA_VERSION, ModelMeta
from forecaster.baselines import ARBaseline, DriftBaseline, return_history
from forecaster.data import CandleArrays
from forecaster.distribution import ReturnDistribution
from forecaster.econometric import VarianceModel
from forecaster.features import PreparedData, WindowSet, prepare
from forecaster.inference import LoadedModel
from forecaster.metrics import price_from_return, score
from forecaster.training.fit import FitResult, TrainingStopped, fit_keras, raise_if_stopped
from forecaster.training.holdout import (
    Candidate,
    calibrated_level,
    champion_meta,
    choose_champion,
    econ_entry,
    econometric_candidates,
    filtered_on,
    point_is_naive,
    published,
    score_candidate,
)
from forecaster.training.model import configure_tensorflow, model_forward, save_keras
from forecaster.training.promotion import decide_promotion, judge, should_promote

__all__ = [
    "TrainingResult",
    "TrainingStopped",
    "base_meta",
    "decide_promotion",
    "prepare_for",
    "should_promote",
    "train",
]

log = structlog.get_logger(__name__)

AR_LAGS = 5


@dataclass(frozen=True, slots=True)
class TrainingResult:
    """What a training run hands to the registry (``artifact`` + ``meta``) and to callers."""

    artifact: bytes  # the .keras file
    meta: dict[str, Any]  # the JSON the registry stores (it parses as a ModelMeta); see train()
    model: LoadedModel  # the candidate, ready to predict; ``model.meta`` is ``meta`` parsed
    history: dict[str, list[float]] = field(default_factory=dict)
    npz: bytes = b""  # the numpy artifact serving loads (forecaster.artifact)

    @property
    def typed_meta(self) -> ModelMeta:
        """``meta`` parsed, as the registry will hand it out."""
        return self.model.meta

    @classmethod
    def of(
        cls, artifact: bytes, meta: dict[str, Any], candidate: LoadedModel, fitted: FitResult
    ) -> TrainingResult:
        """A finished run's result: the candidate carries the finished metadata, parsed from
        the bytes the registry will store, and its numpy artifact is written from it."""
        candidate.meta = ModelMeta.parse(orjson.dumps(meta))
        return cls(
            artifact=artifact,
            meta=meta,
            model=candidate,
            history=fitted.history,
            npz=candidate.to_npz(),
        )

    @property
    def skill(self) -> float:
        """1 − MAE/MAE_naive on the holdout (> 0 beats naive)."""
        s = self.typed_meta.skill
        return float(s) if s is not None else math.nan

    def promote(self, current_expired: bool, current_meta: ModelMeta | None = None) -> bool:
        """Decision 2 against ``current_meta`` (default: the ``current`` given to :func:`train`).

        Pass ``current_meta`` explicitly when the serving model may have changed since training.
        """
        holdout = self.typed_meta.holdout
        if current_meta is None and holdout is not None and holdout.current is not None:
            return judge(holdout, True, holdout.current_sha256, current_expired).promote
        return should_promote(self, current_meta, current_expired)


def train(
    arrays: CandleArrays,
    settings: ModelSettings,
    *,
    current: LoadedModel | None = None,
    warm_start: bool = True,
    series_context: dict[str, Any] | None = None,
    stop: threading.Event | None = None,
) -> TrainingResult:
    """Train a candidate on the last ``settings.train_candles`` candles of ``arrays``.

    ``current`` (the serving model, if any) is scored on the candidate's holdout and, when
    ``warm_start`` is true and its architecture, window and features match ``settings``, seeds
    the candidate's weights. Raises :class:`~forecaster.features.FeatureError` when the candles
    leave a slice without windows. Once ``stop`` is set (from another thread: the training
    job's lease was lost, or it was told to end), the fit ends after its current batch and
    :class:`TrainingStopped` is raised: a stopped run yields no model.
    """
    t0 = time.perf_counter()
    configure_tensorflow(settings.threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    used = arrays.tail(settings.train_candles)
    offset = len(arrays) - len(used)
    data = prepare_for(used, settings)
    es_x, es_y = data.early_stop.x, data.early_stop.y
    fitted = fit_keras(
        settings, data.train.x, data.train.y, es_x, es_y, current, warm_start, stop=stop
    )
    model = fitted.model

    meta = base_meta(arrays, data, settings)
    es, ho = data.early_stop, data.holdout
    candidate, _, pub_ho = calibrate_candidate(model, meta, settings, es, ho)

    context = {"timeframe": arrays.timeframe.text, **(series_context or {})}
    econ = econometric_candidates(data.arrays, data.bounds[0], ho, context)
    meta["holdout"] = _score_holdout(arrays, offset, data, pub_ho, econ, current, settings)
    meta["champion"] = champion_meta(meta["holdout"], econ)
    # Every econometric candidate, so serving can fall back to one when the champion cannot
    # forecast (a non-finite output): a few numbers each.
    meta["econometric"] = {k: econ_entry(meta["holdout"], c) for k, c in econ.items()}
    cand_mae = meta["holdout"]["candidate"]["mae"]
    naive_mae = meta["holdout"]["naive"]["mae"]
    meta["skill"] = _num(1.0 - cand_mae / naive_mae) if cand_mae is not None and naive_mae else None

    raise_if_stopped(stop)  # the scoring takes seconds too
    artifact = finish_meta(meta, fitted, settings, warm_start, t0)
    duration = meta["duration_s"]
    log.info(
        "model_trained",
        candles=len(used),
        epochs=len(fitted.val),
        best_epoch=fitted.best_epoch,
        warm_started=fitted.warm,
        skill=meta["skill"],
        mae=cand_mae,
        naive_mae=naive_mae,
        current_mae=(meta["holdout"]["current"] or {}).get("mae"),
        duration_s=duration,
    )
    return TrainingResult.of(artifact, meta, candidate, fitted)


def calibrate_candidate(
    model: Any, meta: dict[str, Any], settings: ModelSettings, es: WindowSet, ho: WindowSet
) -> tuple[LoadedModel, bool, ReturnDistribution]:
    """Fill ``meta``'s head parameters, point rule and interval from the early-stop and holdout
    windows; returns the candidate, whether its point falls back to naive, and its published
    distribution on the holdout."""
    level = settings.interval_level
    if settings.head == "mse":
        resid = es.y.astype(np.float64) - np.asarray(model_forward(model, es.x), np.float64)
        meta["head_params"] = {"mse_scale": max(float(np.std(resid)), 1e-6)}
    meta["interval"] = {"level": level, "q_low": 0.0, "q_high": 0.0}
    candidate = LoadedModel.from_keras(model, meta)
    dist_ho = _lstm_dist(candidate, ho)
    naive_point = point_is_naive(dist_ho, ho)
    meta["point"] = "naive" if naive_point else "model"
    pub_ho = published(dist_ho, naive_point)
    q_low, q_high = _interval_quantiles(ho.target_ret - pub_ho.loc, level)
    cal = calibrated_level(pub_ho, ho.target_ret, level)
    lo_es, hi_es = published(_lstm_dist(candidate, es), naive_point).interval(cal)
    es_cov = float(np.mean((es.target_ret >= lo_es) & (es.target_ret <= hi_es)))
    meta["interval"] = {
        "level": level,
        "q_low": q_low,
        "q_high": q_high,
        "calibrated_level": cal,
        "calibrated_on": "holdout",
        "coverage_early_stop": _num(es_cov),
    }
    return LoadedModel.from_keras(model, meta), naive_point, pub_ho


def finish_meta(
    meta: dict[str, Any],
    fitted: FitResult,
    settings: ModelSettings,
    warm_start: bool,
    started: float,
) -> bytes:
    """The ``.keras`` bytes of the fitted model, with how the fit went recorded in ``meta``
    (``started``: the run's ``time.perf_counter()`` at its start)."""
    import keras  # noqa: PLC0415 (Keras loads only where a model is built or read)

    artifact = save_keras(fitted.model)
    meta.update(
        epochs_run=len(fitted.val),
        best_epoch=fitted.best_epoch,
        duration_s=round(time.perf_counter() - started, 3),
        warm_started=fitted.warm,
        keras_version=keras.__version__,
        artifact_sha256=hashlib.sha256(artifact).hexdigest(),
    )
    meta["training"] = {
        "initial_val_loss": fitted.initial_val,
        "best_val_loss": fitted.best_val,
        "loss": fitted.history.get("loss", []),
        "val_loss": fitted.val,
        "warm_start_requested": warm_start,
        "settings": settings.model_dump(mode="json"),
    }
    return artifact


def prepare_for(arrays: CandleArrays, s: ModelSettings) -> PreparedData:
    """``arrays`` cut into windows and slices as a training run with settings ``s`` cuts them."""
    return prepare(
        arrays, s.features, s.window, s.early_stop_fraction, s.holdout_fraction, s.normalisation
    )


def model_identity(s: ModelSettings, timeframe: str) -> dict[str, Any]:
    """The metadata naming what a model of ``s`` is: schema, kind, timeframe, architecture."""
    return {
        "schema": META_SCHEMA_VERSION,
        "kind": META_KIND,
        "timeframe": timeframe,
        "architecture": {
            "units": s.units,
            "layers": s.layers,
            "dropout": s.dropout,
            "window": s.window,
            "features": list(s.features),
            "head": s.head,
            "normalisation": s.normalisation,
        },
    }


def base_meta(arrays: CandleArrays, data: PreparedData, s: ModelSettings) -> dict[str, Any]:
    """The metadata a model of ``s`` trained on ``data`` carries before it is scored: what it
    reads (architecture, scaler, features), and on what it was trained."""
    used = data.arrays
    return {
        **model_identity(s, arrays.timeframe.text),
        "scaler": data.scaler.to_json(),
        "training_range": {
            "first_open_time": int(used.open_time[0]),
            "last_open_time": int(used.open_time[-1]),
            "candles": len(used),
            "holes": [list(h) for h in used.holes()],
        },
        "slices": data.slices_json(),
        "seed": s.seed,
    }


def _interval_quantiles(residuals: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(residuals, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(lo), float(hi)


def _lstm_dist(model: LoadedModel, ws: WindowSet) -> ReturnDistribution:
    loc, scale, df = model.distribution(model.forward(ws.x), ws.sigma)
    return ReturnDistribution.of(loc, scale, df)


def _current_dist(
    current: LoadedModel, arrays: CandleArrays, rows: np.ndarray
) -> tuple[str, ReturnDistribution | None, np.ndarray]:
    """The serving version's published distribution on ``rows`` of ``arrays`` and where it has
    one: its champion (the LSTM for versions that predate champions)."""
    kind = current.meta.champion_kind
    if kind == "lstm":
        # Rows it cannot forecast get a stand-in; they are dropped from every score.
        dist, ok = current.predict_distribution(arrays, rows)
        return kind, (dist if ok.any() else None), ok
    entry = current.meta.econometric_entry(kind)
    if entry is None:
        raise ValueError(f"the current version's champion {kind!r} has no stored parameters")
    model = VarianceModel.from_dict(entry.params)
    dist = published(filtered_on(model, arrays, rows), entry.point == "naive")
    return kind, dist, np.ones(rows.size, dtype=bool)


def _score_holdout(
    arrays: CandleArrays,
    offset: int,
    data: PreparedData,
    lstm: ReturnDistribution,
    econ: dict[str, Candidate],
    current: LoadedModel | None,
    settings: ModelSettings,
) -> dict[str, Any]:
    """Every candidate, the baselines and the current version, on the same holdout candles."""
    ho = data.holdout
    level = settings.interval_level
    keep = np.ones(len(ho), dtype=bool)
    cur_kind, cur_dist = None, None
    if current is not None:
        # The current model reads the full arrays: its window may reach before the tail used here.
        cur_kind, cur_dist, ok = _current_dist(current, arrays, ho.rows + offset)
        if cur_dist is not None:
            keep = ok
        else:
            # Nothing to compare on (e.g. its window is longer than every run in the holdout):
            # leave it unscored, which promotion treats as "not proven better".
            log.warning("current_model_unscorable", holdout=len(ho), window=current.window)
            current = None
    ws = ho.subset(keep)
    scale = data.mase_scale

    def point(pred_ret: np.ndarray) -> dict[str, Any]:
        pred = price_from_return(ws.last_close, pred_ret)
        return score(ws.actual_close, pred, ws.last_close, scale=scale).to_json()

    train_ws = data.train
    lags = min(AR_LAGS, int(data.train.x.shape[1]))
    hist_train = return_history(data.arrays, train_ws.rows, lags)
    hist_ho = return_history(data.arrays, ws.rows, lags)
    drift = DriftBaseline().fit(hist_train, train_ws.target_ret)
    ar = ARBaseline(lags=lags).fit(hist_train, train_ws.target_ret)

    out: dict[str, Any] = {
        "n": len(ws),
        "n_dropped_for_current": int((~keep).sum()),
        "mase_scale": scale,
        "metric": "crps",
        "candidate": score_candidate(lstm.take(keep), ws, level, scale),
        "naive": point(np.zeros(len(ws))),
        "drift": point(drift.predict(hist_ho)),
        f"ar{lags}": point(ar.predict(hist_ho)),
        "current": None,
        "current_kind": cur_kind,
        "current_sha256": None,
        "current_overlaps_holdout": None,
    }
    for kind, cand in econ.items():
        naive_pt = point_is_naive(cand.dist.take(keep), ws)
        out[kind] = score_candidate(published(cand.dist.take(keep), naive_pt), ws, level, scale)
        out[kind]["point"] = "naive" if naive_pt else "model"
        out[kind]["fitted"] = cand.model.kind if cand.model is not None else kind
    if current is not None and cur_dist is not None:
        out["current"] = score_candidate(cur_dist.take(keep), ws, level, scale)
        out["current_sha256"] = current.meta.artifact_sha256
        # A current model whose own training targets reach into this holdout has seen it; its
        # score is then optimistic. Flagged, not corrected: it only happens when settings change.
        slices = current.meta.slices
        last_train = slices.train.last_target_time if slices and slices.train else None
        out["current_overlaps_holdout"] = bool(
            last_train is not None and len(ws) and last_train >= int(ws.target_time[0])
        )
    scores = {"lstm": out["candidate"], **{k: out[k] for k in econ}}
    out["champion"] = choose_champion(scores)
    return out


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None
