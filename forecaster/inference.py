"""Loading a trained model and predicting with it, fast.

A model travels as two things: the ``.keras`` file's bytes (weights and architecture, loaded with
Keras's ``safe_mode`` on; nothing is ever unpickled) and a JSON metadata dict (features, window,
head, normalisation, scaler, interval). Metadata schema 2 adds the head and the per-window
normalisation; schema-1 models (an MSE point model on raw features) still load, their spread taken
from their static interval. Serving calls :meth:`LoadedModel.predict_next` on every closed
candle; it runs the LSTM forward pass in numpy (:mod:`forecaster.numpy_lstm`) from weights
extracted once at load, because a Keras
``model.predict`` call costs milliseconds of framework overhead for a microsecond-sized problem.
:meth:`LoadedModel.predict_keras` keeps the slow path as the benchmark's baseline.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from config.settings import ModelSettings
from forecaster.data import CandleArrays
from forecaster.distribution import ReturnDistribution
from forecaster.features import (
    FEATURE_NAMES,
    NORMALISATIONS,
    FeatureError,
    Scaler,
    _normalise,
    _raw_windows,
    check_window,
    feature_matrix,
    target_rows,
    window_input,
    windows_input,
)
from forecaster.heads import Forecast, head_outputs, head_params
from forecaster.numpy_lstm import ArtifactError, NumpyLSTM, extract_numpy, wavefront

if TYPE_CHECKING:
    import keras

__all__ = [
    "META_KIND",
    "META_SCHEMA_VERSION",
    "ArtifactError",
    "Forecast",
    "LoadedModel",
    "NumpyLSTM",
    "wavefront",
]

log = structlog.get_logger(__name__)

META_SCHEMA_VERSION = 2
SUPPORTED_META_SCHEMAS = (1, 2)
META_KIND = "lstm-returns"
_Z90 = 1.6448536269514722  # the standard normal's 0.95 quantile


def check_meta(meta: dict[str, Any]) -> tuple[Scaler, dict[str, Any]]:
    """Validate model metadata; return its scaler and architecture, or raise ArtifactError."""
    if not isinstance(meta, dict):
        raise ArtifactError("model metadata must be a JSON object")
    if meta.get("schema") not in SUPPORTED_META_SCHEMAS or meta.get("kind") != META_KIND:
        raise ArtifactError(
            f"model metadata schema {meta.get('schema')!r}/{meta.get('kind')!r} is not "
            f"one of {SUPPORTED_META_SCHEMAS}/{META_KIND}"
        )
    arch = meta.get("architecture")
    if not isinstance(arch, dict):
        raise ArtifactError("model metadata has no architecture")
    feats = arch.get("features")
    if not isinstance(feats, list) or not feats or any(f not in FEATURE_NAMES for f in feats):
        raise ArtifactError(f"model features {feats!r} are not a subset of {FEATURE_NAMES}")
    window = arch.get("window")
    if not isinstance(window, int) or window < 2:
        raise ArtifactError(f"bad window {window!r} in model metadata")
    if arch.get("head", "mse") not in ("mse", "gaussian", "student_t"):
        raise ArtifactError(f"unknown head {arch.get('head')!r} in model metadata")
    if arch.get("normalisation", "none") not in NORMALISATIONS:
        raise ArtifactError(f"unknown normalisation {arch.get('normalisation')!r}")
    scaler_feats = (meta.get("scaler") or {}).get("features")
    if isinstance(scaler_feats, list) and scaler_feats != feats:
        raise ArtifactError(f"scaler features {scaler_feats} != model features {feats}")
    try:
        scaler = Scaler.from_json(meta.get("scaler") or {})
    except FeatureError as e:
        raise ArtifactError(str(e)) from None
    if list(scaler.features) != feats:
        raise ArtifactError(f"scaler features {list(scaler.features)} != model features {feats}")
    iv = meta.get("interval")
    if not isinstance(iv, dict):
        raise ArtifactError("model metadata has no interval")
    lo, hi, level = iv.get("q_low"), iv.get("q_high"), iv.get("level")
    nums = (lo, hi, level)
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in nums):
        raise ArtifactError(f"bad interval {iv!r} in model metadata")
    assert isinstance(lo, int | float) and isinstance(hi, int | float)
    if lo > hi:
        raise ArtifactError(f"bad interval {iv!r} in model metadata")
    return scaler, arch


@dataclass(eq=False)
class LoadedModel:
    """A servable model: Keras model, its metadata, scaler and the numpy fast path."""

    model: keras.Model
    meta: dict[str, Any]
    scaler: Scaler
    window: int
    features: tuple[str, ...]
    q_low: float  # the static residual interval measured on the holdout (kept for reference)
    q_high: float
    interval_level: float  # nominal level
    net: NumpyLSTM
    head: str = "mse"
    normalisation: str = "none"
    mse_scale: float = 1.0  # the mse head's constant scale, in scaled target units
    calibrated_level: float | None = None  # split-conformal level measured on the holdout
    naive_point: bool = False  # the point falls back to the last close (see training)

    # loading -------------------------------------------------------------------------------
    @classmethod
    def from_artifact(
        cls, artifact: bytes, meta: dict[str, Any], *, dtype: type[np.floating[Any]] = np.float32
    ) -> LoadedModel:
        """Load ``.keras`` bytes with ``safe_mode=True``; raise :class:`ArtifactError` if unfit.

        The metadata is checked first (schema, features, scaler, interval); when it records the
        artifact's sha256, the bytes must match it.
        """
        check_meta(meta)
        want = meta.get("artifact_sha256")
        if want is not None and hashlib.sha256(artifact).hexdigest() != want:
            raise ArtifactError("model artifact does not match the sha256 in its metadata")
        with tempfile.TemporaryDirectory(prefix="cryptocast-model-") as tmp:
            path = Path(tmp) / "model.keras"
            path.write_bytes(artifact)
            # A .keras file is a zip; anything else (an HDF5 or pickled file, garbage) is refused
            # before Keras sees it.
            if not zipfile.is_zipfile(path):
                raise ArtifactError("model artifact is not a .keras (zip) file")
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
            import keras  # noqa: PLC0415 (Keras loads only where a model is built or read)

            try:
                model = keras.models.load_model(path, safe_mode=True, compile=False)
            except Exception as e:
                why = f"{type(e).__name__}: {e}"
                raise ArtifactError(f"model artifact cannot be loaded: {why}") from e
        return cls.from_keras(model, meta, dtype=dtype)

    @classmethod
    def from_keras(
        cls, model: keras.Model, meta: dict[str, Any], *, dtype: type[np.floating[Any]] = np.float32
    ) -> LoadedModel:
        """Wrap an in-memory Keras model with its metadata (checked as in :meth:`from_artifact`)."""
        scaler, arch = check_meta(meta)
        window, n_feat = arch["window"], len(arch["features"])
        shape = tuple(model.input_shape)
        if shape[1:] != (window, n_feat):
            raise ArtifactError(f"model input shape {shape} != (None, {window}, {n_feat})")
        net = extract_numpy(model, dtype)
        head = str(arch.get("head", "mse"))
        if net.n_out != head_outputs(head):
            raise ArtifactError(f"output layer of {net.n_out} units does not fit head {head!r}")
        iv = meta["interval"]
        level = float(iv["level"])
        mse_scale = (meta.get("head_params") or {}).get("mse_scale")
        if not isinstance(mse_scale, int | float) or not (
            math.isfinite(mse_scale) and mse_scale > 0
        ):
            # Schema 1: a Gaussian as wide as the static interval (its normal-equivalent sigma).
            width = (float(iv["q_high"]) - float(iv["q_low"])) / (2.0 * _Z90)
            mse_scale = max(width / scaler.target_std, 1e-6) if level == 0.9 else 1.0
        cal = iv.get("calibrated_level")
        return cls(
            model=model,
            meta=meta,
            scaler=scaler,
            window=window,
            features=tuple(arch["features"]),
            q_low=float(iv["q_low"]),
            q_high=float(iv["q_high"]),
            interval_level=level,
            net=net,
            head=head,
            normalisation=str(arch.get("normalisation", "none")),
            mse_scale=float(mse_scale),
            calibrated_level=float(cal) if isinstance(cal, int | float) and 0 < cal < 1 else None,
            naive_point=meta.get("point") == "naive",
        )

    # identity ------------------------------------------------------------------------------
    @property
    def architecture(self) -> dict[str, Any]:
        """``units``, ``layers``, ``dropout``, ``window``, ``features``, ``head``, ... (meta)."""
        return dict(self.meta["architecture"])

    @property
    def start_level(self) -> float:
        """The level to read the interval at before any live calibration (holdout-calibrated)."""
        return self.calibrated_level if self.calibrated_level is not None else self.interval_level

    def matches(self, settings: ModelSettings) -> bool:
        """True when ``settings`` build a model whose weights this one's can seed (warm start)."""
        a = self.meta["architecture"]
        return (
            a.get("units") == settings.units
            and a.get("layers") == settings.layers
            and a.get("window") == settings.window
            and list(a.get("features", [])) == list(settings.features)
            and a.get("head", "mse") == settings.head
            and a.get("normalisation", "none") == settings.normalisation
        )

    # scaled-space forward passes -------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Fast path: scaled windows ``(B, window, F)`` → raw outputs ``(B,)`` or ``(B, k)``."""
        return self.net(x)

    def forward_model(self, x: np.ndarray) -> np.ndarray:
        """Reference: ``model(x)`` in Keras (eager call, no ``predict`` loop)."""
        out = np.asarray(self.model(np.asarray(x, np.float32), training=False))
        return out[:, 0] if out.shape[1] == 1 else out

    def forward_keras(self, x: np.ndarray) -> np.ndarray:
        """Slow path: ``model.predict`` (the latency benchmark's baseline)."""
        out = np.asarray(self.model.predict(np.asarray(x, np.float32), verbose=0))
        return out[:, 0] if out.shape[1] == 1 else out

    # outputs in return units -------------------------------------------------------------------
    def distribution(
        self, raw: np.ndarray, sigma: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw outputs of windows with trailing volatility ``sigma`` → loc, scale, df of the
        next log return (the point's fallback to naive applied)."""
        raw = np.asarray(raw, dtype=np.float64)
        loc_z, scale_z, df = head_params(self.head, raw.reshape(raw.shape[0], -1), self.mse_scale)
        sig = np.asarray(sigma, dtype=np.float64)
        loc = self.scaler.inverse_target(loc_z) * sig
        if self.naive_point:
            loc = np.zeros_like(loc)
        return loc, scale_z * self.scaler.target_std * sig, df

    # raw candles in, prices out ----------------------------------------------------------------
    def prepare(self, recent: CandleArrays) -> tuple[np.ndarray, float, float]:
        """The scaled input window ``(1, T, F)``, the last close and the window's sigma."""
        x, sigma = window_input(recent, self.window, self.scaler, self.normalisation)
        return x, float(recent.close[-1]), sigma

    def check(self, recent: CandleArrays) -> None:
        """Raise :class:`~forecaster.features.FeatureError` where :meth:`prepare` would."""
        check_window(recent, self.window)

    def prepare_many(
        self, recents: list[CandleArrays]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`prepare` for N checked windows at once: ``(N, T, F)``, last closes, sigmas."""
        x, sigma = windows_input(recents, self.window, self.scaler, self.normalisation)
        return x, np.array([float(r.close[-1]) for r in recents]), sigma

    def finish(
        self, raw: np.ndarray, last_close: float, sigma: float, level: float | None = None
    ) -> Forecast:
        """Turn one window's raw outputs into a :class:`Forecast` (interval read at ``level``,
        by default :attr:`start_level`)."""
        loc, scale, df = self.distribution(np.asarray(raw).reshape(1, -1), np.array([sigma]))
        lv = self.start_level if level is None else level
        return Forecast.of(float(loc[0]), float(scale[0]), float(df[0]), last_close, lv)

    def finish_many(
        self, raw: np.ndarray, last_close: np.ndarray, sigma: np.ndarray, level: np.ndarray
    ) -> list[Forecast | ValueError]:
        """:meth:`finish` for a batch of windows (``raw`` ``(N,)`` or ``(N, k)``) in one set of
        numpy calls; ``level`` NaN reads at :attr:`start_level`. A row that :meth:`finish` would
        refuse gets its ``ValueError`` in its place."""
        raw = np.asarray(raw)
        loc, scale, df = self.distribution(raw.reshape(raw.shape[0], -1), np.asarray(sigma))
        lv = np.where(np.isnan(level), self.start_level, level)
        return Forecast.many(loc, scale, df, np.asarray(last_close), lv)

    def predict_next(self, recent: CandleArrays, level: float | None = None) -> Forecast:
        """Forecast the candle after the last row of ``recent`` (fast numpy path).

        ``recent`` needs at least ``window + 1`` rows (only the last ``window + 1`` are read) with
        no hole among them; otherwise :class:`~forecaster.features.FeatureError` is raised.
        """
        x, last, sigma = self.prepare(recent)
        return self.finish(self.net(x)[0], last, sigma, level)

    def predict_keras(self, recent: CandleArrays, level: float | None = None) -> Forecast:
        """As :meth:`predict_next`, through ``model.predict`` (slow; the benchmark baseline)."""
        x, last, sigma = self.prepare(recent)
        return self.finish(self.forward_keras(x)[0], last, sigma, level)

    def predict_distribution(
        self, arrays: CandleArrays, rows: np.ndarray, *, batch: int = 4096
    ) -> tuple[ReturnDistribution, np.ndarray]:
        """The next log return's distribution for target rows of ``arrays``, and ``ok``.

        ``ok`` is False for rows that have no full window for this model inside their segment;
        their entries are a stand-in (loc 0, scale 1, Gaussian) to be ignored. Batched fast
        path; reads nothing after the last target.
        """
        rows = np.asarray(rows, dtype=np.int64)
        valid = target_rows(arrays, self.window)
        ok = np.isin(rows, valid)
        loc, scale = np.zeros(rows.size), np.ones(rows.size)
        df = np.full(rows.size, math.inf)
        use = rows[ok]
        if use.size:
            upto = arrays.slice(0, int(use.max()) + 1)
            feats = feature_matrix(upto, self.features)
            names = list(self.features)
            parts: list[tuple[np.ndarray, ...]] = []
            for s in range(0, use.size, batch):
                part = use[s : s + batch]
                x, sigma, _ = _raw_windows(upto, feats, part, self.window, self.normalisation)
                x = self.scaler.transform(_normalise(x, sigma, names, self.normalisation))
                parts.append(self.distribution(self.net(x), sigma))
            loc[ok], scale[ok], df[ok] = (np.concatenate([p[i] for p in parts]) for i in range(3))
        return ReturnDistribution.of(loc, scale, df), ok

    def predict_returns(
        self, arrays: CandleArrays, rows: np.ndarray, *, batch: int = 4096
    ) -> tuple[np.ndarray, np.ndarray]:
        """Predicted log returns (the point; NaN where not ``ok``) for target rows, and ``ok``."""
        dist, ok = self.predict_distribution(arrays, rows, batch=batch)
        return np.where(ok, dist.loc, np.nan), ok
