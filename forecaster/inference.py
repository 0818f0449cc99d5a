"""Loading a trained model and predicting with it, fast.

A model travels as its registry version's artifacts (docs/architecture.md, decision 11) and a
JSON metadata dict (features, window, head, normalisation, scaler, interval). Serving loads the
numpy artifact (:meth:`LoadedModel.from_npz`: weights as plain float arrays, nothing unpickled,
no TensorFlow); training and the ``model.predict`` baseline load the ``.keras`` file
(:meth:`LoadedModel.from_artifact`, Keras's ``safe_mode`` on). Metadata schema 2 adds the head and
the per-window normalisation; schema-1 models (an MSE point model on raw features) still load,
their spread taken from their static interval. Serving calls :meth:`LoadedModel.predict_next` on
every closed candle; it runs the LSTM forward pass in numpy (:mod:`forecaster.numpy_lstm`),
because a Keras ``model.predict`` call costs milliseconds of framework overhead for a
microsecond-sized problem. :meth:`LoadedModel.predict_keras` keeps the slow path as the
benchmark's baseline.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from config.settings import ModelSettings
from core.model_meta import (
    META_KIND,
    META_SCHEMA_VERSION,
    ModelMeta,
)
from forecaster.artifact import npz_bytes, read_npz
from forecaster.data import CandleArrays
from forecaster.distribution import ReturnDistribution
from forecaster.features import (
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
from forecaster.meta_check import check_meta
from forecaster.numpy_lstm import (
    ArtifactError,
    DenseWeights,
    LstmWeights,
    NumpyLSTM,
    keras_weights,
    wavefront,
)

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

MetaIn = ModelMeta | Mapping[str, Any]  # a version's metadata, parsed or as stored
Float = type[np.floating[Any]]

_Z90 = 1.6448536269514722  # the standard normal's 0.95 quantile


@dataclass(eq=False)
class LoadedModel:
    """A servable model: Keras model, its metadata, scaler and the numpy fast path."""

    model: keras.Model | None  # None when loaded from the numpy artifact (serving)
    meta: ModelMeta
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
    weights: tuple[LstmWeights, DenseWeights] | None = None  # Keras layout, for the .npz

    # loading -------------------------------------------------------------------------------
    @classmethod
    def from_artifact(
        cls, artifact: bytes, meta: MetaIn, *, dtype: Float = np.float32
    ) -> LoadedModel:
        """Load ``.keras`` bytes with ``safe_mode=True``; raise :class:`ArtifactError` if unfit.

        The metadata is checked first (schema, features, scaler, interval); when it records the
        artifact's sha256, the bytes must match it.
        """
        meta = check_meta(meta)[0]
        want = meta.artifact_sha256
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
        cls, model: keras.Model, meta: MetaIn, *, dtype: Float = np.float32
    ) -> LoadedModel:
        """Wrap an in-memory Keras model with its metadata (checked as in :meth:`from_artifact`)."""
        _, _, arch, _ = check_meta(meta)
        window, n_feat = arch.window, len(arch.features)
        shape = tuple(model.input_shape)
        if shape[1:] != (window, n_feat):
            raise ArtifactError(f"model input shape {shape} != (None, {window}, {n_feat})")
        lstm, dense = keras_weights(model)
        return cls._build(model, meta, (lstm, dense), dtype)

    @classmethod
    def from_npz(cls, data: bytes, meta: MetaIn, *, dtype: Float = np.float32) -> LoadedModel:
        """Load the numpy artifact (no TensorFlow); raise :class:`ArtifactError` if unfit.

        ``meta`` is the registry version's metadata; the artifact's own copy of what serving
        needs must agree with it (a version is one model, not two halves of different ones).
        """
        meta = check_meta(meta)[0]
        lstm, dense, own = read_npz(data)
        stored = meta.to_json()
        for key in ("architecture", "scaler", "interval"):
            if own.get(key) != stored.get(key):
                raise ArtifactError(f"numpy artifact's {key} differs from its version's metadata")
        model = cls._build(None, meta, (lstm, dense), dtype)
        inputs, feats = model.net.n_features, len(model.features)
        if inputs != feats:
            raise ArtifactError(f"numpy artifact has {inputs} inputs for {feats} features")
        return model

    def to_npz(self) -> bytes:
        """This model's numpy artifact (see :mod:`forecaster.artifact`)."""
        assert self.weights is not None, "a model built from weights always keeps them"
        return npz_bytes(self.weights[0], self.weights[1], self.meta.to_json())

    @classmethod
    def _build(
        cls,
        model: keras.Model | None,
        meta: MetaIn,
        weights: tuple[LstmWeights, DenseWeights],
        dtype: Float,
    ) -> LoadedModel:
        meta, scaler, arch, iv = check_meta(meta)
        window = arch.window
        net = NumpyLSTM(list(weights[0]), weights[1], dtype)
        head = arch.head
        if net.n_out != head_outputs(head):
            raise ArtifactError(f"output layer of {net.n_out} units does not fit head {head!r}")
        level = iv.level
        mse_scale = meta.head_params.mse_scale if meta.head_params is not None else None
        if not isinstance(mse_scale, int | float) or not (
            math.isfinite(mse_scale) and mse_scale > 0
        ):
            # Schema 1: a Gaussian as wide as the static interval (its normal-equivalent sigma).
            width = (iv.q_high - iv.q_low) / (2.0 * _Z90)
            mse_scale = max(width / scaler.target_std, 1e-6) if level == 0.9 else 1.0
        cal = iv.calibrated_level
        return cls(
            model=model,
            meta=meta,
            scaler=scaler,
            window=window,
            features=tuple(arch.features),
            q_low=iv.q_low,
            q_high=iv.q_high,
            interval_level=level,
            net=net,
            head=head,
            normalisation=arch.normalisation,
            mse_scale=float(mse_scale),
            calibrated_level=cal if cal is not None and 0 < cal < 1 else None,
            naive_point=meta.point == "naive",
            weights=weights,
        )

    # identity ------------------------------------------------------------------------------
    @property
    def architecture(self) -> dict[str, Any]:
        """``units``, ``layers``, ``dropout``, ``window``, ``features``, ``head``, ... (meta)."""
        arch = self.meta.architecture
        return {} if arch is None else arch.model_dump()

    @property
    def start_level(self) -> float:
        """The level to read the interval at before any live calibration (holdout-calibrated)."""
        return self.calibrated_level if self.calibrated_level is not None else self.interval_level

    def matches(self, settings: ModelSettings) -> bool:
        """True when ``settings`` build a model whose weights this one's can seed (warm start)."""
        a = self.meta.architecture
        return (
            a is not None
            and a.units == settings.units
            and a.layers == settings.layers
            and a.window == settings.window
            and a.features == list(settings.features)
            and a.head == settings.head
            and a.normalisation == settings.normalisation
        )

    # scaled-space forward passes -------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Fast path: scaled windows ``(B, window, F)`` → raw outputs ``(B,)`` or ``(B, k)``."""
        return self.net(x)

    def keras_model(self) -> keras.Model:
        """The Keras model; :class:`ArtifactError` for a model loaded from the numpy artifact."""
        if self.model is None:
            raise ArtifactError("this model was loaded from its numpy artifact: no Keras model")
        return self.model

    def keras_weight_list(self) -> list[np.ndarray]:
        """The weights in ``keras.Model.get_weights()`` order (warm starts need no Keras load)."""
        assert self.weights is not None
        lstm, dense = self.weights
        return [w for layer in lstm for w in layer] + list(dense)

    def forward_model(self, x: np.ndarray) -> np.ndarray:
        """Reference: ``model(x)`` in Keras (eager call, no ``predict`` loop)."""
        out = np.asarray(self.keras_model()(np.asarray(x, np.float32), training=False))
        return out[:, 0] if out.shape[1] == 1 else out

    def forward_keras(self, x: np.ndarray) -> np.ndarray:
        """Slow path: ``model.predict`` (the latency benchmark's baseline)."""
        out = np.asarray(self.keras_model().predict(np.asarray(x, np.float32), verbose=0))
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
