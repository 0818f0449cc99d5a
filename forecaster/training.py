"""One training run: windows → Keras fit with early stopping → holdout scoring → artifact + meta.

Runs in the training process, never in the serving path (docs/architecture.md, decision 3). The
holdout is the most recent slice; the candidate, the naive forecast, simple baselines and the
current model (when given) are all scored on the same holdout target candles, in price space.

Prediction interval: the candidate's residual log returns on the holdout give the ``(1-level)/2``
and ``(1+level)/2`` quantiles; the interval is ``last_close * exp(pred_return + q)``. The holdout is
chosen (docs/architecture.md, decision 2) because it is untouched by fitting and early stopping and
is the slice closest in time, hence in volatility regime, to the candles the model will serve. Its
coverage on the holdout is therefore ≈ level by construction; ``interval.coverage_early_stop``
reports the same interval on the (earlier, out-of-sample for calibration) early-stop slice as an
honest check, and the walk-forward backtest measures live coverage.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from config.settings import ModelSettings
from forecaster.baselines import ARBaseline, DriftBaseline, return_history
from forecaster.data import CandleArrays
from forecaster.features import PreparedData, WindowSet, prepare
from forecaster.inference import META_KIND, META_SCHEMA_VERSION, LoadedModel
from forecaster.metrics import Scores, interval_coverage, price_from_return, score
from forecaster.model import build_model, configure_tensorflow, set_seed
from forecaster.promotion import decide_promotion, should_promote

__all__ = ["TrainingResult", "decide_promotion", "should_promote", "train"]

log = structlog.get_logger(__name__)

AR_LAGS = 5


@dataclass(frozen=True, slots=True)
class TrainingResult:
    """What a training run hands to the registry (``artifact`` + ``meta``) and to callers."""

    artifact: bytes  # the .keras file
    meta: dict[str, Any]  # JSON-serialisable (orjson) metadata; see train()
    model: LoadedModel  # the candidate, ready to predict
    history: dict[str, list[float]] = field(default_factory=dict)

    @property
    def skill(self) -> float:
        """1 − MAE/MAE_naive on the holdout (> 0 beats naive)."""
        s = self.meta.get("skill")
        return float(s) if s is not None else math.nan

    def promote(self, current_expired: bool, current_meta: dict[str, Any] | None = None) -> bool:
        """Decision 2 against ``current_meta`` (default: the ``current`` given to :func:`train`).

        Pass ``current_meta`` explicitly when the serving model may have changed since training.
        """
        if current_meta is None and self.meta["holdout"].get("current") is not None:
            current_meta = {"artifact_sha256": self.meta["holdout"]["current_sha256"]}
        return should_promote(self.meta, current_meta, current_expired)


def train(
    arrays: CandleArrays,
    settings: ModelSettings,
    *,
    current: LoadedModel | None = None,
    warm_start: bool = True,
) -> TrainingResult:
    """Train a candidate on the last ``settings.train_candles`` candles of ``arrays``.

    ``current`` (the serving model, if any) is scored on the candidate's holdout and, when
    ``warm_start`` is true and its architecture, window and features match ``settings``, seeds
    the candidate's weights. Raises :class:`~forecaster.features.FeatureError` when the candles
    leave a slice without windows.
    """
    t0 = time.perf_counter()
    configure_tensorflow(settings.threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    used = arrays.tail(settings.train_candles)
    offset = len(arrays) - len(used)
    data = prepare(
        used,
        settings.features,
        settings.window,
        settings.early_stop_fraction,
        settings.holdout_fraction,
    )
    model = build_model(len(settings.features), settings)
    warm = bool(warm_start and current is not None and current.matches(settings))
    if warm:
        assert current is not None
        model.set_weights(current.model.get_weights())

    es_x, es_y = data.early_stop.x, data.early_stop.y
    initial_weights = model.get_weights()
    initial_val = float(model.evaluate(es_x, es_y, batch_size=settings.batch_size, verbose=0))
    set_seed(settings.seed)  # the shuffling order, independent of what ran before
    stopper = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=settings.patience, restore_best_weights=True
    )
    fit = model.fit(
        data.train.x,
        data.train.y,
        validation_data=(es_x, es_y),
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        shuffle=True,
        callbacks=[stopper],
        verbose=0,
    )
    history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    val = history.get("val_loss", [])
    best_epoch = int(np.argmin(val)) + 1 if val else 0
    best_val = float(min(val)) if val else initial_val
    if initial_val <= best_val:
        # No epoch improved on the starting point (common when warm-starting a good model):
        # keep the starting weights rather than a worse epoch.
        model.set_weights(initial_weights)
        best_epoch, best_val = 0, initial_val

    meta = _base_meta(arrays, data, settings)
    meta["interval"] = {"level": settings.interval_level, "q_low": 0.0, "q_high": 0.0}
    candidate = LoadedModel.from_keras(model, meta)

    ho = data.holdout
    pred_ho = data.scaler.inverse_target(candidate.forward(ho.x))
    q_low, q_high = _interval_quantiles(ho.target_ret - pred_ho, settings.interval_level)
    pred_es = data.scaler.inverse_target(candidate.forward(es_x))
    es = data.early_stop
    es_cov = interval_coverage(
        es.actual_close,
        price_from_return(es.last_close, pred_es + q_low),
        price_from_return(es.last_close, pred_es + q_high),
    )
    meta["interval"] = {
        "level": settings.interval_level,
        "q_low": q_low,
        "q_high": q_high,
        "calibrated_on": "holdout",
        "coverage_early_stop": _num(es_cov),
    }
    candidate = LoadedModel.from_keras(model, meta)

    meta["holdout"] = _score_holdout(arrays, offset, data, pred_ho, q_low, q_high, current)
    cand_mae = meta["holdout"]["candidate"]["mae"]
    naive_mae = meta["holdout"]["naive"]["mae"]
    meta["skill"] = _num(1.0 - cand_mae / naive_mae) if cand_mae is not None and naive_mae else None

    artifact = _save(model)
    duration = time.perf_counter() - t0
    meta.update(
        epochs_run=len(val),
        best_epoch=best_epoch,
        duration_s=round(duration, 3),
        warm_started=warm,
        keras_version=keras.__version__,
        artifact_sha256=hashlib.sha256(artifact).hexdigest(),
    )
    meta["training"] = {
        "initial_val_loss": initial_val,
        "best_val_loss": best_val,
        "loss": history.get("loss", []),
        "val_loss": val,
        "warm_start_requested": warm_start,
        "settings": settings.model_dump(mode="json"),
    }
    log.info(
        "model_trained",
        candles=len(used),
        epochs=len(val),
        best_epoch=best_epoch,
        warm_started=warm,
        skill=meta["skill"],
        mae=cand_mae,
        naive_mae=naive_mae,
        current_mae=(meta["holdout"]["current"] or {}).get("mae"),
        duration_s=round(duration, 3),
    )
    return TrainingResult(artifact=artifact, meta=meta, model=candidate, history=history)


def _base_meta(arrays: CandleArrays, data: PreparedData, s: ModelSettings) -> dict[str, Any]:
    used = data.arrays
    return {
        "schema": META_SCHEMA_VERSION,
        "kind": META_KIND,
        "timeframe": arrays.timeframe.text,
        "architecture": {
            "units": s.units,
            "layers": s.layers,
            "dropout": s.dropout,
            "window": s.window,
            "features": list(s.features),
        },
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


def _score_holdout(
    arrays: CandleArrays,
    offset: int,
    data: PreparedData,
    pred_ho: np.ndarray,
    q_low: float,
    q_high: float,
    current: LoadedModel | None,
) -> dict[str, Any]:
    """Candidate, baselines and current, all on the same holdout target candles."""
    ho = data.holdout
    keep = np.ones(len(ho), dtype=bool)
    pred_cur = None
    if current is not None:
        # The current model reads the full arrays: its window may reach before the tail used here.
        pred_cur, ok = current.predict_returns(arrays, ho.rows + offset)
        if ok.any():
            keep = ok
        else:
            # Nothing to compare on (e.g. its window is longer than every run in the holdout):
            # leave it unscored, which promotion treats as "not proven better".
            log.warning("current_model_unscorable", holdout=len(ho), window=current.window)
            current = pred_cur = None
    ws = _subset(ho, keep)
    scale = data.mase_scale

    def scored(pred_ret: np.ndarray, q: tuple[float, float] | None = None) -> Scores:
        pred = price_from_return(ws.last_close, pred_ret)
        lo = hi = None
        if q is not None:
            lo = price_from_return(ws.last_close, pred_ret + q[0])
            hi = price_from_return(ws.last_close, pred_ret + q[1])
        return score(ws.actual_close, pred, ws.last_close, scale=scale, lower=lo, upper=hi)

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
        "candidate": scored(pred_ho[keep], (q_low, q_high)).to_json(),
        "naive": scored(np.zeros(len(ws))).to_json(),
        "drift": scored(drift.predict(hist_ho)).to_json(),
        f"ar{lags}": scored(ar.predict(hist_ho)).to_json(),
        "current": None,
        "current_sha256": None,
        "current_overlaps_holdout": None,
    }
    if current is not None and pred_cur is not None:
        out["current"] = scored(pred_cur[keep], (current.q_low, current.q_high)).to_json()
        out["current_sha256"] = current.meta.get("artifact_sha256")
        # A current model whose own training targets reach into this holdout has seen it; its
        # score is then optimistic. Flagged, not corrected: it only happens when settings change.
        cur_train = (current.meta.get("slices") or {}).get("train") or {}
        last_train = cur_train.get("last_target_time")
        out["current_overlaps_holdout"] = bool(
            last_train is not None and len(ws) and last_train >= int(ws.target_time[0])
        )
    return out


def _subset(ws: WindowSet, keep: np.ndarray) -> WindowSet:
    if keep.all():
        return ws
    return WindowSet(
        x=ws.x[keep],
        y=ws.y[keep],
        rows=ws.rows[keep],
        target_ret=ws.target_ret[keep],
        last_close=ws.last_close[keep],
        actual_close=ws.actual_close[keep],
        target_time=ws.target_time[keep],
    )


def _save(model: Any) -> bytes:
    with tempfile.TemporaryDirectory(prefix="cryptocast-train-") as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        return path.read_bytes()


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None
